"""The voice pipeline, measured end to end through the PIOPIY simulator on loopback.

1. Response latency (end of caller speech → first reply audio) of support_desk as shipped, against a
   segmented baseline in the same run: the same bot waiting 800 ms of silence, then transcribing the
   whole turn (what Pipecat or LiveKit do with a local Whisper). Scripted 8 kHz calls, 3 questions each;
   calls of both arms interleave, and a "floor" lets only one caller turn at a time be in flight
   (speech → first reply audio), so the numbers are those of an otherwise idle service.
2. End-of-turn silence: the same for 400-800 ms, and how often a real multi-clause prompt (Asterisk's
   IVR prompts, which pause between clauses) is split into two turns; the lowest value splitting at
   most 5 % is the recommendation.
3. ASR accuracy in the pipeline: real 8 kHz prompts spoken as caller turns, WER of the turns' text
   against offline transcription of the whole files with the same model and normalizer, and against
   offline transcription of the turn audio the detector cuts (which tells the turn cut's share).
4. Concurrency: N simultaneous calls; latency, late playout chunks, CPU, memory, loop lag, model queue.
5. Memory: resident set with the models loaded, and per additional call.

The service runs in its own process (`bench.pipeline_service`); the callers run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.pipeline_asr import (
    OfflineAsr,
    Prompt,
    count_turns,
    false_splits,
    load_prompts,
    offline_transcripts,
    recommend,
    spread,
    turn_cut_report,
    wer_report,
)
from bench.pipeline_calls import Conversation, converse, questions_for, speak_prompts
from bench.pipeline_llm import llm_phase
from bench.pipeline_load import Sampler, concurrency_level, idle_memory, knee, memory_per_call
from bench.pipeline_service import (
    ASR_PROBE,
    BASELINE,
    SUPPORT_NUMBER,
    WEBHOOK_SECRET,
    BenchBot,
    ServiceProcess,
    shipped_turn_taking,
    silence_bot,
    write_config,
)
from bench.pipeline_stats import latency_stats
from bench.pipeline_summary import summary, write_chart
from testkit.simulator import PiopiySimulator

__all__ = ["DEEP", "FULL", "QUICK", "LiveAsr", "Plan", "compile_figures", "run", "summary", "write_chart"]


@dataclass(frozen=True)
class Plan:
    """How much of each benchmark to run."""

    calls_per_arm: int  # ours and the baseline
    latency_questions: int  # per call of the latency phase
    tuning_calls: int  # per end-of-turn silence value
    tuning_values: tuple[int, ...]  # the shipped value among them is support_desk itself ("ours")
    in_flight: int  # scripted calls open at once in the latency phase (one turn at a time on the floor)
    asr_prompts: int  # prompts spoken as caller turns for the in-pipeline WER (0: every prompt)
    asr_calls: int
    split_prompts: int  # multi-clause prompts for the false-split count (0: all)
    split_grid: tuple[int, ...]
    levels: tuple[int, ...]
    level_questions: int
    min_level_turns: int  # small levels run several rounds to get this many turns
    stagger_s: float  # a level's calls start spread over this long: about one question-and-reply cycle
    own_load_service: bool  # concurrency and memory on a service with only the shipped config
    offline_corpus: (
        bool  # transcribe every prompt offline too (whole file and turn audio), not only the sample
    )


FULL = Plan(
    calls_per_arm=10,
    latency_questions=3,
    tuning_calls=2,
    tuning_values=(400, 500, 600, 700, 800),
    in_flight=4,
    asr_prompts=0,
    asr_calls=4,
    split_prompts=0,
    split_grid=(300, 400, 450, 500, 600, 700, 800, 1000),
    levels=(1, 2, 4, 8, 12, 16),
    level_questions=3,
    min_level_turns=6,
    stagger_s=7.0,
    own_load_service=True,
    offline_corpus=False,
)
DEEP = replace(FULL, offline_corpus=True)  # + every prompt transcribed offline twice: about 5 more minutes
QUICK = Plan(
    calls_per_arm=2,
    latency_questions=2,
    tuning_calls=1,
    tuning_values=(500,),
    in_flight=4,
    asr_prompts=16,
    asr_calls=2,
    split_prompts=24,
    split_grid=(400, 500, 600, 700, 800),
    levels=(1, 4),
    level_questions=2,
    min_level_turns=2,
    stagger_s=4.0,
    own_load_service=False,
    offline_corpus=False,
)


class PhaseTimer:
    """Wall seconds per phase, for the results."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 1)


def run(quick: bool = False, deep: bool = False) -> dict[str, Any]:
    """Run every phase and return the figures (see the module docstring)."""
    plan = QUICK if quick else DEEP if deep else FULL
    shipped_ms = shipped_turn_taking().end_silence_ms
    phase = PhaseTimer()
    with phase("false_splits_offline"):
        prompts = load_prompts()
        multi = [p for p in prompts if p.multi_clause]
        multi = spread(multi, plan.split_prompts) if plan.split_prompts else multi
        splits = false_splits(multi, list(plan.split_grid))
    asr_set = spread(prompts, plan.asr_prompts) if plan.asr_prompts else list(prompts)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = Path(tmp)
        with phase("asr_offline"):
            corpus = list(prompts) if plan.offline_corpus else asr_set
            offline = asyncio.run(offline_transcripts(corpus, root / "models", shipped_ms))
        tuning_bots = [silence_bot(v) for v in plan.tuning_values if v != shipped_ms]
        bench_config = write_config(root / "bench", [BASELINE, ASR_PROBE, *tuning_bots])
        load: dict[str, Any]
        if plan.own_load_service:
            shipped_config = write_config(root / "shipped", [])
            with phase("concurrency_and_memory"), ServiceProcess(shipped_config, root / "shipped.log") as svc:
                load = asyncio.run(_load_phase(svc, plan))
        with ServiceProcess(bench_config, root / "bench.log") as svc:
            if not plan.own_load_service:
                with phase("concurrency_and_memory"):
                    load = asyncio.run(_load_phase(svc, plan))
            with phase("latency_and_tuning"):
                latency, machine = asyncio.run(_latency_phase(svc, plan, tuning_bots))
            with phase("asr_in_pipeline"):
                live = asyncio.run(_asr_phase(svc, asr_set, plan.asr_calls, shipped_ms))
        with phase("llm_dialogue"):
            llm = llm_phase(root, plan.calls_per_arm, plan.latency_questions)
    figures = compile_figures(plan, latency, machine, splits, asr_set, live, offline.select(asr_set), load)
    figures["llm_dialogue"] = llm
    if plan.offline_corpus:
        figures["asr_accuracy"]["turn_cut_offline_all_prompts"] = turn_cut_report(corpus, offline)
    figures["_phases_s"] = phase.seconds
    return figures


# --------------------------------------------------------------------------------------- phases


async def _load_phase(svc: ServiceProcess, plan: Plan) -> dict[str, Any]:
    idle = await idle_memory(svc)
    levels = []
    for n in plan.levels:
        rounds = max(1, math.ceil(plan.min_level_turns / (n * plan.level_questions)))
        level, _ = await concurrency_level(
            svc, n, questions=plan.level_questions, rounds=rounds, stagger_s=plan.stagger_s
        )
        levels.append(level)
    after = await idle_memory(svc, settle_s=1.0)
    return {"idle": idle, "levels": levels, "rss_mb_idle_after_all_levels": after["rss_mb"]}


async def _latency_phase(
    svc: ServiceProcess, plan: Plan, tuning_bots: list[BenchBot]
) -> tuple[dict[str, list[Conversation]], dict[str, Any]]:
    arms = [
        ("ours", SUPPORT_NUMBER, plan.calls_per_arm),
        ("segmented_baseline", BASELINE.number, plan.calls_per_arm),
    ]
    arms += [(bot.name, bot.number, plan.tuning_calls) for bot in tuning_bots]
    # Each arm's calls spread evenly over the phase, so a change in background load hits every arm alike.
    jobs = sorted(
        ((k + 0.5) / calls, i, arm, number, k)
        for i, (arm, number, calls) in enumerate(arms)
        for k in range(calls)
    )
    sim = PiopiySimulator(svc.url, webhook_secret=WEBHOOK_SECRET)
    floor, slots = asyncio.Lock(), asyncio.Semaphore(plan.in_flight)

    async def one(arm: str, number: str, k: int) -> Conversation:
        async with slots:
            questions = questions_for(k, plan.latency_questions)
            return await converse(sim, api, number, questions, arm=arm, floor=floor, hold_s=0.3)

    async with svc.client() as api, Sampler(svc, api) as sampler:
        convs = await asyncio.gather(*(one(arm, number, k) for _, _, arm, number, k in jobs))
    by_arm: dict[str, list[Conversation]] = {arm: [] for arm, _, _ in arms}
    for conv in convs:
        by_arm[conv.arm].append(conv)
    return by_arm, sampler.summary()


@dataclass(frozen=True)
class LiveAsr:
    """The live ASR run: caller turns per prompt, and the turn counts the detector predicted."""

    texts: dict[str, list[str]]
    expected: dict[str, int]
    timed_out: list[str]


async def _asr_phase(svc: ServiceProcess, prompts: list[Prompt], calls: int, end_silence_ms: int) -> LiveAsr:
    sim = PiopiySimulator(svc.url, webhook_secret=WEBHOOK_SECRET, speed=math.inf, max_lead_s=None)
    expected = {p.name: count_turns(p.pcm, end_silence_ms)[0] for p in prompts}
    async with svc.client() as api:
        parts = await asyncio.gather(
            *(
                speak_prompts(
                    sim, api, ASR_PROBE.number, [(p.name, p.pcm, expected[p.name]) for p in prompts[i::calls]]
                )
                for i in range(calls)
            )
        )
    results = [r for part in parts for r in part]
    return LiveAsr({r.name: r.texts for r in results}, expected, [r.name for r in results if r.timed_out])


# -------------------------------------------------------------------------------------- figures


def compile_figures(
    plan: Plan,
    latency: dict[str, list[Conversation]],
    machine: dict[str, Any],
    splits: dict[str, Any],
    asr_set: list[Prompt],
    live: LiveAsr,
    offline: OfflineAsr,
    load: dict[str, Any],
) -> dict[str, Any]:
    """The results document from what each phase gathered."""
    shipped = shipped_turn_taking()
    arms = {arm: [t for c in convs for t in c.turns()] for arm, convs in latency.items()}
    errors = [c.error for convs in latency.values() for c in convs if c.error]
    ours, base = latency_stats(arms["ours"]), latency_stats(arms["segmented_baseline"])
    ratio = {
        q: round(ours["response_ms"][q] / base["response_ms"][q], 3)
        if ours["response_ms"][q] and base["response_ms"][q]
        else None
        for q in ("p50", "p95")
    }
    by_silence: dict[str, Any] = {}
    tested = sorted({*plan.tuning_values, shipped.end_silence_ms})
    for value in tested:
        arm = "ours" if value == shipped.end_silence_ms else silence_bot(value).name
        stats = latency_stats(arms[arm])
        by_silence[str(value)] = {
            "response_ms": stats["response_ms"],
            "endpoint_ms_p50": stats["endpoint_ms"]["p50"],
            "asr_wait_ms_p50": stats["asr_wait_ms"]["p50"],
            "asr_speculative_hit_rate": stats["asr_speculative_hit_rate"],
            "ratio_vs_baseline_p50": (
                round(stats["response_ms"]["p50"] / base["response_ms"]["p50"], 3)
                if stats["response_ms"]["p50"] and base["response_ms"]["p50"]
                else None
            ),
        }
    recommended = recommend(splits, tested)
    texts = [" ".join(t for t in live.texts.get(p.name, []) if t) for p in asr_set]
    counts = {p.name: len(live.texts.get(p.name, [])) for p in asr_set}
    expected = live.expected
    multi = [p for p in asr_set if p.multi_clause]
    levels = load["levels"]
    return {
        "response_latency": {
            "what": "end of caller speech -> first reply audio on the wire (record: response_ms); client_ms: "
            "end of caller audio -> first streamAudio received by the simulator",
            "ours": {
                "bot": "support_desk",
                "turn_taking": shipped.model_dump(),
                **ours,
            },
            "segmented_baseline": {
                "bot": BASELINE.name,
                "turn_taking": BASELINE.turn_taking,
                **base,
            },
            "ratio_ours_vs_baseline": ratio,
            "target_ratio": 0.5,
            "call_errors": errors[:3],
            "machine_during": machine,
            "turns": {"ours": arms["ours"], "segmented_baseline": arms["segmented_baseline"]},
        },
        "end_silence_tuning": {
            "response_by_end_silence_ms": by_silence,
            "false_splits_offline": splits,
            "split_corpus": "Asterisk prompts with inner punctuation in their transcript: pauses",
            "live_check_at_shipped": {
                "end_silence_ms": shipped.end_silence_ms,
                "prompts": len(asr_set),
                "turn_count_agrees_with_detector": sum(counts[n] == expected[n] for n in counts),
                "multi_clause_prompts": len(multi),
                "multi_clause_split_live": sum(counts[p.name] >= 2 for p in multi),
            },
            "recommended_end_silence_ms": recommended,
            "rule": "lowest tested value with false-split rate <= 5 %",
        },
        "asr_accuracy": {
            **wer_report(asr_set, texts, offline),
            "model": "tiny.en",
            "pipeline_turns_per_prompt": {
                str(k): sum(1 for c in counts.values() if c == k) for k in range(4)
            },
            "prompts_timed_out": live.timed_out,
            "per_prompt": {
                p.name: {"turns_expected": expected[p.name], "pipeline": live.texts.get(p.name, [])}
                for p in asr_set
            },
            "target_ratio": 1.05,
        },
        "concurrency": {"levels": levels, "knee": knee(levels)},
        "memory": {
            **memory_per_call(load["idle"]["rss_mb"], levels),
            "rss_mb_idle_after_all_levels": load["rss_mb_idle_after_all_levels"],
            "service_startup_s": load["idle"]["startup_s"],
        },
        "_plan": {k: v for k, v in plan.__dict__.items()},
    }
