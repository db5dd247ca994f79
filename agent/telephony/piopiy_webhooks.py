"""PIOPIY's webhook bodies (answer_url, Event URL, CDR URL, DTMF callbacks) as lenient typed models.

PIOPIY sends numbers as ints or strings and adds keys over time: unknown keys are kept, numbers are
stored as strings, and a body that lacks what we need raises PiopiyFormatError naming each field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.telephony.piopiy import PiopiyFormatError

M = TypeVar("M", bound=BaseModel)

# What the store keeps in columns (ids, statuses, numbers) must fit them, on PostgreSQL too: no control
# characters (PostgreSQL text refuses NUL) and no longer than the column. The whole body is kept as JSON.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
PlatformId = Annotated[str, Field(max_length=128, pattern=_PRINTABLE)]
Status = Annotated[str, Field(min_length=1, max_length=64, pattern=_PRINTABLE)]
Number = Annotated[str, Field(min_length=1, max_length=32, pattern=_PRINTABLE)]


class _Lenient(BaseModel):
    """Webhook bodies: unknown keys kept, numbers as ints or strings stored as strings."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @field_validator("from_", "to", mode="before", check_fields=False)
    @classmethod
    def _as_string(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        return str(value) if isinstance(value, int) else value


class AnswerRequest(_Lenient):
    """The body PIOPIY POSTs to answer_url when a call arrives."""

    from_: Number = Field(alias="from")
    to: Number
    cmiuuid: PlatformId = Field(min_length=1)
    time: int | None = None
    action: str | None = None


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
    request_id: str | None = None

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
