"""PIOPIY (TeleCMI): its wire (PCMO, stream frames), webhooks, REST API and routes."""
