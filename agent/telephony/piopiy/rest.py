"""PIOPIY's REST API (legacy v2, the one that takes a PCMO): place outbound calls, act on live calls.

Bodies match TeleCMI's SDK (`piopiy.voice.pcmo_call.PCMO.makePCMO`, `piopiy.voice.hold.Hold`):
credentials travel in the JSON body, never in a header. Errors become PiopiyRestError with a message
a person can act on; the secret never appears in messages, logs or reprs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from agent.telephony.piopiy.codec import Pcmo, PiopiyFormatError, _number

logger = logging.getLogger(__name__)

Region = Literal["global", "ind"]
CallAction = Literal["hangup", "hold", "unhold", "holdToggle"]

DEFAULT_BASE_URL = "https://rest.telecmi.com"
DEFAULT_ACTION_BASE_URL = "https://piopiy.telecmi.com"
MAKE_CALL_PATHS: dict[Region, str] = {
    "global": "/v2/global_pcmo_make_call",
    "ind": "/v2/ind_pcmo_make_call",
}
CALL_ACTION_PATH = "/v1/call/action"
CALL_ACTIONS: tuple[CallAction, ...] = ("hangup", "hold", "unhold", "holdToggle")

AUTH_FAILED = 420
MISSING_PROPERTY = (422, 502)


class PiopiyRestError(RuntimeError):
    """PIOPIY refused a request, answered something unexpected, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        piopiy_message: str | None = None,
        payload: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code  # None when no answer came back (network error, timeout)
        self.piopiy_message = piopiy_message
        self.payload = payload


class PiopiyAuthError(PiopiyRestError):
    """PIOPIY rejected the appid/secret pair (code 420)."""


@dataclass(frozen=True)
class MakeCallResult:
    """PIOPIY accepted an outbound call; `request_id` comes back in its events and CDRs."""

    request_id: str
    status: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class PiopiyRestClient:
    """Async client for PIOPIY's REST endpoints; use as `async with` or call `aclose()`."""

    def __init__(
        self,
        *,
        appid: int,
        secret: str,
        base_url: str = DEFAULT_BASE_URL,
        action_base_url: str = DEFAULT_ACTION_BASE_URL,
        region: Region = "global",
        timeout_s: float = 10.0,
    ) -> None:
        if isinstance(appid, bool) or not isinstance(appid, int) or appid <= 0:
            raise ValueError(f"PIOPIY appid must be a positive integer (check PIOPIY_APPID), got {appid!r}")
        if not isinstance(secret, str) or not secret:
            raise ValueError("PIOPIY secret is empty (check PIOPIY_SECRET)")
        if region not in MAKE_CALL_PATHS:
            raise ValueError(f"PIOPIY region must be 'global' or 'ind', got {region!r}")
        self.appid = appid
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.action_base_url = action_base_url.rstrip("/")
        self.region: Region = region
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(timeout=timeout_s, headers={"Accept": "application/json"})

    def __repr__(self) -> str:
        return f"PiopiyRestClient(appid={self.appid}, base_url={self.base_url!r}, region={self.region!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def make_call(
        self,
        *,
        to: int | str,
        from_number: int | str,
        pcmo: Pcmo,
        duration: int = 5400,
        extra_params: Mapping[str, Any] | None = None,
    ) -> MakeCallResult:
        """Place an outbound call from your PIOPIY number `from_number` to `to` that runs `pcmo`.

        Not retried on failure: a retry after a lost answer could ring the callee twice.
        """
        if not isinstance(pcmo, list) or not pcmo:
            raise PiopiyFormatError("make_call.pcmo: a non-empty list of actions is required")
        if not all(isinstance(a, dict) and isinstance(a.get("action"), str) for a in pcmo):
            raise PiopiyFormatError("make_call.pcmo: every action must be an object with an 'action' key")
        if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0:
            raise PiopiyFormatError(f"make_call.duration: {duration!r} must be a positive integer")
        # Same keys and types as the SDK's PCMO.makePCMO: numbers are ints, extra_params always present.
        body: dict[str, Any] = {
            "appid": self.appid,
            "secret": self._secret,
            "from": _number(from_number, "make_call.from_number"),
            "to": _number(to, "make_call.to"),
            "duration": duration,
            "extra_params": dict(extra_params or {}),
            "pcmo": pcmo,
        }
        url = self.base_url + MAKE_CALL_PATHS[self.region]
        logger.info(
            "PIOPIY make_call to=%s from=%s actions=%s",
            body["to"],
            body["from"],
            [a["action"] for a in pcmo],
        )
        answer = await self._post(url, body, what="make_call", require_object=True)
        nested = answer.get("data")
        data: dict[str, Any] = nested if isinstance(nested, dict) else {}
        request_id = answer.get("request_id") or data.get("request_id")
        status = answer.get("status") or data.get("status") or "progress"
        if not isinstance(request_id, str) or not request_id:
            raise PiopiyRestError(
                f"PIOPIY accepted make_call but sent no request_id: {_clip(answer)}",
                status_code=_int_or_none(answer.get("code")),
                payload=answer,
            )
        return MakeCallResult(request_id=request_id, status=str(status), raw=answer)

    async def call_action(self, cmiuuid: str, action: CallAction) -> dict[str, Any]:
        """Act on a live call: `hangup`, `hold`, `unhold` or `holdToggle`; returns PIOPIY's answer."""
        if not isinstance(cmiuuid, str) or not cmiuuid.strip():
            raise PiopiyFormatError("call_action.cmiuuid: a call uuid is required")
        if action not in CALL_ACTIONS:
            raise PiopiyFormatError(f"call_action.action: {action!r} is not one of {CALL_ACTIONS}")
        body = {"appid": self.appid, "secret": self._secret, "cmiuuid": cmiuuid, "action": action}
        logger.info("PIOPIY call_action %s on %s", action, cmiuuid)
        url = self.action_base_url + CALL_ACTION_PATH
        # The answer's shape is undocumented (the SDK returns the raw text): accept any 2xx body.
        return await self._post(url, body, what=f"call_action {action}", require_object=False)

    async def _post(
        self, url: str, body: dict[str, Any], *, what: str, require_object: bool
    ) -> dict[str, Any]:
        """POST JSON; return the decoded object or raise PiopiyRestError (the secret is never echoed).

        A 2xx body that is not a JSON object is an error if `require_object`, else `{"raw": text}`.
        """
        try:
            response = await self._http.post(url, json=body)
        except httpx.TimeoutException:
            raise PiopiyRestError(
                f"PIOPIY {what}: no answer from {url} within {self.timeout_s:g} s"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # `from None`: httpx exceptions carry the request, and the request carries the secret.
            reason = str(exc) or type(exc).__name__
            raise PiopiyRestError(f"PIOPIY {what}: could not reach {url}: {reason}") from None
        try:
            answer: Any = response.json()
        except ValueError:
            answer = None
        code = _status_of(response.status_code, answer)
        if code is not None:
            raise _error_for(code, answer, response.text, what)
        if isinstance(answer, dict):
            return answer
        if require_object:
            raise PiopiyRestError(
                f"PIOPIY {what}: HTTP {response.status_code} with a body that is not a JSON object: "
                f"{response.text[:200]!r}",
                status_code=response.status_code,
                payload=response.text,
            )
        return {"raw": response.text}


def _status_of(http_status: int, answer: Any) -> int | None:
    """The error code of an answer, or None on success.

    PIOPIY also reports errors in the body's `code`, so a 200 carrying `"code": 420` is an error too.
    """
    if http_status >= 400:
        return http_status
    body_code = _int_or_none(answer.get("code")) if isinstance(answer, dict) else None
    if body_code is not None and body_code >= 400:
        return body_code
    return None


def _error_for(code: int, answer: Any, text: str, what: str) -> PiopiyRestError:
    said = _piopiy_message(answer, text)
    if code == AUTH_FAILED:
        return PiopiyAuthError(
            f"PIOPIY rejected the appid/secret ({code}: {said}): check PIOPIY_APPID / PIOPIY_SECRET",
            status_code=code,
            piopiy_message=said,
            payload=answer,
        )
    if code in MISSING_PROPERTY:
        message = f"PIOPIY {what}: a required property is missing or invalid ({code}: {said})"
    else:
        message = f"PIOPIY {what} failed ({code}: {said})"
    return PiopiyRestError(message, status_code=code, piopiy_message=said, payload=answer)


def _piopiy_message(answer: Any, text: str) -> str:
    if isinstance(answer, dict):
        for key in ("msg", "message", "error"):
            value = answer.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and value:
                return _clip(value)
    return text.strip()[:200] or "no message"


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    return None


def _clip(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
