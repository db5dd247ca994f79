"""The action vocabulary of a bot's YAML (intent actions, rule `then`, transfer fallbacks) and the
webhooks its rules may notify. Shared by `agent.config.bot` and the code that carries actions out."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from agent.config.base import ENV_NAME, Strict

TAG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
ACTION_KINDS = ("say", "transfer", "tool", "notify", "tag", "hold_music", "hangup")
BUILTIN_TOOLS = frozenset({"transfer_to_department", "end_call", "play_hold_music"})


class ActionSpec(Strict):
    """One thing to do: exactly one of say / transfer / tool / notify / tag / hold_music / hangup."""

    say: str | None = None
    transfer: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = Field(
        default=None,
        description="Tool arguments; strings are templates: {digits} (digits the caller said or keyed), "
        "{caller_text}, {caller_number}, ...",
    )
    notify: str | None = Field(
        default=None, description="A webhook of the bot's `webhooks` to POST the call's state to."
    )
    tag: list[str] | None = Field(
        default=None, description="Labels added to the call record (e.g. angry, vip), one or a list."
    )
    hold_music: bool = False
    hangup: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `- hangup` and `- hold_music` read better in YAML than `- hangup: true`.
        if value in ("hangup", "hold_music"):
            return {value: True}
        return value

    @field_validator("tag", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        tags = [value] if isinstance(value, str) else value
        if isinstance(tags, list):
            for tag in tags:
                if not isinstance(tag, str) or not TAG.match(tag):
                    raise ValueError(
                        f"bad tag {tag!r}: lower-case letters, digits and _ . : - (up to 64 characters)"
                    )
            if not tags:
                raise ValueError("tag needs at least one label")
        return tags

    @model_validator(mode="after")
    def _exactly_one(self) -> ActionSpec:
        chosen = [k for k in ("say", "transfer", "tool", "notify", "tag") if getattr(self, k) is not None]
        chosen += [k for k in ("hold_music", "hangup") if getattr(self, k)]
        if len(chosen) != 1:
            raise ValueError(f"an action needs exactly one of: {', '.join(ACTION_KINDS)}")
        if self.args is not None and self.tool is None:
            raise ValueError("args only go with tool")
        return self

    @property
    def kind(self) -> str:
        """say | transfer | tool | notify | tag | hold_music | hangup."""
        for k in ("say", "transfer", "tool", "notify", "tag"):
            if getattr(self, k) is not None:
                return k
        return "hold_music" if self.hold_music else "hangup"


class Webhook(Strict):
    """Where a `notify` action POSTs: a supervisor's chat, a CRM, a ticketing system.

    The body is JSON (call, rule, signal values, tags, the last turns). With `secret_env` set, the body
    is signed: `X-Hotline-Signature: sha256=HMAC(secret, "<X-Hotline-Timestamp>.<body>")`.
    """

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Values may name env vars as {env.NAME}; secrets stay out of YAML."
    )
    secret_env: str | None = Field(
        default=None, pattern=ENV_NAME, description="Env var holding the signing secret."
    )
    timeout_s: float = Field(default=5.0, gt=0, le=30)
    retries: int = Field(default=2, ge=0, le=5, description="Retries on errors, 5xx and 429.")
