"""The OpenAI chat-completions wire shapes the fake LLM server answers in, byte for byte.

A streamed answer is SSE: `data: {chat.completion.chunk}` events (the first carrying the role, then one
token or one piece of tool-call arguments each), a chunk with the finish reason, optionally a usage
chunk, then `data: [DONE]`. A whole answer is one `chat.completion` object.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

FINGERPRINT = "fp_hotline"


@dataclass(frozen=True)
class Answer:
    """What the model says: text, and optionally one tool call with its JSON arguments."""

    text: str
    tool: str | None = None
    arguments: str = ""


def tokens(text: str) -> list[str]:
    """Word-sized pieces with their leading space, the way model tokens arrive."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


def _call_id(cid: str) -> str:
    return f"call_{cid.removeprefix('chatcmpl-')}"


def sse_events(cid: str, model: str, answer: Answer, *, usage: bool = False) -> list[bytes]:
    """The streamed answer, one SSE event per element."""
    created = int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        data = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [choice],
        }
        return f"data: {json.dumps(data)}\n\n".encode()

    deltas: list[dict[str, Any]] = [{"content": token} for token in tokens(answer.text)]
    if answer.tool:
        head = {"index": 0, "id": _call_id(cid), "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": answer.tool, "arguments": ""}}]})
        third = max(1, len(answer.arguments) // 3)
        for start in range(0, len(answer.arguments), third):
            piece = answer.arguments[start : start + third]
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    if not deltas:
        deltas.append({"content": ""})
    # OpenAI's first chunk carries the role (and content null when the answer is a tool call).
    no_text = {"content": None} if answer.tool and not answer.text else {}
    deltas[0] = {"role": "assistant", **no_text, **deltas[0]}
    events = [event(d) for d in deltas]
    events.append(event({}, "tool_calls" if answer.tool else "stop"))
    if usage:
        counts = {"prompt_tokens": 1, "completion_tokens": len(deltas), "total_tokens": 1 + len(deltas)}
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        events.append(f"data: {json.dumps({**data, 'choices': [], 'usage': counts})}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


def completion(cid: str, model: str, answer: Answer) -> dict[str, Any]:
    """The whole answer, for `stream: false`."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
    if answer.tool:
        function = {"name": answer.tool, "arguments": answer.arguments}
        message["tool_calls"] = [{"id": _call_id(cid), "type": "function", "function": function}]
    count = len(tokens(answer.text))
    finish = "tool_calls" if answer.tool else "stop"
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": count, "total_tokens": 1 + count},
    }
