"""The 20 s encoder window and the speech trim that ASR applies to every turn (`pipelines.whisper_window`,
`pipelines.voicing.trim_to_speech`)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from faster_whisper import WhisperModel

from pipelines.asr import Transcriber
from pipelines.executor import ModelExecutor
from pipelines.text import normalize_transcript, wer
from pipelines.voicing import trim_to_speech
from pipelines.whisper_window import WindowDecoder
from tests.pipelines.speech import gain, prompt, prompt_text, silence
from tests.pipelines.test_asr import PROMPTS, RATE, CountingModel, white_noise


async def test_short_window_hears_the_same_words_as_the_full_window(
    tiny: WhisperModel, executor: ModelExecutor
) -> None:
    """The 20 s encoder window is a speed-up, not a different recognizer: same words, less time."""
    window = CountingModel(tiny)
    short = Transcriber(window, executor, sample_rate_in=RATE)
    full = Transcriber(tiny, executor, sample_rate_in=RATE, window_s=30.0)
    fast = [await short.transcribe(prompt(name)) for name in PROMPTS]
    slow = [await full.transcribe(prompt(name)) for name in PROMPTS]
    refs = [prompt_text(name) for name in PROMPTS]
    fast_wer = statistics.mean(wer(r, t.text) for r, t in zip(refs, fast, strict=True))
    slow_wer = statistics.mean(wer(r, t.text) for r, t in zip(refs, slow, strict=True))
    same = sum(
        normalize_transcript(a.text) == normalize_transcript(b.text) for a, b in zip(fast, slow, strict=True)
    )
    print(f"window wer {fast_wer:.3f} vs full {slow_wer:.3f}, {same}/{len(PROMPTS)} identical")
    assert window.paths == ["window"] * len(PROMPTS)
    assert same >= len(PROMPTS) - 2 and fast_wer <= slow_wer + 0.02
    for t in fast:
        assert (
            t.accepted
            and -1.0 < t.avg_logprob < 0
            and 0 <= t.no_speech_prob < 0.5
            and t.compression_ratio > 0
        )


async def test_turns_too_long_for_the_window_use_whisper_s_own_windows(
    tiny: WhisperModel, executor: ModelExecutor
) -> None:
    model = CountingModel(tiny)
    transcriber = Transcriber(model, executor, sample_rate_in=RATE)
    long_turn = b"".join(prompt(name) for name in PROMPTS)
    assert len(long_turn) / 2 / RATE > 19.0
    t = await transcriber.transcribe(long_turn)
    assert model.paths == ["full"] and t.accepted and t.audio_s > 19.0
    assert "circuits" in t.text.lower() and "next" in t.text.lower()


def test_window_decoder_refuses_audio_it_cannot_hold(tiny: WhisperModel) -> None:
    decoder = WindowDecoder(tiny, window_s=20.0)
    assert decoder.fits(19 * 16000) and not decoder.fits(19 * 16000 + 1)
    with pytest.raises(ValueError, match="does not fit a 20 s window"):
        decoder.decode(np.zeros(20 * 16000, dtype=np.float32), max_new_tokens=10)
    with pytest.raises(ValueError, match="window_s"):
        WindowDecoder(tiny, window_s=31.0)


def test_trim_to_speech_keeps_the_words_and_a_small_margin() -> None:
    speech = prompt("vm-goodbye")
    lead, tail = silence(700, RATE), silence(400, RATE)
    trimmed = trim_to_speech(lead + speech + tail, RATE, margin_ms=100)
    # The prompt itself is tightly cut: what remains is it plus about 100 ms either side.
    assert abs(len(trimmed) - len(speech)) <= 2 * RATE // 1000 * 260
    assert speech[2 * 800 : -2 * 800] in trimmed
    noisy = gain(white_noise(0.7, -55), 0) + speech + white_noise(0.4, -55, seed=1)
    kept = trim_to_speech(noisy, RATE, margin_ms=100)
    assert len(kept) < len(noisy) - 2 * RATE // 1000 * 600 and speech[2 * 800 : -2 * 800] in kept
    for pcm in (silence(2000, RATE), white_noise(2, -40), b"\x01\x00" * 30):
        assert trim_to_speech(pcm, RATE) == pcm  # nothing louder than the rest, or too short: as is
