"""PIOPIY's webhook bodies (answer_url, Event URL, CDR URL, DTMF callbacks) as lenient typed models,
and what identifies a delivery: an event's key, a CDR's age.

PIOPIY sends numbers as ints or strings and adds keys over time: unknown keys are kept, numbers become
digit strings (`+91 80-4000 1000` → `918040001000`; anything that is not a phone number, such as a
withheld caller's `anonymous`, becomes None: an unknown number), and a body that lacks what we need
raises PiopiyFormatError naming each field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.config.base import number_or_none
from agent.telephony.piopiy.codec import PiopiyFormatError

M = TypeVar("M", bound=BaseModel)

# What the store keeps in columns (ids, statuses, numbers) must fit them, on PostgreSQL too: no control
# characters (PostgreSQL text refuses NUL) and no longer than the column. The whole body is kept as JSON.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
PlatformId = Annotated[str, Field(max_length=128, pattern=_PRINTABLE)]
Status = Annotated[str, Field(min_length=1, max_length=64, pattern=_PRINTABLE)]


class _Lenient(BaseModel):
    """Webhook bodies: unknown keys kept, numbers as ints or strings stored as strings."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @field_validator("from_", "to", mode="before", check_fields=False)
    @classmethod
    def _as_number(cls, value: Any) -> str | None:
        return number_or_none(value)


class AnswerRequest(_Lenient):
    """The body PIOPIY POSTs to answer_url when a call arrives. `to` (the number dialled: ours) must be
    a phone number; `from` is None when it is not one (a withheld caller id): the call goes on with an
    unknown caller."""

    from_: str | None = Field(alias="from")
    to: str | None
    cmiuuid: PlatformId = Field(min_length=1)
    time: int | None = None
    action: str | None = None

    @field_validator("to", mode="after")
    @classmethod
    def _dialled(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("not a phone number (digits, optionally with a leading +)")
        return value


class CallEvent(_Lenient):
    """A live event POSTed to the Event URL."""

    cmiuuid: PlatformId | None = None
    status: Status
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    leg: str | None = None
    direction: str | None = None
    time: int | None = None
    request_id: PlatformId | None = None
    extra_params: Any = None
    ws_status: Any = None

    @property
    def status_lower(self) -> str:
        """Statuses come in mixed case (`STREAM_DISCONNECTED`): compare lower-cased."""
        return self.status.lower()

    def delivery_key(self, body: Mapping[str, Any]) -> str:
        """What identifies this event whatever the delivery: its call, leg, status and time (PIOPIY's
        epoch ms). Without a time, the whole body (a retry repeats it)."""
        if self.time is not None:
            identity: Any = [self.cmiuuid, self.request_id, self.leg, self.status_lower, self.time]
        else:
            identity = body
        text = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def stream_status(self) -> dict[str, Any] | None:
        """`ws_status` is a JSON *string*; return it decoded, or None."""
        if isinstance(self.ws_status, dict):
            return self.ws_status
        if isinstance(self.ws_status, str):
            try:
                decoded = json.loads(self.ws_status)
            except ValueError:
                return {"status": self.ws_status}
            return decoded if isinstance(decoded, dict) else None
        return None


class CdrRecord(_Lenient):
    """A call detail record POSTed to the CDR URL (retried by PIOPIY: store idempotently)."""

    cmiuuid: PlatformId = Field(min_length=1)
    leg: str = Field(default="a", max_length=8, pattern=_PRINTABLE)
    status: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    direction: str | None = None
    duration: float | None = None
    request_id: PlatformId | None = None  # looked up in the store: printable, bounded

    @field_validator("leg", mode="before")
    @classmethod
    def _leg(cls, value: Any) -> Any:
        return "a" if value in (None, "") else str(value)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        return value


class DtmfCallback(_Lenient):
    """Digits collected by an `input`/`play_get_input` action."""

    dtmf: str
    cmiuuid: PlatformId | None = None
    cmuuid: PlatformId | None = None  # some pages spell it without the i
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    extra_params: Any = None

    @field_validator("dtmf", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not re.fullmatch(r"[0-9*#A-Da-d]{1,64}", text):
            raise ValueError("dtmf must be 1-64 of 0-9 * # A-D")
        return text

    @property
    def call_uuid(self) -> str | None:
        """The call the digits belong to, whichever spelling PIOPIY used."""
        return self.cmiuuid or self.cmuuid


def cdr_order(payload: Any) -> float | None:
    """When PIOPIY made a CDR (ms): its `time`, else its `end_time` (s); None when it says neither."""
    if not isinstance(payload, dict):
        return None
    for key, scale in (("time", 1.0), ("end_time", 1000.0)):
        value: Any = payload.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            number = float(value) * scale
        except (TypeError, ValueError):
            continue
        if number == number and abs(number) != float("inf"):  # not NaN or infinite
            return number
    return None


def cdr_is_newer(incoming: Any, stored: Any) -> bool:
    """Whether a CDR delivery replaces the stored one: it is newer by `cdr_order`; one that says nothing
    of its time replaces only another that says nothing either (the latest delivery then)."""
    new, old = cdr_order(incoming), cdr_order(stored)
    if new is None:
        return old is None
    return old is None or new > old


def parse_body(model: type[M], body: Any) -> M:
    """Validate a decoded JSON body; raise PiopiyFormatError naming each bad field."""
    if not isinstance(body, Mapping):
        raise PiopiyFormatError(f"expected a JSON object, got {type(body).__name__}")
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}" for err in exc.errors()
        )
        raise PiopiyFormatError(problems) from None
