"""Carrier seams: one module per telephony platform."""
