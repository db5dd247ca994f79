"""A fake of PIOPIY's REST API, served over real HTTP, that checks bodies the way PIOPIY would.

    with FakePiopiyRest(appid=1111, secret="s3cret") as fake:
        client = PiopiyRestClient(appid=1111, secret="s3cret",
                                  base_url=fake.base_url, action_base_url=fake.base_url)
        ...
        assert fake.requests[0].body["pcmo"][0]["action"] == "stream"

The checks are written from shared/piopiy-protocol.md, independently of agent.telephony.piopiy.codec, so a
builder that drifts from the wire shape fails here. The fake is stricter than PIOPIY in one way: a
`stream` must carry `listen_mode` and `voice_quality`, because our builders always send them.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from testkit.servers import ServedApp

_HTTP_URL = re.compile(r"^https?://\S+$", re.IGNORECASE)
_WS_URL = re.compile(r"^wss?://\S+$", re.IGNORECASE)
CALL_ACTIONS = ("hangup", "hold", "unhold", "holdToggle")


class RejectedBody(Exception):
    """A body PIOPIY would refuse: the HTTP status and the message PIOPIY would put in `msg`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, valid or not."""

    method: str
    path: str
    body: Any  # decoded JSON, or the raw text when it was not JSON
    headers: dict[str, str]
    status_code: int
    answer: dict[str, Any] = field(repr=False)


# ------------------------------------------------------------------------------------- checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(body: dict[str, Any], key: str, where: str, check: Callable[[Any], bool], want: str) -> Any:
    if key not in body:
        raise RejectedBody(422, f"{where}{key} is missing")
    if not check(body[key]):
        raise RejectedBody(422, f"{where}{key} must be {want}, got {body[key]!r}")
    return body[key]


def _optional(body: dict[str, Any], key: str, where: str, check: Callable[[Any], bool], want: str) -> None:
    if key in body:
        _require(body, key, where, check, want)


def _positive(value: Any) -> bool:
    return _is_int(value) and value > 0


def _non_empty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_stream(action: dict[str, Any], where: str) -> None:
    _require(
        action, "ws_url", where, lambda v: isinstance(v, str) and bool(_WS_URL.match(v)), "ws:// or wss://"
    )
    _require(action, "listen_mode", where, lambda v: v in ("caller", "callee", "both"), "caller|callee|both")
    rates = ("8000", "16000", "32000")
    _require(action, "voice_quality", where, lambda v: str(v) in rates and not isinstance(v, bool), "a rate")
    _optional(action, "stream_on_answer", where, lambda v: isinstance(v, bool), "a boolean")


def _check_file(action: dict[str, Any], where: str) -> None:
    if "file_url" not in action and "file_name" not in action:
        raise RejectedBody(422, f"{where}file_url or file_name is missing")
    _optional(action, "file_url", where, lambda v: isinstance(v, str) and bool(_HTTP_URL.match(v)), "a URL")
    _optional(action, "file_name", where, _non_empty_str, "a file name")


def _check_text(action: dict[str, Any], where: str) -> None:
    _require(action, "text", where, _non_empty_str, "a non-empty string")


def _check_bridge(action: dict[str, Any], where: str) -> None:
    _require(action, "from", where, _positive, "an integer phone number")
    connect = _require(
        action, "connect", where, lambda v: isinstance(v, list) and bool(v), "a non-empty list"
    )
    for n, target in enumerate(connect):
        if not isinstance(target, dict):
            raise RejectedBody(422, f"{where}connect[{n}] must be an object")
        _require(target, "type", f"{where}connect[{n}].", lambda v: v == "pstn", '"pstn"')
        _require(target, "number", f"{where}connect[{n}].", _positive, "an integer phone number")
    for key in ("duration", "timeout", "loop"):
        _optional(action, key, where, _positive, "a positive integer")
    _optional(action, "ring_type", where, lambda v: v == "group", '"group"')


def _check_input(action: dict[str, Any], where: str) -> None:
    _require(action, "action_url", where, lambda v: isinstance(v, str) and bool(_HTTP_URL.match(v)), "a URL")
    for key in ("max_digit", "max_retry", "timeout"):
        _optional(action, key, where, _positive, "a positive integer")
    if action["action"] == "play_get_input":
        _check_file(action, where)


_ACTION_CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "stream": _check_stream,
    "play": _check_file,
    "speak": _check_text,
    "param": _check_text,
    "record": lambda action, where: None,
    "hangup": lambda action, where: None,
    "bridge": _check_bridge,
    "input": _check_input,
    "play_get_input": _check_input,
}


def check_pcmo(pcmo: Any, where: str = "pcmo") -> None:
    """Raise RejectedBody (422) naming the first property of `pcmo` that PIOPIY would refuse."""
    if not isinstance(pcmo, list) or not pcmo:
        raise RejectedBody(422, f"{where} must be a non-empty list of actions")
    for n, action in enumerate(pcmo):
        at = f"{where}[{n}]."
        if not isinstance(action, dict):
            raise RejectedBody(422, f"{where}[{n}] must be an object")
        name = _require(action, "action", at, lambda v: isinstance(v, str), "a string")
        if name not in _ACTION_CHECKS:
            raise RejectedBody(422, f"{at}action {name!r} is not a PIOPIY action")
        _ACTION_CHECKS[name](action, at)


# ---------------------------------------------------------------------------------------- fake


class FakePiopiyRest(ServedApp):
    """PIOPIY's REST endpoints on a local port: make-call (global and ind) and call actions.

    Every request is recorded in `requests`. `delay_s` holds answers back (timeout tests);
    `queue_answer()` scripts the next answers (5xx, odd bodies) ahead of the normal checks.
    """

    def __init__(self, *, appid: int = 1111, secret: str = "s3cret", host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self.appid = appid
        self.secret = secret
        self.delay_s = 0.0
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, dict[str, Any]] = {}  # request_id → make-call body, for accepted calls
        self._scripted: list[tuple[int, Any]] = []
        self._generation = 0  # bumped by reset(): a request still in flight from before is not recorded
        self._lock = threading.Lock()
        self.app = self._build_app()

    def queue_answer(self, status_code: int, body: Any) -> None:
        """Answer the next request with `body` and `status_code`, whatever it contains."""
        with self._lock:
            self._scripted.append((status_code, body))

    def reset(self) -> None:
        """Forget recorded requests, accepted calls and scripted answers."""
        with self._lock:
            self.requests.clear()
            self.calls.clear()
            self._scripted.clear()
            self._generation += 1
        self.delay_s = 0.0

    def paths(self) -> list[str]:
        """The paths received so far, in order."""
        with self._lock:
            return [r.path for r in self.requests]

    # --------------------------------------------------------------------------- endpoints

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake PIOPIY REST")

        @app.post("/v2/global_pcmo_make_call")
        @app.post("/v2/ind_pcmo_make_call")
        async def make_call(request: Request) -> JSONResponse:
            return await self._answer(request, self._make_call)

        @app.post("/v1/call/action")
        async def call_action(request: Request) -> JSONResponse:
            return await self._answer(request, self._call_action)

        return app

    async def _answer(self, request: Request, handle: Callable[[Any], dict[str, Any]]) -> JSONResponse:
        raw = (await request.body()).decode("utf-8", errors="replace")
        try:
            body: Any = await request.json()
        except ValueError:
            body = raw
        # Taken on arrival, so a request still delayed when a test ends cannot eat the next test's answer.
        with self._lock:
            generation = self._generation
            scripted = self._scripted.pop(0) if self._scripted else None
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if generation != self._generation:  # reset() ran meanwhile: that test is over, forget the request
            return JSONResponse({"code": 503, "msg": "fake was reset"}, status_code=503)
        if scripted is not None:
            status, answer = scripted
        else:
            try:
                status, answer = 200, handle(body)
            except RejectedBody as rejected:
                status, answer = rejected.code, {"code": rejected.code, "msg": rejected.msg}
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    body=body,
                    headers=dict(request.headers),
                    status_code=status,
                    answer=answer if isinstance(answer, dict) else {"raw": answer},
                )
            )
        return JSONResponse(answer, status_code=status)

    def _check_credentials(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RejectedBody(422, "body must be a JSON object")
        if (
            not _is_int(body.get("appid"))
            or body.get("appid") != self.appid
            or body.get("secret") != self.secret
        ):
            raise RejectedBody(420, "Invalid appid or secret")
        return body

    def _make_call(self, raw: Any) -> dict[str, Any]:
        body = self._check_credentials(raw)
        _require(body, "from", "", _positive, "an integer phone number")
        _require(body, "to", "", _positive, "an integer phone number")
        _require(body, "duration", "", _positive, "a positive integer")
        _optional(body, "extra_params", "", lambda v: isinstance(v, dict), "an object")
        if "pcmo" not in body:
            raise RejectedBody(422, "pcmo is missing")
        check_pcmo(body["pcmo"])
        request_id = str(uuid.uuid4())
        with self._lock:
            self.calls[request_id] = body
        return {
            "data": {"status": "progress", "request_id": request_id},
            "status": "progress",
            "request_id": request_id,
            "code": 200,
        }

    def _call_action(self, raw: Any) -> dict[str, Any]:
        body = self._check_credentials(raw)
        _require(body, "cmiuuid", "", _non_empty_str, "a call uuid")
        _require(body, "action", "", lambda v: v in CALL_ACTIONS, " or ".join(CALL_ACTIONS))
        return {"code": 200, "status": "success", "msg": f"{body['action']} done"}
