"""Streaming audio stages (VAD, ASR, TTS, playout); no knowledge of telephony or YAML."""
