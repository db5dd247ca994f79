"""An OpenAI-compatible chat server for tests and benchmarks, scripted by rules, served over real HTTP.

    with FakeLlmServer() as llm:
        llm.on(r"order (\\d+)", tool="order_status", args={"order_id": r"\\1"})
        llm.after_tool("order_status", reply="{tool_result}")
        client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="unused")
        ...
        assert llm.requests[0]["messages"][0]["role"] == "system"

A rule matches the last user message by regex, or a last `tool` message by the tool's name; the
first matching rule answers, the default reply otherwise. Answers stream in the exact
chat.completion.chunk shape (tool-call arguments split over several chunks) or come whole when
`stream` is false. Timing and faults (500, 429, hang, cut, hang after N tokens, garbage) can be changed while
the server runs, from any thread.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from testkit.openai_wire import Answer, completion, sse_events, tokens
from testkit.servers import AsgiApp, Receive, Scope, Send, ServedApp

Fault = Literal["500", "429", "hang", "cut", "hang_after", "garbage"]
_POLL_S = 0.02
GARBAGE = (
    b'data: <html><body>502 Bad Gateway</body></html>\n\ndata: {"id": "chatcmpl-1", "choices": [{"de\n\n'
)


@dataclass(frozen=True)
class Rule:
    """One scripted answer: text (may use {tool_result} and regex groups), a tool call, or both."""

    pattern: re.Pattern[str] | None = None
    after_tool: str | None = None
    reply: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None


@dataclass
class _FaultPlan:
    kind: Fault
    times: int | None  # None: every request until cleared
    after_tokens: int


class _Cut(Exception):
    """Raised mid-body to drop the connection without ending the chunked body."""


class _Tracked:
    """Counts the HTTP requests in progress, and swallows _Cut: an app that returns mid-body makes
    uvicorn close the connection as it is, with one log line instead of a traceback."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.open = 0  # only touched on the server's loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        counted = scope.get("type") == "http"
        self.open += counted
        try:
            await self.app(scope, receive, send)
        except _Cut:
            pass
        finally:
            self.open -= counted


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _expand(value: Any, match: re.Match[str] | None) -> Any:
    if match is None:
        return value
    if isinstance(value, str):
        return match.expand(value)
    if isinstance(value, dict):
        return {k: _expand(v, match) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, match) for v in value]
    return value


class FakeLlmServer(ServedApp):
    """POST /v1/chat/completions and GET /v1/models, answering from rules; records every request body."""

    def __init__(
        self,
        *,
        model: str = "hotline-test-llm",
        default_reply: str = "Sorry, I can't help with that.",
        ttft_s: float = 0.0,
        token_delay_s: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host=host)
        self.model = model
        self.default_reply = default_reply
        self._ttft_s = ttft_s
        self._token_delay_s = token_delay_s
        self._rules: list[Rule] = []
        self._fault: _FaultPlan | None = None
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._tracked = _Tracked(self._build_app())
        self.app = self._tracked

    @property
    def base_url(self) -> str:
        """The OpenAI base URL: http://127.0.0.1:PORT/v1."""
        return super().base_url + "/v1"

    # ------------------------------------------------------------------------------ scripting

    def on(
        self,
        pattern: str,
        *,
        reply: str | None = None,
        tool: str | None = None,
        args: dict[str, Any] | None = None,
    ) -> FakeLlmServer:
        """Answer a last user message matching `pattern` (case-insensitive search).

        `reply` and string values in `args` may use the match's groups (\\1, \\g<name>).
        """
        return self._add(Rule(re.compile(pattern, re.IGNORECASE), None, reply, tool, args))

    def after_tool(
        self,
        name: str,
        *,
        reply: str | None = None,
        tool: str | None = None,
        args: dict[str, Any] | None = None,
    ) -> FakeLlmServer:
        """Answer when the last message is the result of tool `name`; {tool_result} is its content."""
        return self._add(Rule(None, name, reply, tool, args))

    def _add(self, rule: Rule) -> FakeLlmServer:
        if rule.reply is None and rule.tool is None:
            raise ValueError("a rule needs a reply, a tool, or both")
        with self._lock:
            self._rules.append(rule)
        return self

    def set_timing(self, *, ttft_s: float | None = None, token_delay_s: float | None = None) -> None:
        """Time to the first token, and between tokens, for the next answers."""
        with self._lock:
            if ttft_s is not None:
                self._ttft_s = ttft_s
            if token_delay_s is not None:
                self._token_delay_s = token_delay_s

    def fail(self, fault: Fault, *, times: int | None = None, after_tokens: int = 2) -> None:
        """Make the next `times` requests (all, if None) fail: "500" and "429" answer that status,
        "hang" accepts and never answers, "cut" drops the connection after `after_tokens` tokens,
        "hang_after" stops sending (and never ends) after `after_tokens` tokens, "garbage" answers 200
        with an event stream that is not JSON (a proxy's error page, a truncated chunk)."""
        with self._lock:
            self._fault = _FaultPlan(fault, times, after_tokens)

    def hang_after(self, tokens: int, *, times: int | None = None) -> None:
        """Send `tokens` tokens, then nothing more, never closing the stream."""
        self.fail("hang_after", times=times, after_tokens=tokens)

    def clear_faults(self) -> None:
        """Answer normally again."""
        with self._lock:
            self._fault = None

    def reset(self) -> None:
        """Forget rules, faults, timing and recorded requests."""
        with self._lock:
            self._rules.clear()
            self._fault = None
            self._requests.clear()
            self._headers.clear()
            self._ttft_s = self._token_delay_s = 0.0

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The request bodies received so far (faulted ones too), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def open_requests(self) -> int:
        """Requests still being answered: 0 once every client closed its stream (or it ended)."""
        return self._tracked.open

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of those requests, lower-cased names."""
        with self._lock:
            return list(self._headers)

    # ------------------------------------------------------------------------------ answering

    def answer_for(self, messages: list[dict[str, Any]]) -> Answer:
        """What the rules say to these messages."""
        last = messages[-1] if messages else {}
        tool_name, tool_result = None, ""
        if last.get("role") == "tool":
            tool_result = _text_of(last.get("content"))
            tool_name = self._tool_name(messages, str(last.get("tool_call_id", "")))
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            match: re.Match[str] | None = None
            if rule.after_tool is not None:
                if tool_name != rule.after_tool:
                    continue
            elif rule.pattern is not None:
                if last.get("role") != "user":
                    continue
                match = rule.pattern.search(_text_of(last.get("content")))
                if match is None:
                    continue
            text = _expand(rule.reply, match) if rule.reply else ""
            text = text.replace("{tool_result}", tool_result)
            args = json.dumps(_expand(rule.args or {}, match)) if rule.tool else ""
            return Answer(text, rule.tool, args)
        return Answer(self.default_reply, None, "")

    @staticmethod
    def _tool_name(messages: list[dict[str, Any]], call_id: str) -> str | None:
        for message in reversed(messages):
            for call in message.get("tool_calls") or []:
                if call.get("id") == call_id:
                    name = call.get("function", {}).get("name")
                    return str(name) if name else None
        return None

    def _take_fault(self) -> _FaultPlan | None:
        with self._lock:
            plan = self._fault
            if plan is None:
                return None
            if plan.times is not None:
                plan.times -= 1
                if plan.times <= 0:
                    self._fault = None
            return _FaultPlan(plan.kind, 1, plan.after_tokens)

    async def _wait_until_gone(self, request: Request | None = None) -> None:
        """Until the client hangs up or the server stops."""
        while not self.stopping.is_set():
            if request is not None and await request.is_disconnected():
                return
            await asyncio.sleep(_POLL_S)

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake OpenAI-compatible LLM")

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "hotline-tests"}],
            }

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            with self._lock:
                self._requests.append(body)
                self._headers.append(dict(request.headers))
                ttft, delay = self._ttft_s, self._token_delay_s
            fault = self._take_fault()
            if fault is not None and fault.kind in ("500", "429"):
                kind = "server_error" if fault.kind == "500" else "rate_limit_error"
                error = {"message": f"scripted {fault.kind}", "type": kind, "param": None, "code": None}
                return JSONResponse({"error": error}, status_code=int(fault.kind))
            if fault is not None and fault.kind == "hang":
                await self._wait_until_gone(request)
                return Response(status_code=503)
            if fault is not None and fault.kind == "garbage":
                return Response(GARBAGE, media_type="text/event-stream")
            answer = self.answer_for(list(body.get("messages") or []))
            model = str(body.get("model") or self.model)
            cid = f"chatcmpl-{next(self._ids)}"
            if body.get("stream"):
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                chunks = sse_events(cid, model, answer, usage=usage)
                return StreamingResponse(
                    self._paced(chunks, ttft, delay, fault, request), media_type="text/event-stream"
                )
            await asyncio.sleep(ttft + delay * max(0, len(tokens(answer.text)) - 1))
            whole = json.dumps(completion(cid, model, answer)).encode()
            return StreamingResponse(
                self._paced([whole], 0.0, 0.0, fault, request), media_type="application/json"
            )

        return app

    async def _paced(
        self, chunks: list[bytes], ttft: float, delay: float, fault: _FaultPlan | None, request: Request
    ) -> AsyncIterator[bytes]:
        """Send chunks with the configured timing; faults stop it after `after_tokens` tokens."""
        await asyncio.sleep(ttft)
        for n, chunk in enumerate(chunks):
            if fault is not None and n >= fault.after_tokens:
                if fault.kind == "cut":
                    raise _Cut("scripted cut")
                if fault.kind == "hang_after":
                    await self._wait_until_gone(request)
                    return
            if n:
                await asyncio.sleep(delay)
            yield chunk
        if fault is not None and fault.kind == "cut":  # fewer chunks than after_tokens: cut at the end
            raise _Cut("scripted cut")
