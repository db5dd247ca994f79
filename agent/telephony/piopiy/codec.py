"""PIOPIY's wire: PCMO builders and the stream codec (webhook bodies: webhooks.py).

Pure code: JSON and bytes in, typed values out, and back. Nothing else in the service writes PIOPIY JSON.
Shapes follow shared/piopiy-protocol.md; where the platform is undocumented we accept every plausible
shape and emit the one TeleCMI's SDK emits.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Pcmo: TypeAlias = list[dict[str, Any]]
ListenMode = Literal["caller", "callee", "both"]
RingType = Literal["group"]
ControlVerb = Literal["break", "pause", "resume", "stop"]
AudioDataType = Literal["raw", "wav", "mp3", "ogg"]

SUPPORTED_STREAM_RATES = (8000, 16000, 32000)
_URL_RE = re.compile(r"^https?://\S+$", re.IGNORECASE)
_WS_RE = re.compile(r"^wss?://\S+$", re.IGNORECASE)


class PiopiyFormatError(ValueError):
    """A body or frame that does not have PIOPIY's shape; the message says what is wrong."""


# --------------------------------------------------------------------------------------------- PCMO


def _number(value: int | str, what: str) -> int:
    """PIOPIY wants phone numbers as ints in PCMO; accept '+91 98…' style strings too."""
    if isinstance(value, bool):
        raise PiopiyFormatError(f"{what}: expected a phone number, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise PiopiyFormatError(f"{what}: {value!r} is not a phone number")
        return value
    digits = re.sub(r"[\s\-()]", "", str(value)).lstrip("+")
    # ASCII digits only: str.isdigit() also passes '²', which int() then rejects with a bare ValueError.
    if not re.fullmatch(r"[0-9]+", digits) or int(digits) == 0:
        raise PiopiyFormatError(f"{what}: {value!r} is not a phone number")
    return int(digits)


def _positive_int(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PiopiyFormatError(f"{what}: {value!r} must be a positive integer")
    return value


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PiopiyFormatError(f"{what}: a non-empty string is required")
    return value


def _url(value: str, what: str) -> str:
    if not isinstance(value, str) or not _URL_RE.match(value):
        raise PiopiyFormatError(f"{what}: {value!r} is not an http(s) URL")
    return value


def stream_action(
    ws_url: str,
    *,
    listen_mode: ListenMode = "caller",
    voice_quality: int | str = 8000,
    stream_on_answer: bool = True,
) -> dict[str, Any]:
    """`stream`: PIOPIY opens a WebSocket to `ws_url` and streams the call's audio."""
    if not isinstance(ws_url, str) or not _WS_RE.match(ws_url):
        raise PiopiyFormatError(f"stream.ws_url: {ws_url!r} must start with ws:// or wss://")
    if listen_mode not in ("caller", "callee", "both"):
        raise PiopiyFormatError(f"stream.listen_mode: {listen_mode!r} is not caller, callee or both")
    # int() alone would let "abc" or None escape as a bare ValueError/TypeError, and True pass as 1.
    text_rate = str(voice_quality).strip() if not isinstance(voice_quality, bool) else ""
    rate = int(text_rate) if re.fullmatch(r"[0-9]+", text_rate) else 0
    if rate not in SUPPORTED_STREAM_RATES:
        raise PiopiyFormatError(
            f"stream.voice_quality: {voice_quality!r} is not one of {SUPPORTED_STREAM_RATES}"
        )
    # Docs show a string; the SDK emits strings. stream_on_answer always sent: docs disagree on its default.
    return {
        "action": "stream",
        "ws_url": ws_url,
        "listen_mode": listen_mode,
        "voice_quality": str(rate),
        "stream_on_answer": bool(stream_on_answer),
    }


def play_action(file: str) -> dict[str, Any]:
    """`play`: an http(s) URL becomes `file_url`, anything else a file stored on PIOPIY (`file_name`)."""
    _text(file, "play.file")
    key = "file_url" if _URL_RE.match(file) else "file_name"
    return {"action": "play", key: file}


def speak_action(text: str) -> dict[str, Any]:
    """`speak`: PIOPIY's own TTS says `text`."""
    return {"action": "speak", "text": _text(text, "speak.text")}


def param_action(text: str) -> dict[str, Any]:
    """`param`: a free string echoed back as `extra_params` in events and CDRs."""
    return {"action": "param", "text": _text(text, "param.text")}


def record_action() -> dict[str, Any]:
    """`record`: PIOPIY records the call on its side."""
    return {"action": "record"}


def hangup_action() -> dict[str, Any]:
    """`hangup`: end the call."""
    return {"action": "hangup"}


def bridge_action(
    from_number: int | str,
    numbers: Sequence[int | str],
    *,
    duration: int = 5400,
    timeout: int = 40,
    loop: int = 1,
    ring_type: RingType | None = None,
) -> dict[str, Any]:
    """`bridge`: connect the caller to phone numbers (one by one, or all at once with ring_type='group')."""
    if isinstance(numbers, (str, int)) or not numbers:
        raise PiopiyFormatError("bridge.connect: at least one phone number is required")
    if ring_type not in (None, "group"):
        raise PiopiyFormatError(f"bridge.ring_type: {ring_type!r} is not 'group'")
    for name, value in (("duration", duration), ("timeout", timeout), ("loop", loop)):
        _positive_int(value, f"bridge.{name}")
    action: dict[str, Any] = {
        "action": "bridge",
        "from": _number(from_number, "bridge.from"),
        "connect": [{"type": "pstn", "number": _number(n, "bridge.connect")} for n in numbers],
        "duration": duration,
        "timeout": timeout,
        "loop": loop,
    }
    if ring_type == "group":
        action["ring_type"] = "group"
    return action


def input_action(action_url: str, *, max_digit: int = 1, timeout: int = 5) -> dict[str, Any]:
    """`input`: collect DTMF digits; PIOPIY POSTs them to `action_url`."""
    return {
        "action": "input",
        "action_url": _url(action_url, "input.action_url"),
        "max_digit": _positive_int(max_digit, "input.max_digit"),
        "timeout": _positive_int(timeout, "input.timeout"),
    }


def play_get_input_action(
    action_url: str, file: str, *, max_digit: int = 1, max_retry: int = 3, timeout: int = 5
) -> dict[str, Any]:
    """`play_get_input`: play a prompt and collect DTMF digits.

    Like the SDK, a URL prompt is sent as both `file_name` and `file_url`.
    """
    action: dict[str, Any] = {
        "action": "play_get_input",
        "action_url": _url(action_url, "play_get_input.action_url"),
        "file_name": _text(file, "play_get_input.file"),
    }
    if _URL_RE.match(file):
        action["file_url"] = file
    action.update(
        max_digit=_positive_int(max_digit, "play_get_input.max_digit"),
        max_retry=_positive_int(max_retry, "play_get_input.max_retry"),
        timeout=_positive_int(timeout, "play_get_input.timeout"),
    )
    return action


def redact_tokens(actions: Pcmo) -> Pcmo:
    """The PCMO as stored in records: stream tokens replaced, so a leaked record opens no socket."""
    return [
        {**a, "ws_url": re.sub(r"([?&]token=)[^&]*", r"\1redacted", a["ws_url"])} if "ws_url" in a else a
        for a in actions
    ]


# --------------------------------------------------------------------------------- stream codec


MAX_JSON_DEPTH = 32  # PIOPIY's bodies are flat; call records nested deeper fail to serialize (a 500)


def strict_json(text: str | bytes) -> Any:
    """JSON as the RFC has it, for what we store: no NaN/Infinity (PostgreSQL refuses them), no number
    out of float range, no lone surrogate (\\ud800 decodes, but no database column stores it), and
    at most MAX_JSON_DEPTH levels. Raises ValueError (or RecursionError: nested deeper than the stack)."""
    data = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError is a ValueError
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend(
                (child, depth + 1) for child in (value.values() if isinstance(value, dict) else value)
            )
    return data


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise ValueError(f"{text[:40]} is out of range")
    return value


@dataclass(frozen=True)
class StreamMetadata:
    """A text frame PIOPIY may send first: a bare call UUID, or JSON metadata."""

    call_uuid: str | None
    data: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    """The frame's length in UTF-8 bytes (records keep a bounded amount of text)."""


@dataclass(frozen=True)
class UnknownText:
    """A text frame that is neither a UUID nor a JSON object: logged, never fatal."""

    text: str
    size: int = 0
    """The frame's length in UTF-8 bytes (`text` holds at most its first 200 characters)."""


class StreamDecoder:
    """Inbound stream frames → L16 PCM. Frames may have any length; an odd last byte waits for the next."""

    def __init__(self) -> None:
        self._carry = b""
        self.bytes_in = 0
        self.text_frames = 0

    @property
    def pending(self) -> int:
        """Bytes held back until the next frame completes a sample."""
        return len(self._carry)

    def feed_bytes(self, data: bytes) -> bytes:
        """Return the whole 16-bit samples available so far (possibly empty)."""
        self.bytes_in += len(data)
        buf = self._carry + data if self._carry else data
        usable = len(buf) - (len(buf) % 2)
        self._carry = buf[usable:]
        return bytes(buf[:usable])

    def feed_text(self, text: str) -> StreamMetadata | UnknownText:
        """Classify a text frame: a call UUID, JSON metadata, or junk."""
        self.text_frames += 1
        size = len(text.encode("utf-8", "surrogatepass"))
        stripped = text.strip()
        try:
            return StreamMetadata(call_uuid=str(uuid.UUID(stripped)), size=size)
        except ValueError:
            pass
        try:
            data = strict_json(stripped)
        except (ValueError, RecursionError):  # RecursionError: '[[[[…' nested deeper than the stack
            return UnknownText(text[:200], size)
        if not isinstance(data, dict):
            return UnknownText(text[:200], size)
        call = data.get("cmiuuid") or data.get("call_uuid") or data.get("uuid") or data.get("call_id")
        call_id = str(call) if isinstance(call, (str, int)) and not isinstance(call, bool) else ""
        # Kept as the call's cmiuuid: a printable id that fits the column, else only in the metadata.
        usable = len(call_id) <= 128 and call_id.isprintable()
        return StreamMetadata(call_uuid=call_id if call_id and usable else None, data=data, size=size)


def encode_stream_audio(audio: bytes, sample_rate: int, audio_type: AudioDataType = "raw") -> str:
    """A `streamAudio` frame: PIOPIY queues it for playback as one file."""
    if sample_rate not in (8000, 16000):
        raise PiopiyFormatError(f"streamAudio.sampleRate: {sample_rate} is not 8000 or 16000")
    if audio_type == "raw" and len(audio) % 2:
        raise PiopiyFormatError("streamAudio: raw L16 audio must have an even number of bytes")
    return json.dumps(
        {
            "type": "streamAudio",
            "data": {
                "audioDataType": audio_type,
                "sampleRate": sample_rate,
                "audioData": base64.b64encode(audio).decode("ascii"),
            },
        }
    )


def encode_control(verb: ControlVerb) -> str:
    """`break` cuts what is playing; `pause`/`resume`/`stop` drive the stream."""
    if verb not in ("break", "pause", "resume", "stop"):
        raise PiopiyFormatError(f"unknown stream control {verb!r}")
    return json.dumps({"action": verb})


def encode_pcmo(actions: Pcmo) -> str:
    """A PCMO run mid-call (transfer, music, hangup) goes over the socket as a bare JSON array."""
    if not actions or not all(isinstance(a, dict) and "action" in a for a in actions):
        raise PiopiyFormatError("a PCMO is a non-empty list of action objects")
    return json.dumps(actions)


@dataclass(frozen=True)
class StreamAudio:
    """Decoded outbound `streamAudio` frame."""

    audio: bytes
    sample_rate: int
    audio_type: str


@dataclass(frozen=True)
class StreamControl:
    """Decoded outbound control verb."""

    verb: str


@dataclass(frozen=True)
class PcmoFrame:
    """Decoded outbound PCMO array."""

    actions: Pcmo


OutboundFrame: TypeAlias = StreamAudio | StreamControl | PcmoFrame


def decode_outbound(text: str) -> OutboundFrame:
    """The platform's side of the codec (used by the simulator and tests): our text frame → typed value."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PiopiyFormatError(f"outbound frame is not JSON: {exc}") from None
    if isinstance(data, list):
        if not data or not all(isinstance(a, dict) and isinstance(a.get("action"), str) for a in data):
            raise PiopiyFormatError("outbound PCMO must be a non-empty list of action objects")
        return PcmoFrame(actions=data)
    if not isinstance(data, dict):
        raise PiopiyFormatError("outbound frame must be a JSON object or array")
    if data.get("type") == "streamAudio":
        payload = data.get("data")
        if not isinstance(payload, dict):
            raise PiopiyFormatError("streamAudio.data must be an object")
        # Strict on purpose: this is the platform's side, it must catch frames PIOPIY could not play.
        encoded = payload.get("audioData")
        if not isinstance(encoded, str):
            raise PiopiyFormatError("streamAudio.audioData must be a base64 string")
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PiopiyFormatError("streamAudio.audioData is not base64") from None
        rate = payload.get("sampleRate")
        if rate not in (8000, 16000):
            raise PiopiyFormatError(f"streamAudio.sampleRate {rate!r} is not 8000 or 16000")
        audio_type = payload.get("audioDataType")
        if audio_type not in ("raw", "wav", "mp3", "ogg"):
            raise PiopiyFormatError(f"streamAudio.audioDataType {audio_type!r} is not raw, wav, mp3 or ogg")
        return StreamAudio(audio=audio, sample_rate=int(rate), audio_type=str(audio_type))
    verb = data.get("action")
    if verb in ("break", "pause", "resume", "stop"):
        return StreamControl(verb=str(verb))
    raise PiopiyFormatError(f"unknown outbound frame {text[:80]!r}")
