"""Call scenarios: what a caller says and does on a call, and what should happen, in one YAML file.

```yaml
description: A caller grows angry over three turns and goes to the senior desk at the third.
bot: support_desk            # or `to: "+91 80 4000 1000"`: the number dialled
speed: max                   # caller audio pacing: 1 (real time), 2, or max (timing not under test)
caller:
  - say: What are your opening hours?          # the test caller voice (piper, shifted), from text
  - asterisk: en/vm-goodbye                     # real human speech (Debian asterisk-core-sounds-*)
  - espeak: Hola, quiero hablar con alguien.    # espeak-ng, with `language: es`
    language: es
  - audio: clips/turn1.wav                      # a WAV file next to this one (any rate)
  - dtmf: "12345"
  - silence: 9                                  # seconds of quiet line
  - noise: 2                                    # seconds of line noise (noise_dbfs, default -40)
  - event: out_answered                         # a PIOPIY event (leg b by default): the agent answered
  - hangup                                      # the caller hangs up
expect: {...}                                   # see testkit/expect.py
```

Each speech, keypad, event and hangup step first waits for the bot like a polite caller (`wait: bot`:
for its answer to start, up to `answer_timeout_s`, then for it to finish), or goes at once (`wait:
none`); speech can instead cut the bot's next line `barge_in_ms` after it starts. `gain_db` makes the
caller quieter (mumbling) or louder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agent.config.base import Strict
from agent.config.yamlfile import load_yaml
from testkit.expect import Expectations

SPEECH = ("say", "espeak", "asterisk", "audio")
OTHER = ("silence", "noise", "dtmf", "event", "hangup")


class Step(Strict):
    """One thing the caller does: exactly one of say / espeak / asterisk / audio / silence / noise /
    dtmf / event / hangup."""

    say: str | None = None
    espeak: str | None = None
    language: str = Field(default="en", description="espeak-ng voice for `espeak` lines.")
    asterisk: str | None = Field(default=None, description='A prompt name: "en/vm-goodbye", "es/…".')
    audio: str | None = Field(default=None, description="A WAV file, relative to the scenario file.")
    silence: float | None = Field(default=None, gt=0, le=120)
    noise: float | None = Field(default=None, gt=0, le=120)
    noise_dbfs: float = Field(default=-40.0, ge=-80, le=-6)
    dtmf: str | None = Field(default=None, pattern=r"^[0-9*#]{1,32}$")
    event: str | None = None
    leg: Literal["a", "b"] = "b"
    hangup: bool = False
    wait: Literal["bot", "none"] = "bot"
    barge_in_ms: int | None = Field(default=None, ge=0, le=30000)
    gain_db: float = Field(default=0.0, ge=-40, le=20)
    answer_timeout_s: float = Field(default=6.0, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"hangup": True} if value == "hangup" else value

    @model_validator(mode="after")
    def _one(self) -> Step:
        chosen = [k for k in (*SPEECH, *OTHER) if getattr(self, k) not in (None, False)]
        if len(chosen) != 1:
            raise ValueError(f"a step needs exactly one of: {', '.join((*SPEECH, *OTHER))}")
        if self.barge_in_ms is not None and self.kind not in SPEECH:
            raise ValueError("barge_in_ms only goes with speech (say, espeak, asterisk, audio)")
        return self

    @property
    def kind(self) -> str:
        """say | espeak | asterisk | audio | silence | noise | dtmf | event | hangup."""
        return next(k for k in (*SPEECH, *OTHER) if getattr(self, k) not in (None, False))

    @property
    def label(self) -> str:
        """A short description for progress lines."""
        value = getattr(self, self.kind)
        if self.kind == "hangup":
            return "hang up"
        text = str(value)
        return f"{self.kind} {text[:40] + '…' if len(text) > 40 else text}"


class Scenario(Strict):
    """A call to place: who is called, what the caller does, what should happen."""

    description: str = ""
    bot: str | None = Field(default=None, description="The bot to call (its number comes from config).")
    to: str | None = Field(default=None, description="The number to dial, instead of `bot`.")
    from_number: str = Field(default="919876543210", alias="from")
    speed: float | Literal["max"] = 1.0
    line_noise_dbfs: float | None = Field(default=None, ge=-80, le=-10)
    backend: Literal["demo"] | None = Field(
        default=None, description="demo: the bots' tools and webhooks call the built-in demo backend."
    )
    caller: list[Step] = Field(min_length=1)
    expect: Expectations | None = None
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("speed")
    @classmethod
    def _speed(cls, value: float | str) -> float | str:
        if value != "max" and not (0 < float(value) <= 10):
            raise ValueError("speed is 1, 2 … 10, or max")
        return value

    @model_validator(mode="after")
    def _target(self) -> Scenario:
        if (self.bot is None) == (self.to is None):
            raise ValueError("give exactly one of: bot (a bot name) or to (a number)")
        return self

    @property
    def path(self) -> Path | None:
        """The file it was read from."""
        return self._path

    @property
    def name(self) -> str:
        """The file's stem, or "scenario"."""
        return self._path.stem if self._path is not None else "scenario"

    def resolve(self, relative: str) -> Path:
        """A file named in the scenario, relative to the scenario file."""
        base = self._path.parent if self._path is not None else Path.cwd()
        return (base / relative).resolve()


def load_scenario(path: Path | str) -> Scenario:
    """Read a scenario file; ConfigError names the file, key and line of any mistake."""
    path = Path(path)
    scenario = load_yaml(path).validate(Scenario)
    scenario._path = path
    return scenario
