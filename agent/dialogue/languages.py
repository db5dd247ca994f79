"""Language codes (Whisper's) and the English names the LLM and the dashboard use for them."""

from __future__ import annotations

NAMES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese",
    "ru": "Russian", "hi": "Hindi", "bn": "Bengali", "ta": "Tamil", "te": "Telugu", "mr": "Marathi",
    "gu": "Gujarati", "kn": "Kannada", "ml": "Malayalam", "pa": "Punjabi", "ur": "Urdu", "ar": "Arabic",
    "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "pl": "Polish", "tr": "Turkish",
    "uk": "Ukrainian", "ca": "Catalan", "gl": "Galician", "ro": "Romanian", "sv": "Swedish",
    "id": "Indonesian",
    "vi": "Vietnamese", "th": "Thai", "fa": "Persian", "he": "Hebrew", "el": "Greek", "cs": "Czech",
}  # fmt: skip


def language_name(code: str) -> str:
    """ "es" → "Spanish"; an unlisted code is returned as it is."""
    return NAMES.get(code, code)
