"""Tests of the service's call records and their reports."""
