"""Test doubles of the outside world: the PIOPIY simulator and fake backends."""
