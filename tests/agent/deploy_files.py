"""Reading the deployment files as the tools that use them would: the Dockerfile's stages, the image's
file tree, a config loaded inside it, and the environment variables the worker reads.

Helpers of tests/agent/test_deploy.py (no Docker engine on the development machines)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

from agent.config.settings import Settings, load_settings
from tests.agent.conftest import REPO


@dataclass
class Instruction:
    name: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.name} {self.args}: use the JSON (exec) form"
        return [str(v) for v in value]


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]

    def one(self, name: str) -> Instruction:
        (found,) = self.all(name)
        return found

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                out[key] = value
        return out


def dockerfile_stages(path: Path = REPO / "Dockerfile") -> list[Stage]:
    """The Dockerfile's stages: line continuations joined, comments dropped, ARG defaults applied to FROM."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        name, _, rest = line.partition(" ")
        name, rest = name.upper(), rest.strip()
        if name == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif name == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        else:
            assert stages, f"{name} before the first FROM"
            stages[-1].instructions.append(Instruction(name, rest))
    return stages


def image_workdir(image: Stage) -> str:
    return image.all("WORKDIR")[-1].args


def build_image_tree(image: Stage, root: Path) -> Path:
    """The image's own files (COPY from the build context, as the Dockerfile lists them) under `root`."""
    workdir = image_workdir(image)
    for copy in image.all("COPY"):
        words = copy.args.split()
        if any(w.startswith("--from") for w in words):
            continue  # the installed venv: the tests run the same code from .venv
        *sources, dest = words
        for source in sources:
            target = root / (dest if dest.startswith("/") else f"{workdir}/{dest}").lstrip("/")
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, dirs_exist_ok=True)
            else:
                if dest.endswith("/"):
                    target = target / Path(source).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, target)
    return root


@dataclass
class InImage:
    """Settings loaded inside a copy of the image's file tree at `root`."""

    settings: Settings
    root: Path

    def path(self, p: Path) -> str:
        """A config path as the container sees it."""
        return "/" + str(self.settings.path(p).resolve().relative_to(self.root.resolve()))


def load_in_image(root: Path, config_in_image: str, text: str | None = None) -> InImage:
    """Load a config as the container would: at its in-image path, absolute /app/… paths under `root`."""
    path = root / config_in_image.lstrip("/")
    if text is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(re.sub(r"(?<![\w.])/app/", f"{root}/app/", text))
    return InImage(load_settings(path), root)


def env_read_by_code(settings: Settings) -> set[str]:
    """Every environment variable the worker reads: literal names in the code, the config's *_env keys,
    the bots' `{env.NAME}` and `secret_env`, and the few read by the libraries and Python themselves."""
    names: set[str] = set()
    for source in (REPO / "agent").rglob("*.py"):
        names |= set(re.findall(r'environ\.get\(\s*"([A-Z][A-Z0-9_]*)"', source.read_text()))

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_env") and isinstance(value, str):
                    yield value
                yield from walk(value)

    names |= set(walk(settings.service.model_dump()))
    for bot in settings.files.values():
        text = bot.read_text()
        names |= set(re.findall(r"\{env\.([A-Z][A-Z0-9_]*)\}", text))
        names |= set(re.findall(r"secret_env:\s*([A-Z][A-Z0-9_]*)", text))
    # uvicorn's FORWARDED_ALLOW_IPS is not one: `hotline serve` turns its proxy headers off.
    if "MPLCONFIGDIR" in Path(str(matplotlib.__file__)).read_text():
        names.add("MPLCONFIGDIR")
    return names | {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


def seconds(duration: str) -> float:
    """'75s', '2m', '2h', '1m30s' → seconds (compose and HAProxy durations)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)
