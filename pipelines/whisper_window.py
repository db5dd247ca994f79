"""Whisper on a shorter encoder window: the same words for a phone turn in less than half the time.

faster-whisper always encodes a 30 s window (3000 mel frames), however short the audio: for a 2 s
caller turn that is ~0.4 s of tiny.en encoder time on one core, most of a decode. The encoder's cost
grows faster than linearly with the window (tiny.en int8, one thread, measured here: 1000 frames 66 ms,
2000 frames 165 ms, 3000 frames 402 ms), so a 20 s window saves most of it.

Why not shorter: Whisper was trained on 30 s windows only, and the decoder falls apart as the window
shrinks (120 Asterisk prompts, corpus WER: 30 s 5.88 %, 20 s 5.42 %, 15 s 6.97 %, 10 s 15 %, 5 s 43 %).
At 20 s the words are as good as the full window's, and a decode takes 254 ms instead of 571 ms.
The audio is padded with digital silence *before* the log-mel transform (as openai-whisper does), not
with zeros after it (as faster-whisper does): that is what keeps the shorter window accurate.

Decoding matches `Transcriber`'s options for the full window: greedy, temperature 0, no timestamps, no
previous text, blank and non-speech tokens suppressed, new tokens bounded by the caller's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from ctranslate2 import StorageView  # type: ignore[import-untyped]
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

HOP = 160
"""Samples per mel frame at 16 kHz (10 ms)."""
MAX_FRAMES = 3000
"""Whisper's own window: 30 s."""


@dataclass(frozen=True)
class WindowDecode:
    """One decoded window: the text and Whisper's evidence for it (what a faster-whisper segment holds)."""

    text: str
    tokens: int
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


class WindowDecoder:
    """Decodes audio up to `window_s - margin_s` long on a `window_s` encoder window.

    One per model; each language's tokenizer and prompt are built once, on first use. `decode` and
    `decode_detecting` are thread-safe as far as the model is (CTranslate2 runs concurrent calls on
    its workers).
    """

    def __init__(
        self,
        model: WhisperModel,
        *,
        language: str = "en",
        window_s: float = 20.0,
        margin_s: float = 1.0,
        beam_size: int = 1,
    ) -> None:
        if not 0 < margin_s < window_s <= 30.0:
            raise ValueError(f"need 0 < margin_s ({margin_s}) < window_s ({window_s}) <= 30")
        self._model = model
        self.frames = round(window_s * 100)
        self.max_audio_s = window_s - margin_s
        self.beam_size = beam_size
        self.multilingual = bool(model.model.is_multilingual)
        self.language = language if self.multilingual else "en"
        self._prompts: dict[str, tuple[Tokenizer, list[int], list[int]]] = {}
        self._prompt_for(self.language)

    def _prompt_for(self, language: str) -> tuple[Tokenizer, list[int], list[int]]:
        """Tokenizer, prompt and suppressed tokens of one language, built once (a race builds twice)."""
        found = self._prompts.get(language)
        if found is None:
            tokenizer = Tokenizer(
                self._model.hf_tokenizer, self.multilingual, task="transcribe", language=language
            )
            prompt = self._model.get_prompt(tokenizer, [], without_timestamps=True)
            found = self._prompts[language] = (tokenizer, prompt, get_suppressed_tokens(tokenizer, (-1,)))
        return found

    def fits(self, samples: int) -> bool:
        """True when audio of `samples` at 16 kHz leaves the window enough silence to decode well."""
        return samples <= self.max_audio_s * 16000

    def decode(
        self, audio: npt.NDArray[np.float32], *, max_new_tokens: int, language: str | None = None
    ) -> WindowDecode:
        """Decode 16 kHz float audio that `fits` (in `language`, default the decoder's); blocking (run it
        on the model pool)."""
        return self._generate(self._encode(audio), language or self.language, max_new_tokens)

    def decode_detecting(
        self, audio: npt.NDArray[np.float32], *, max_new_tokens: int, candidates: Sequence[str] = ()
    ) -> tuple[WindowDecode, list[tuple[str, float]]]:
        """Detect the language on the window's encoder output, then decode in the likeliest one.

        One encoder pass serves both (faster-whisper's own detection encodes a 30 s window of its own
        first). Returns the decode and the language probabilities, likeliest first; with `candidates`
        only those languages, their probabilities renormalized to sum to 1.
        """
        if not self.multilingual:
            return self.decode(audio, max_new_tokens=max_new_tokens), [("en", 1.0)]
        encoded = self._encode(audio)
        found = self._model.model.detect_language(encoded)[0]
        scores = [(token.strip("<|>"), float(p)) for token, p in found]
        if candidates:
            kept = [(lang, p) for lang, p in scores if lang in candidates]
            total = sum(p for _, p in kept) or 1.0
            scores = [(lang, p / total) for lang, p in kept] or [(candidates[0], 1.0)]
        return self._generate(encoded, scores[0][0], max_new_tokens), scores

    def _encode(self, audio: npt.NDArray[np.float32]) -> StorageView:
        if not self.fits(audio.size):
            seconds, window = audio.size / 16000, self.frames / 100
            raise ValueError(f"{seconds:.1f} s of audio does not fit a {window:.0f} s window")
        padded = np.zeros(self.frames * HOP, dtype=np.float32)
        padded[: audio.size] = audio
        features = self._model.feature_extractor(padded)[:, : self.frames]
        return self._model.encode(features)

    def _generate(self, encoded: StorageView, language: str, max_new_tokens: int) -> WindowDecode:
        tokenizer, prompt, suppress = self._prompt_for(language)
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self.beam_size,
            max_length=len(prompt) + max_new_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = tokenizer.decode(tokens).strip()
        # As faster-whisper: the score is the length-normalized log probability (length_penalty 1).
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        return WindowDecode(
            text=text,
            tokens=len(tokens),
            avg_logprob=float(avg_logprob) if math.isfinite(avg_logprob) else -math.inf,
            no_speech_prob=float(result.no_speech_prob),
            compression_ratio=get_compression_ratio(text) if text else 0.0,
        )
