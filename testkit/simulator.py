"""A PIOPIY simulator: places calls against any server speaking the PIOPIY protocol, as the platform would.

    sim = PiopiySimulator("http://127.0.0.1:8000", webhook_secret="s3cret")
    async with await sim.place_call(to_number="918012345678") as call:
        await call.wait_for_bot_audio()          # the greeting starts
        await call.say_wav("tests/calls/hello.wav")
        await call.wait_until_bot_silent()
        call.write_recording("var/call.wav")

A call posts answer_url, opens the PCMO's `ws_url`, streams the caller side as 20 ms binary L16 frames
(line silence between utterances), plays the bot's `streamAudio` chunks on a simulated line that `break`
cuts, and posts live events and a CDR. `speed` scales the line clock: 1.0 is real time; `math.inf` sends
the caller's audio and plays the bot's as fast as possible, while idle line time passes in real time
(the server still thinks in real time). Faster than real time, the line stays at most `max_lead_s`
(1.5 s) ahead of the wall clock since the stream opened: Hotline reads a stream no further ahead than
`security.max_audio_lead_s` (2 s), so a line further ahead would only queue in the socket (None: no
limit, a flooding caller). The socket and audio side lives in `simulated_line.py`.
"""

from __future__ import annotations

import functools
import json
import ssl
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from agent.telephony.piopiy.codec import (
    SUPPORTED_STREAM_RATES,
    Pcmo,
    PiopiyFormatError,
)
from agent.telephony.piopiy.webhooks import (
    AnswerRequest,
    CallEvent,
    CdrRecord,
    DtmfCallback,
    parse_body,
)
from testkit.line_audio import CallEnded, SimulatorError, SimulatorTimeout
from testkit.simulated_line import Control, FrameError, SimulatedLine

__all__ = [
    "CallEnded",
    "Control",
    "FrameError",
    "PiopiySimulator",
    "SimulatedCall",
    "SimulatorError",
    "SimulatorTimeout",
    "WebhookPost",
]


@dataclass(frozen=True)
class WebhookPost:
    """One POST the simulator made; `status` is None when the request itself failed."""

    url: str
    body: dict[str, Any]
    status: int | None
    text: str


class PiopiySimulator:
    """Plays the PIOPIY platform against the server at `base_url` (answer, events and CDR URLs under it)."""

    answer_path = "/piopiy/answer"
    events_path = "/piopiy/events"
    cdr_path = "/piopiy/cdr"

    def __init__(
        self,
        base_url: str,
        *,
        webhook_secret: str | None = None,
        speed: float = 1.0,
        frame_ms: int = 20,
        post_events: bool = True,
        line_noise_dbfs: float | None = None,
        rewrite_ws_host: bool = False,
        appid: int = 2222222,
        http_timeout: float = 10.0,
        max_lead_s: float | None = 1.5,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0 (math.inf = as fast as possible), got {speed}")
        if not isinstance(frame_ms, int) or frame_ms <= 0:
            raise ValueError(f"frame_ms must be a positive whole number of milliseconds, got {frame_ms!r}")
        self.base_url = base_url.rstrip("/")
        self.webhook_secret = webhook_secret
        self.speed = speed
        self.frame_ms = frame_ms
        self.post_events = post_events  # events and CDRs; answer_url is always posted
        self.line_noise_dbfs = line_noise_dbfs
        self.rewrite_ws_host = rewrite_ws_host  # connect to base_url's host whatever host ws_url names
        self.appid = appid
        self.http_timeout = http_timeout
        self.max_lead_s = max_lead_s

    def url(self, path: str) -> str:
        """An absolute URL on the server: absolute URLs pass through, paths are joined to base_url."""
        return path if "://" in path else self.base_url + "/" + path.lstrip("/")

    def _client(self) -> httpx.AsyncClient:
        headers = {"X-Hotline-Secret": self.webhook_secret} if self.webhook_secret else {}
        return httpx.AsyncClient(timeout=self.http_timeout, headers=headers, verify=_tls_context())

    async def answer(
        self, *, from_number: int | str = "919876543210", to_number: int | str, cmiuuid: str | None = None
    ) -> Pcmo:
        """Only POST answer_url and return the PCMO (any actions): for tests of fallback PCMOs."""
        async with self._client() as client:
            return await self._answer(client, from_number, to_number, cmiuuid or str(uuid.uuid4()))

    async def _answer(
        self, client: httpx.AsyncClient, from_number: int | str, to_number: int | str, cmiuuid: str
    ) -> Pcmo:
        body = {
            "from": from_number,
            "to": to_number,
            "time": int(time.time() * 1000),
            "cmiuuid": cmiuuid,
            "action": "inbound",
        }
        parse_body(AnswerRequest, body)  # a body PIOPIY could send, sent as it would send it (raw numbers)
        url = self.url(self.answer_path)
        try:
            response = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise SimulatorError(f"answer_url {url} failed: {exc!r}") from None
        if response.status_code != 200:
            raise SimulatorError(
                f"answer_url {url} returned HTTP {response.status_code}: {response.text[:500]}"
            )
        try:
            pcmo = response.json()
        except ValueError:
            raise SimulatorError(f"answer_url {url} returned non-JSON: {response.text[:500]!r}") from None
        if not isinstance(pcmo, list) or not all(isinstance(a, dict) for a in pcmo):
            raise SimulatorError(f"answer_url {url} returned {pcmo!r}, not a PCMO (a JSON array of actions)")
        return pcmo

    async def place_call(
        self, *, from_number: int | str = "919876543210", to_number: int | str, cmiuuid: str | None = None
    ) -> SimulatedCall:
        """Ring the server: answer_url, then the PCMO's stream socket; returns the live call."""
        client = self._client()
        call: SimulatedCall | None = None
        try:
            cmiuuid = cmiuuid or str(uuid.uuid4())
            started = time.time()
            pcmo = await self._answer(client, from_number, to_number, cmiuuid)
            stream = next((a for a in pcmo if a.get("action") == "stream"), None)
            if stream is None:
                raise SimulatorError(f"the PCMO has no stream action, nothing to connect: {pcmo!r}")
            call = SimulatedCall(
                self, client, pcmo, stream, from_number=from_number, to_number=to_number, cmiuuid=cmiuuid
            )
            call.start_time = started
            await call._connect()
        except BaseException:
            if call is not None:
                await call._close_stream("caller")  # connected, then interrupted: don't leave it running
            await client.aclose()
            raise
        return call


class SimulatedCall(SimulatedLine):
    """One call placed by the simulator: the line plus the platform's webhooks. `async with` hangs up."""

    def __init__(
        self,
        sim: PiopiySimulator,
        client: httpx.AsyncClient,
        pcmo: Pcmo,
        stream: dict[str, Any],
        *,
        from_number: int | str,
        to_number: int | str,
        cmiuuid: str,
    ) -> None:
        super().__init__(
            _stream_rate(stream.get("voice_quality", 8000)),
            speed=sim.speed,
            frame_ms=sim.frame_ms,
            line_noise_dbfs=sim.line_noise_dbfs,
            seed=uuid.uuid5(uuid.NAMESPACE_URL, cmiuuid).int % 2**32,
            max_lead_s=sim.max_lead_s,
        )
        self.sim = sim
        self.pcmo = pcmo
        self.ws_url = _stream_url(stream.get("ws_url"), sim.base_url if sim.rewrite_ws_host else None)
        self.cmiuuid = cmiuuid
        self.conversation_uuid = str(uuid.uuid4())
        self.from_number, self.to_number = from_number, to_number
        params = [a["text"] for a in pcmo if a.get("action") == "param" and isinstance(a.get("text"), str)]
        self.extra_params: str | None = params[0] if params else None  # echoed like the platform does
        self.start_time = self.answer_time = time.time()  # epoch s
        self.end_time: float | None = None
        self.posts: list[WebhookPost] = []  # events, CDR and DTMF callbacks, in order
        self._client = client
        self._hung_up = False

    async def _connect(self) -> None:
        self.answer_time = time.time()
        await self.event("in_answered")
        try:
            ws = await connect(
                self.ws_url, max_size=None, open_timeout=self.sim.http_timeout, close_timeout=2
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace")[:500] if exc.response.body else ""
            raise SimulatorError(
                f"the server refused the stream socket {self.ws_url}: HTTP {exc.response.status_code} {body}"
            ) from None
        except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
            raise SimulatorError(f"cannot open the stream socket {self.ws_url}: {exc!r}") from None
        self._attach(ws)
        await self.event("stream_connected", ws_status=json.dumps({"status": "connected"}))

    async def _on_stream_closed(self) -> None:
        status = {"status": "disconnected", "message": {"code": self.close_code, "reason": self.close_reason}}
        await self.event("STREAM_DISCONNECTED", ws_status=json.dumps(status))

    async def __aenter__(self) -> SimulatedCall:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.hangup()

    async def hangup(self) -> None:
        """The caller hangs up: close the socket (1000), POST the hangup event and the CDR. Idempotent."""
        if self._hung_up:
            return
        self._hung_up = True
        try:
            await self._close_stream("caller")
            self.end_time = time.time()
            await self.event("hangup")
            if self.sim.post_events:
                await self._post(self.sim.url(self.sim.cdr_path), self._cdr())
        finally:
            await self._client.aclose()

    async def dtmf(self, digits: str, action_url: str) -> httpx.Response:
        """Key in `digits` like an `input` action: POST them to `action_url` (absolute, or a path)."""
        if self._hung_up:
            raise CallEnded("the call is hung up")
        body = {"from": self.from_number, "to": self.to_number, "dtmf": digits, "cmiuuid": self.cmiuuid}
        try:
            payload = parse_body(DtmfCallback, body).model_dump(by_alias=True, exclude_none=True)
        except PiopiyFormatError as exc:
            raise SimulatorError(f"dtmf {digits!r}: {exc}") from None
        url = self.sim.url(action_url)
        try:
            response = await self._client.post(url, json=payload)
        except httpx.HTTPError as exc:
            raise SimulatorError(f"DTMF callback {url} failed: {exc!r}") from None
        self.posts.append(WebhookPost(url, payload, response.status_code, response.text[:2000]))
        return response

    async def event(self, status: str, **fields: Any) -> WebhookPost | None:
        """POST a live event to the Event URL like the platform; `fields` extend the body."""
        if not self.sim.post_events:
            return None
        body: dict[str, Any] = {**self._common(), "status": status, **fields}
        payload = parse_body(CallEvent, body).model_dump(by_alias=True, exclude_none=True)
        return await self._post(self.sim.url(self.sim.events_path), payload)

    def _common(self) -> dict[str, Any]:
        return {
            "appid": self.sim.appid,
            "cmiuuid": self.cmiuuid,
            "conversation_uuid": self.conversation_uuid,
            "direction": "inbound",
            "from": self.from_number,
            "to": self.to_number,
            "leg": "a",
            "time": int(time.time() * 1000),
            "extra_params": self.extra_params,
        }

    def _cdr(self) -> dict[str, Any]:
        end = self.end_time or time.time()
        duration = round(end - self.answer_time)
        body = {
            **self._common(),
            "type": "cdr",
            "status": "answered",
            "start_time": int(self.start_time),
            "answer_time": int(self.answer_time),
            "end_time": int(end),
            "duration": duration,
            "call_rate": "0.00",
            "balance": "0.00",
        }
        payload = parse_body(CdrRecord, body).model_dump(by_alias=True, exclude_none=True)
        payload["duration"] = duration  # the model reads a float; the platform sends whole seconds
        return payload

    async def _post(self, url: str, body: dict[str, Any]) -> WebhookPost:
        try:
            response = await self._client.post(url, json=body)
            post = WebhookPost(url, body, response.status_code, response.text[:2000])
        except httpx.HTTPError as exc:
            post = WebhookPost(url, body, None, repr(exc))
        self.posts.append(post)
        return post


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA store) costs ~40 ms per client."""
    return ssl.create_default_context()


def _stream_url(ws_url: Any, rewrite_to: str | None) -> str:
    """The PCMO's ws_url, optionally moved to `rewrite_to`'s host (a server behind a public URL)."""
    if not isinstance(ws_url, str) or urlsplit(ws_url).scheme not in ("ws", "wss"):
        raise SimulatorError(f"stream.ws_url {ws_url!r} must start with ws:// or wss://")
    if rewrite_to is None:
        return ws_url
    base, url = urlsplit(rewrite_to), urlsplit(ws_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    return urlunsplit((scheme, base.netloc, url.path, url.query, ""))


def _stream_rate(voice_quality: Any) -> int:
    """voice_quality comes as a string ("8000") or an int: the call's sample rate."""
    try:
        rate = int(str(voice_quality).strip())
    except ValueError:
        rate = 0
    if rate not in SUPPORTED_STREAM_RATES:
        raise SimulatorError(f"stream.voice_quality {voice_quality!r} is not one of {SUPPORTED_STREAM_RATES}")
    return rate
