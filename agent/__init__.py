"""Hotline: a voice AI agent for phone calls streamed by PIOPIY."""
