"""Escalation: signals from every caller turn, YAML rules over them, and the handoff to a human."""
