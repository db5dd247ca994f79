"""One short, non-streamed question to the LLM (intent reading, interpretation): its answer, or why not."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion


@dataclass(frozen=True)
class Answer:
    """The model's text (stripped), how long it took, and the error when there is no answer."""

    text: str
    ms: int
    error: str | None = None
    """timeout, http_<status>, the SDK error's name; None when the model answered (maybe empty)."""


async def ask_once(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    timeout_s: float,
) -> Answer:
    """Ask at temperature 0 without streaming, within `timeout_s`; failures come back as `error`."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    def ms() -> int:
        return round((loop.time() - started) * 1000)

    try:
        async with asyncio.timeout(timeout_s):
            response = await client.chat.completions.create(
                model=model,
                messages=messages,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=max_tokens,
                stream=False,
            )
    except TimeoutError:
        return Answer("", ms(), "timeout")
    except openai.APIStatusError as exc:
        return Answer("", ms(), f"http_{exc.status_code}")
    except openai.APIError as exc:
        return Answer("", ms(), type(exc).__name__)
    choices = response.choices if isinstance(response, ChatCompletion) else []
    return Answer(((choices[0].message.content or "") if choices else "").strip(), ms())
