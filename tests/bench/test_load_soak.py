"""Short versions of the load and soak benchmarks (bench/load.py, bench/soak.py): correctness, not timing.

Every call placed ends without an error, is recorded in the store with its turns and recording, and
leaves no live session behind; the service logs no error. The figures themselves come from
`python -m bench load` and `python -m bench soak --minutes 10` (README, Reliability).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench import load, soak
from bench.pipeline_calls import caller_audio
from pipelines.asr import Rejection
from pipelines.executor import ModelExecutor
from testkit.standins import UNHEARD, StandInTranscriber, ToneSynthesizer, voice_print

RATE = 8000
HOURS, COMPLAINT = "What are your opening hours?", "I want to make a complaint."


@pytest.fixture
def executor() -> Iterator[ModelExecutor]:
    pool = ModelExecutor(max_workers=2)
    yield pool
    pool.shutdown()


async def test_the_stand_in_asr_knows_its_lexicon_and_nothing_else(executor: ModelExecutor) -> None:
    lexicon = tuple((text, voice_print(caller_audio(text), RATE)) for text in (HOURS, COMPLAINT))
    asr = StandInTranscriber(executor, RATE, lexicon=lexicon, cost_s=0.0)
    hours = caller_audio(HOURS)
    turn = bytes(4800) + hours + bytes(6400)  # pre-roll and tail around the speech, as a turn has
    assert (await asr.transcribe(turn)).text == HOURS
    assert (await asr.transcribe(caller_audio(COMPLAINT))).text == COMPLAINT
    half = await asr.transcribe(hours[: len(hours) // 2])  # a speculation at a pause: never a sentence
    assert half.text == UNHEARD and half.accepted
    silent = await asr.transcribe(bytes(16000))
    assert silent.rejected is Rejection.SILENT  # the real guard's audio check
    detecting = asr.for_language(None)
    assert (await detecting.transcribe(turn)).language_scores == (("en", 1.0),)


def test_the_tone_voice_says_text_for_about_as_long_as_a_person() -> None:
    voice = ToneSynthesizer(sample_rate=16000, cost_s=0.0, cost_per_char_s=0.0)
    seconds = len(voice.synthesize("Our branches are open from nine to five.")) / 2 / 16000
    assert 1.5 < seconds < 4.0
    assert voice.synthesize("...") == b""


def _assert_every_call_recorded(calls: dict[str, Any]) -> None:
    assert calls["errors"] == 0, calls["first_errors"]
    assert calls["recorded"] == calls["placed"] > 0, calls["record_problems"]
    assert calls["store_total_vs_placed"][0] == calls["store_total_vs_placed"][1]
    assert calls["sessions_left_after"] == 0


@pytest.mark.slow
def test_a_short_stand_in_load_run_records_every_call() -> None:
    plan = load.LoadPlan(
        calls=12, ramp_s=3.0, greeting_s=7.0, talk_spread_s=1.0, processes=1, baseline_calls=1
    )
    figures = load.run(plan)
    calls = figures["calls"]
    _assert_every_call_recorded(calls)
    assert calls["placed"] == 12 and calls["peak_concurrent"] == 12
    matched, turns = calls["transcripts_matched"]
    assert matched == turns == 2 * 12  # two questions a call, each heard as said
    assert figures["service"]["log_error_lines"] == 0, figures["service"]["first_log_errors"]
    assert not figures["callers"]["crashed"] and figures["callers"]["unfinished"] == 0


@pytest.mark.slow
def test_a_short_soak_with_the_real_models_records_every_call() -> None:
    figures = soak.run(soak.SHORT)
    _assert_every_call_recorded(figures["calls"])
    assert figures["calls"]["placed"] >= soak.SHORT.lanes
    assert figures["service"]["log_error_lines"] == 0, figures["service"]["first_log_errors"]
    assert len(figures["samples"]) >= 3 and figures["memory"]["rss_mb_start_end_peak"][0] > 100
