"""What happens on a call, as typed events: the call's parts emit them, CallObserver writes them down."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.call.state import CallState


@dataclass(frozen=True)
class EndpointLatency:
    """How long a spoken caller turn took to end and be transcribed (milliseconds)."""

    endpoint_ms: int
    early_endpoint: bool
    asr_ms: int
    asr_wait_ms: int
    asr_speculative_hit: bool


@dataclass(frozen=True)
class AnswerLatency:
    """How long the answer to a caller turn took (milliseconds; None: that stage gave nothing)."""

    dialogue_first_text_ms: int | None
    tts_first_audio_ms: float | None
    response_ms: int


@dataclass(frozen=True)
class TurnLatency:
    """A caller turn's latencies, as the record's `latency_ms` keeps them."""

    endpoint: EndpointLatency | None = None
    answer: AnswerLatency | None = None
    source: str | None = None
    """"dtmf" for keypad turns (they have no endpoint or ASR)."""

    def as_dict(self) -> dict[str, Any]:
        """The record's and live feed's shape (key order kept: it is stored as JSON)."""
        out: dict[str, Any] = {"source": self.source} if self.source else {}
        if self.endpoint is not None:
            out.update(vars(self.endpoint))
        if self.answer is not None:
            out.update(vars(self.answer))
        return out


# --------------------------------------------------------------------------------------- the line


@dataclass(frozen=True)
class CallStarted:
    bot: str
    caller: str
    called: str
    sample_rate: int


@dataclass(frozen=True)
class StateChanged:
    before: CallState
    state: CallState


@dataclass(frozen=True)
class NoAudio:
    """The carrier sent nothing for `ms` mid-turn; counted as silence."""

    ms: int


@dataclass(frozen=True)
class CarrierIdKnown:
    cmiuuid: str


@dataclass(frozen=True)
class TextFrameKept:
    """A text frame kept in the record: `status` metadata or junk_text."""

    status: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class RecordingStopped:
    """The raw recording could not be written; the call goes on unrecorded."""

    error: str


@dataclass(frozen=True)
class RecordingFailed:
    """At the end: where the recording stopped."""

    error: str
    at_s: float


@dataclass(frozen=True)
class TextTruncated:
    summary: dict[str, Any]


@dataclass(frozen=True)
class CallClosed:
    """The stream ended and the call is saved."""

    reason: str
    dropped: bool
    end_reason: str
    outcome: str
    """For the calls counter (agent.worker.metrics.call_outcome)."""
    status: str
    ended_at: float
    recording_path: str | None


@dataclass(frozen=True)
class CallerHungUpLate:
    """The carrier's hang-up news came while the call was being saved."""


@dataclass(frozen=True)
class CallEnded:
    reason: str


@dataclass(frozen=True)
class Dtmf:
    digits: str


# ------------------------------------------------------------------------------------ caller turns


@dataclass(frozen=True)
class SpeechBegan:
    onset_ms: int


@dataclass(frozen=True)
class PartialTranscript:
    text: str
    asr_ms: int


@dataclass(frozen=True)
class BargeIn:
    onset_ms: int
    detected_after_ms: int


@dataclass(frozen=True)
class CallerTurn:
    """A spoken caller turn, transcribed; `continued`: the first part it goes on from (one turn)."""

    turn_id: int | None
    text: str
    started_at: float
    ended_at: float
    latency: TurnLatency
    continued: str | None = None


@dataclass(frozen=True)
class KeypadTurn:
    turn_id: int | None
    text: str
    at: float
    latency: TurnLatency


@dataclass(frozen=True)
class MonitorTurn:
    """A caller turn after the handoff: kept, not answered; `shown`: in the agents' language."""

    turn_id: int | None
    text: str
    started_at: float
    ended_at: float
    shown: bool


@dataclass(frozen=True)
class TurnInterpreted:
    turn_id: int | None
    text: str
    language: str
    interpretation: dict[str, Any]
    translation: str | None


@dataclass(frozen=True)
class TurnSignalsRead:
    turn_id: int | None
    signals: dict[str, Any]


@dataclass(frozen=True)
class TurnAnswered:
    """The answer's first audio went out: the turn's latency is complete."""

    turn_id: int | None
    latency: TurnLatency


@dataclass(frozen=True)
class TurnUnanswered:
    turn_id: int | None
    text: str
    why: str


@dataclass(frozen=True)
class Backchannel:
    text: str
    resumed: bool


@dataclass(frozen=True)
class AsrRejected:
    rejected: str | None
    detail: str | None


@dataclass(frozen=True)
class AsrFailed:
    error: str
    detail: str
    fallback: bool
    """The caller hears the fallback line (it counts as a dialogue failure)."""


@dataclass(frozen=True)
class LanguageChanged:
    detection: dict[str, Any]
    reply_language: str


@dataclass(frozen=True)
class SilenceTimeout:
    """Nobody said anything for the bot's silence_timeout_s."""


# ---------------------------------------------------------------------------------------- the bot


@dataclass(frozen=True)
class BotTurnStarted:
    turn_id: int | None
    text: str
    at: float


@dataclass(frozen=True)
class BotTurnEnded:
    turn_id: int | None
    said: str
    ended_at: float
    interrupted: bool
    heard: str


@dataclass(frozen=True)
class DialogueFailed:
    caller_text: str
    reason: str
    said_before: str


@dataclass(frozen=True)
class ToolCalled:
    tool: str | None
    args: dict[str, Any] | None
    reason: dict[str, Any]


@dataclass(frozen=True)
class ToolDone:
    tool: str
    ms: int
    fillers: int


@dataclass(frozen=True)
class ToolFailed:
    tool: str
    kind: str
    ms: int


@dataclass(frozen=True)
class LlmIntentFailed:
    error: str
    ms: int


@dataclass(frozen=True)
class RuleFired:
    reason: dict[str, Any]


# ---------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class ActionSent:
    """The link sent an action (music, hang-up…): `kind` and `payload` as it reports them."""

    kind: str
    payload: dict[str, Any]
    reason: dict[str, Any]


@dataclass(frozen=True)
class TransferStarted(ActionSent):
    department: str = ""


@dataclass(frozen=True)
class TransferNotStarted:
    """`status` refused (not a configured department) or ignored (`why`)."""

    status: str
    department: str
    why: str | None = None


@dataclass(frozen=True)
class TransferAnswered:
    department: str


@dataclass(frozen=True)
class TransferFailed:
    department: str
    why: str


@dataclass(frozen=True)
class ActionUnsupported:
    kind: str
    reason: dict[str, Any]


@dataclass(frozen=True)
class SupervisorOrder:
    action: str
    department: str | None
    reason: dict[str, Any]


@dataclass(frozen=True)
class SupervisorListening:
    user: str


@dataclass(frozen=True)
class Tagged:
    added: list[str]
    tags: list[str]
    reason: dict[str, Any]


@dataclass(frozen=True)
class NotifyQueued:
    webhook: str
    url: str
    reason: dict[str, Any]


@dataclass(frozen=True)
class NotifyMissing:
    webhook: str


@dataclass(frozen=True)
class NotifyDelivered:
    delivery: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    status: int | None = None


CallEvent = (
    CallStarted | StateChanged | NoAudio | CarrierIdKnown | TextFrameKept | RecordingStopped
    | RecordingFailed | TextTruncated | CallClosed | CallerHungUpLate | CallEnded | Dtmf | SpeechBegan
    | PartialTranscript | BargeIn | CallerTurn | KeypadTurn | MonitorTurn | TurnInterpreted
    | TurnSignalsRead | TurnAnswered | TurnUnanswered | Backchannel | AsrRejected | AsrFailed
    | LanguageChanged | SilenceTimeout | BotTurnStarted | BotTurnEnded | DialogueFailed | ToolCalled
    | ToolDone | ToolFailed | LlmIntentFailed | RuleFired | ActionSent | TransferNotStarted
    | TransferAnswered | TransferFailed | ActionUnsupported | SupervisorOrder | SupervisorListening
    | Tagged | NotifyQueued | NotifyMissing | NotifyDelivered
)  # fmt: skip
"""Everything CallObserver.emit takes."""
