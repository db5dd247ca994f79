"""Prometheus metrics of one worker process: calls, transfers, per-stage latency, errors, load.

Each Runtime has its own registry (never the global default one), so several services can run in one
process (tests) without sharing values. Call code feeds it through the small methods of `Metrics`;
live values (active calls, event-loop lag, model queue) are read from the runtime at scrape time, so
they can never drift from what the process actually holds.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.config.settings import Settings
from agent.records.record_writer import RecordWriter
from agent.records.recordings import RecordingFinisher
from agent.worker.cluster import Cluster
from agent.worker.loop_lag import LoopLagMonitor
from pipelines.executor import ModelExecutor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format that `Metrics.render` produces."""

VOICE_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""Latency buckets for a phone conversation: 50 ms (a cached phrase) to 5 s (a caller gives up)."""

STAGES = {
    "endpoint_ms": ("hotline_endpoint_seconds", "Silence waited before a caller turn was taken as ended."),
    "asr_ms": ("hotline_asr_seconds", "Transcription time of a caller turn."),
    "dialogue_first_text_ms": (
        "hotline_dialogue_first_text_seconds",
        "From asking the dialogue to its first reply text.",
    ),
    "tts_first_audio_ms": ("hotline_tts_first_audio_seconds", "Synthesis time of a reply's first clause."),
    "response_ms": ("hotline_response_seconds", "End of caller speech to the reply's first audio sent."),
}
"""Per-turn latency keys (the record's `latency_ms`) and the histogram each one feeds."""

LAG_QUANTILES = (0.5, 0.99, 1.0)


class _LiveCall(Protocol):
    @property
    def bot_name(self) -> str: ...


class _Calls(Protocol):
    @property
    def sessions(self) -> Mapping[str, _LiveCall]: ...


class Process(Protocol):
    """What the live values are read from (the worker's Runtime)."""

    @property
    def calls(self) -> _Calls: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def loop_lag(self) -> LoopLagMonitor: ...
    @property
    def executor(self) -> ModelExecutor: ...
    @property
    def writer(self) -> RecordWriter: ...
    @property
    def recordings(self) -> RecordingFinisher: ...
    @property
    def cluster(self) -> Cluster | None: ...


class Metrics:
    """The metrics of one Runtime and the hooks the call code increments them through."""

    def __init__(self, runtime: Process | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("hotline_calls", "Calls by how they ended.", ["bot", "outcome"], registry=r)
        self.transfers = Counter(
            "hotline_transfers",
            "Transfers to a department, by what asked for them.",
            ["bot", "department", "rule"],
            registry=r,
        )
        self.barge_ins = Counter("hotline_barge_ins", "Callers cutting the bot off.", ["bot"], registry=r)
        self.errors = Counter(
            "hotline_errors",
            "Failures by stage (dialogue, tool, asr, transfer, notify, stream) and kind.",
            ["bot", "stage", "kind"],
            registry=r,
        )
        self.stages = {
            key: Histogram(name, doc, ["bot"], buckets=VOICE_BUCKETS_S, registry=r)
            for key, (name, doc) in STAGES.items()
        }
        if runtime is not None:
            r.register(LiveCollector(runtime))

    def render(self) -> bytes:
        """The registry in the Prometheus text format (see CONTENT_TYPE)."""
        return generate_latest(self.registry)

    def call_ended(self, bot: str, outcome: str) -> None:
        """Count a call once, when it ends (see `call_outcome`) or is answered with the fallback."""
        self.calls.labels(bot=bot, outcome=outcome).inc()

    def transfer(self, bot: str, department: str, reason: Mapping[str, Any]) -> None:
        """Count a bridge to a department, labelled with the rule behind it (see `transfer_rule`)."""
        self.transfers.labels(bot=bot, department=department, rule=transfer_rule(reason)).inc()

    def turn_latency(self, bot: str, latency: Mapping[str, Any]) -> None:
        """Observe the stage latencies (milliseconds) present in a turn's latency dict; others are skipped."""
        for key, histogram in self.stages.items():
            value = latency.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                histogram.labels(bot=bot).observe(max(0.0, value / 1000))

    def barge_in(self, bot: str) -> None:
        """The caller cut the bot off."""
        self.barge_ins.labels(bot=bot).inc()

    def error(self, bot: str, stage: str, kind: str) -> None:
        """A failure at `stage` (dialogue, tool, asr, transfer, notify, stream); `kind`: short, stable."""
        self.errors.labels(bot=bot, stage=stage, kind=kind).inc()


def call_outcome(*, handed_off: bool, bot_hung_up: bool, dropped: bool) -> str:
    """How a streamed call ended: transferred, bot_hangup, dropped (no close handshake) or completed.

    Who hung up otherwise cannot be told at close time: PIOPIY usually posts `hangup` after the socket
    has closed, so a caller's hangup is `completed`.
    """
    if handed_off:
        return "transferred"
    if bot_hung_up:
        return "bot_hangup"
    return "dropped" if dropped else "completed"


def transfer_rule(reason: Mapping[str, Any]) -> str:
    """What asked for a transfer: a rule's name, `intent:<name>`, `tool`, else its trigger or author."""
    if reason.get("rule"):
        return str(reason["rule"])
    if reason.get("intent"):
        return f"intent:{reason['intent']}"
    if reason.get("tool"):
        return "tool"
    return str(reason.get("trigger") or reason.get("by") or "unknown")


class LiveCollector:
    """Values read from the runtime at scrape time: active calls, event-loop lag, model queue depth."""

    def __init__(self, runtime: Process) -> None:
        self.runtime = runtime

    def describe(self) -> Iterator[Metric]:
        """The families `collect` yields (names only), so the registry can check for clashes."""
        yield GaugeMetricFamily("hotline_active_calls", "", labels=["bot"])
        yield GaugeMetricFamily("hotline_event_loop_lag_seconds", "", labels=["quantile"])
        yield GaugeMetricFamily("hotline_model_queue_depth", "")
        yield GaugeMetricFamily("hotline_record_writes_pending", "")
        yield CounterMetricFamily("hotline_record_writes_late", "")
        yield CounterMetricFamily("hotline_record_writes_dropped", "")
        yield CounterMetricFamily("hotline_store_write_failures", "")
        yield GaugeMetricFamily("hotline_recording_finalizes_pending", "")
        yield CounterMetricFamily("hotline_recording_write_failures", "")
        yield CounterMetricFamily("hotline_live_events_unshared", "")

    def collect(self) -> Iterator[Metric]:
        """Current values."""
        rt = self.runtime
        active = GaugeMetricFamily("hotline_active_calls", "Calls live in this process.", labels=["bot"])
        live = Tally(s.bot_name for s in rt.calls.sessions.values())
        for bot in sorted(set(rt.settings.bots) | set(live)):
            active.add_metric([bot], live[bot])
        yield active
        lag = GaugeMetricFamily(
            "hotline_event_loop_lag_seconds",
            "How late a 50 ms timer fired over the last minute (quantile 1: the worst).",
            labels=["quantile"],
        )
        samples = sorted(rt.loop_lag.samples)
        for q in LAG_QUANTILES:
            ms = samples[min(len(samples) - 1, int(q * len(samples)))] if samples else 0.0
            lag.add_metric([str(q)], ms / 1000)
        yield lag
        yield GaugeMetricFamily(
            "hotline_model_queue_depth", "Model jobs waiting for a worker.", value=rt.executor.queue_depth
        )
        writer = rt.writer
        yield GaugeMetricFamily(
            "hotline_record_writes_pending",
            "Call record writes not yet in the store (kept and retried while it is unreachable).",
            value=writer.pending,
        )
        yield CounterMetricFamily(
            "hotline_record_writes_late",
            "Record writes written after the store came back.",
            writer.written_late,
        )
        yield CounterMetricFamily(
            "hotline_record_writes_dropped",
            "Record writes given up (refused by the store, over the buffer, or pending at shutdown).",
            writer.dropped,
        )
        yield CounterMetricFamily(
            "hotline_store_write_failures",
            "Record write attempts that failed because the store could not be reached or written "
            "(each retry counts).",
            writer.failed_attempts,
        )
        yield GaugeMetricFamily(
            "hotline_recording_finalizes_pending",
            "Ended calls whose recording is still in raw parts (being retried, or left for recovery).",
            value=rt.recordings.pending,
        )
        yield CounterMetricFamily(
            "hotline_recording_write_failures",
            "Attempts to write a recording (raw parts during a call, the WAV after it) that failed.",
            rt.recordings.failures,
        )
        cluster = rt.cluster
        yield CounterMetricFamily(
            "hotline_live_events_unshared",
            "Live events and listen-in packets not shared with other workers (Redis slow or down).",
            (cluster.dropped + cluster.audio_dropped) if cluster is not None else 0,
        )
