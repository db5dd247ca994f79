"""The LLM dialogue: any OpenAI-compatible endpoint, streamed, with tools, bounded in time.

One reply is a few model calls ("rounds"): text streams out as it arrives; tool calls are assembled
from their chunks, built-in ones become call actions, HTTP ones run and their results go back to the
model for the next round. Retries are ours, bounded, and only before a request's first token (after
it the caller has heard the start of the reply). Every failure is a `DialogueFailure` with a short
reason; cancelling the reply (barge-in) closes the HTTP stream at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from agent.config.service import LlmConfig
from agent.dialogue.base import (
    CallContext,
    DialogueAction,
    DialogueFailure,
    ReplyItem,
    TextDelta,
    Understanding,
)
from agent.dialogue.llm_context import ChatContext, Message, system_prompt
from agent.dialogue.scripted import IntentMatcher, ToolRunner
from agent.dialogue.tools import ToolBox, ToolError

log = logging.getLogger(__name__)

NO_KEY = "not-needed"  # local servers take any key; the SDK insists on one


def make_client(settings: LlmConfig, env: Mapping[str, str] = os.environ) -> openai.AsyncOpenAI:
    """An SDK client for the configured endpoint, with the SDK's own retries off (ours are bounded)."""
    if settings.base_url is None:
        raise ValueError("no LLM endpoint configured (llm.base_url)")
    return openai.AsyncOpenAI(
        base_url=settings.base_url,
        api_key=env.get(settings.api_key_env) or NO_KEY,
        max_retries=0,
        timeout=settings.timeout_s,  # a backstop: the reply's own deadlines are enforced here
    )


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Round:
    """One model call as it streams in: its text, its tool calls by index, and how it finished."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None

    def take(self, chunk: ChatCompletionChunk) -> str:
        """Fold one chunk in; returns its text (maybe empty)."""
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        for part in choice.delta.tool_calls or []:
            call = self.calls.setdefault(part.index, _ToolCall())
            call.id = part.id or call.id
            if part.function is not None:
                call.name += part.function.name or ""
                call.arguments += part.function.arguments or ""
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        text = choice.delta.content or ""
        if text:
            self.text.append(text)
        return text

    def message(self) -> Message | None:
        """The assistant message for the context; tool calls only if the round completed."""
        content = "".join(self.text) or None
        calls = self.finished_calls()
        if content is None and not calls:
            return None
        message: Message = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ]
        return message

    def finished_calls(self) -> list[_ToolCall]:
        """The tool calls, once the round completed; calls some servers send without an id get one."""
        if self.finish_reason is None:
            return []
        calls = [self.calls[i] for i in sorted(self.calls)]
        for call in calls:
            call.id = call.id or f"call_{uuid.uuid4().hex[:12]}"
        return calls


def _has_output(chunk: ChatCompletionChunk) -> bool:
    if not chunk.choices:
        return False
    choice = chunk.choices[0]
    return bool(choice.delta.content or choice.delta.tool_calls or choice.finish_reason)


class _Budget:
    """Seconds of model waiting left for one reply (time spent by the consumer or tools is not counted)."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds


class LLMDialogue:
    """The Dialogue of a call answered by an LLM; its tools are the bot's ToolBox.

    `run_tool` runs HTTP tools (default: the toolbox's `run`); the session may pass its own to play a
    filler while the tool runs. `tool_failures` counts tool calls that failed or were refused.
    """

    def __init__(
        self,
        ctx: CallContext,
        settings: LlmConfig,
        *,
        client: openai.AsyncOpenAI | None = None,
        toolbox: ToolBox | None = None,
        run_tool: ToolRunner | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self._own_client = client is None
        self.client = client if client is not None else make_client(settings, env)
        self._own_toolbox = toolbox is None
        self.toolbox = toolbox if toolbox is not None else ToolBox(ctx.bot, env=env)
        self.run_tool: ToolRunner = run_tool if run_tool is not None else self.toolbox.run
        self.matcher = IntentMatcher(ctx.bot.intents)
        self.understanding = Understanding()
        self.context = ChatContext(system_prompt(ctx), budget_tokens=settings.context_tokens)
        self.context.add({"role": "assistant", "content": ctx.bot.greeting})
        self.tool_failures = 0
        self._specs = self.toolbox.specs()

    async def aclose(self) -> None:
        """Release the client and toolbox if this dialogue made them."""
        if self._own_client:
            await self.client.close()
        if self._own_toolbox:
            await self.toolbox.aclose()

    def heard(self, said: str, heard: str) -> None:
        """The caller cut the reply off: the context keeps only what they heard, marked as interrupted."""
        self.context.heard(said, heard)

    def retract(self) -> None:
        """The caller had not finished: the turn comes again whole, so forget this part and its reply."""
        self.context.retract()

    async def reply(self, caller_text: str) -> AsyncIterator[ReplyItem]:
        """Stream the reply: text as it arrives, tool and call actions as the model asks for them."""
        found = self.matcher.match(caller_text)  # intent signals for escalation rules
        self.understanding = (
            Understanding(intent=found.intent.name, confidence=found.score) if found else Understanding()
        )
        self.context.add_caller(caller_text)
        self.context.system = system_prompt(self.ctx)  # the caller's language may be known by now
        budget = _Budget(self.settings.timeout_s)
        rounds = self.settings.max_tool_rounds
        for n in range(rounds + 1):
            last = n == rounds
            step = _Round()
            try:
                async for text in self._stream(step, budget, tools_allowed=not last):
                    yield TextDelta(text)
            finally:
                # Also when cut off: the context holds what was said so far (heard() trims it further).
                if (message := step.message()) is not None:
                    self.context.add(message)
            calls = step.finished_calls()
            if not calls:
                return
            if last:  # tools were not allowed this round: answer the calls, but run none
                for call in calls:
                    self.context.add(
                        {"role": "tool", "tool_call_id": call.id, "content": "Not done: too many tools."}
                    )
                if step.text:
                    return
                raise DialogueFailure("tool_rounds", f"still calling tools after {rounds} rounds")
            actions: list[DialogueAction] = []
            async for item in self._run_calls(calls, actions):
                yield item
            if actions:
                if not step.text and (line := self._line_for(actions[0])):
                    self.context.add({"role": "assistant", "content": line})
                    yield TextDelta(line)
                for action in actions:
                    yield action
                return

    # ------------------------------------------------------------------------------ tools

    async def _run_calls(
        self, calls: list[_ToolCall], actions: list[DialogueAction]
    ) -> AsyncIterator[ReplyItem]:
        """Answer every tool call of a round with a tool message; collect the call actions."""
        answered: set[str] = set()

        def answer(call: _ToolCall, content: str) -> None:
            self.context.add({"role": "tool", "tool_call_id": call.id, "content": content})
            answered.add(call.id)

        try:
            for call in calls:
                try:
                    args = json.loads(call.arguments or "{}")
                    if not isinstance(args, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self.tool_failures += 1
                    answer(call, f"Failed: the arguments for {call.name} were not a JSON object.")
                    continue
                if self.toolbox.is_action(call.name):
                    try:
                        action = self.toolbox.action_for(call.name, args, {"by": "llm"})
                    except ToolError as exc:
                        self.tool_failures += 1
                        answer(call, f"Refused: {exc.message}.")
                        continue
                    actions.append(action)
                    answer(call, _done(action))
                elif self.toolbox.is_http(call.name):
                    yield DialogueAction(kind="tool", tool=call.name, args=args, reason={"by": "llm"})
                    try:
                        result = await self.run_tool(call.name, args)
                    except ToolError as exc:
                        self.tool_failures += 1
                        log.warning("call %s: tool %s failed (%s)", self.ctx.call_id, call.name, exc.kind)
                        answer(
                            call, f"Failed: {exc.message}. Tell the caller briefly; do not guess a result."
                        )
                        continue
                    phrased = result.get("result")
                    answer(call, phrased if isinstance(phrased, str) else json.dumps(result))
                else:
                    self.tool_failures += 1
                    answer(call, f"Failed: there is no tool named {call.name!r}.")
        finally:
            # A cut-off reply still answers every call: the API refuses a tool call left unanswered.
            for call in calls:
                if call.id not in answered:
                    answer(call, "Not done: the caller interrupted.")

    def _line_for(self, action: DialogueAction) -> str | None:
        phrases = self.ctx.bot.phrases_in(self.ctx.reply_language)
        return {"transfer": phrases.handoff, "hangup": phrases.goodbye, "hold_music": phrases.hold}.get(
            action.kind
        )

    # ------------------------------------------------------------------------------ one model call

    def _request(self, tools_allowed: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.settings.model,
            "messages": self.context.messages(),
            "stream": True,
        }
        specs = self._specs
        if specs:
            request["tools"] = specs
            request["tool_choice"] = "auto" if tools_allowed else "none"
        return request

    async def _stream(self, step: _Round, budget: _Budget, *, tools_allowed: bool) -> AsyncIterator[str]:
        """One model call: text as it arrives; `step` collects the rest."""
        stream, chunks, early = await self._start(self._request(tools_allowed), budget)
        try:
            for chunk in early:
                if text := step.take(chunk):
                    yield text
            while True:
                started = time.monotonic()
                try:
                    async with asyncio.timeout(max(budget.left, 0.0)):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise DialogueFailure(
                        "timeout", f"reply not done in {self.settings.timeout_s:g} s"
                    ) from None
                except Exception as exc:  # the SDK's and the transport's errors alike: the stream broke
                    if step.finish_reason is not None:
                        break  # only the end marker is missing: the reply itself is whole
                    raise DialogueFailure("stream_broken", type(exc).__name__) from exc
                finally:
                    budget.left -= time.monotonic() - started
                if text := step.take(chunk):
                    yield text
            if step.finish_reason is None:
                raise DialogueFailure("stream_broken", "the stream ended before the reply did")
        finally:
            await stream.close()

    async def _start(
        self, request: dict[str, Any], budget: _Budget
    ) -> tuple[
        openai.AsyncStream[ChatCompletionChunk], AsyncIterator[ChatCompletionChunk], list[ChatCompletionChunk]
    ]:
        """Send the request and read up to its first token, retrying fast failures within the deadline."""
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self.settings.first_token_timeout_s
        attempts = self.settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            stream: openai.AsyncStream[ChatCompletionChunk] | None = None
            started = time.monotonic()
            deadline = min(first_deadline, loop.time() + max(budget.left, 0.0))
            try:
                async with asyncio.timeout_at(deadline):
                    stream = await self.client.chat.completions.create(**request)
                    chunks = stream.__aiter__()
                    early: list[ChatCompletionChunk] = []
                    while not (early and _has_output(early[-1])):
                        early.append(await anext(chunks))
                result = stream, chunks, early
                stream = None  # handed over: the caller closes it
                return result
            except TimeoutError:
                if deadline < first_deadline:
                    raise DialogueFailure(
                        "timeout", f"reply not done in {self.settings.timeout_s:g} s"
                    ) from None
                raise DialogueFailure(
                    "first_token_timeout", f"no first token in {self.settings.first_token_timeout_s:g} s"
                ) from None
            except openai.APIStatusError as exc:
                failure = DialogueFailure(f"http_{exc.status_code}", exc.message)
                failure.__cause__ = exc
                retry = exc.status_code >= 500 or exc.status_code == 429
            except openai.APIConnectionError as exc:
                failure = DialogueFailure("unreachable", type(exc).__name__)
                failure.__cause__ = exc
                retry = True
            except Exception as exc:  # cut before the first token, or a chunk that does not parse
                failure = DialogueFailure("stream_broken", type(exc).__name__)
                failure.__cause__ = exc
                retry = True
            finally:
                budget.left -= time.monotonic() - started
                if stream is not None:
                    await stream.close()
            log.warning("call %s: LLM attempt %d/%d failed: %s", self.ctx.call_id, attempt, attempts, failure)
            if not retry or attempt == attempts:
                raise failure
        raise AssertionError("unreachable: the last attempt raises")


def _done(action: DialogueAction) -> str:
    if action.kind == "transfer":
        return f"Done: the caller is being transferred to {action.department}."
    if action.kind == "hangup":
        return "Done: the call ends after your goodbye."
    return "Done: hold music is playing."
