"""The real service, served on a loopback port once per test session, with the shipped bots."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from agent.config.settings import Settings, load_settings
from agent.records.store import Store
from agent.web.app import create_app
from agent.worker.speech_models import SpeechModels
from testkit.servers import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
API_KEY = "test-api-key-0123456789abcdefghij"
"""The tests' API key, given to every test service as HOTLINE_API_KEYS=tests:<key>."""
API_HEADERS = {"Authorization": f"Bearer {API_KEY}"}
SUPPORT_NUMBER = "918040001000"  # support_desk, 8 kHz
ORDER_NUMBER = "918040002000"  # order_line, 16 kHz, PIOPIY-side record first

SERVICE_START_S = 600.0
"""How long a service may take to load its models and listen: seconds on a quiet machine, minutes on a
busy 2-core one. A start-up that fails ends the wait at once; call deadlines count from readiness."""


@dataclass
class Service:
    """A running Hotline service and how to talk to it."""

    url: str
    settings: Settings
    data_dir: Path
    app: FastAPI | None = None
    """The app served (its `state.runtime` once started), for tests that look inside the service."""

    @property
    def headers(self) -> dict[str, str]:
        """Both credentials, for tests that play PIOPIY and read the API: each route reads only its own."""
        return {**self.webhook_headers, **self.api_headers}

    @property
    def webhook_headers(self) -> dict[str, str]:
        """PIOPIY's: the webhook secret (opens /piopiy/* only)."""
        return {"X-Hotline-Secret": WEBHOOK_SECRET}

    @property
    def api_headers(self) -> dict[str, str]:
        """An operator's: the tests' API key (opens /api/* and /metrics only)."""
        return dict(API_HEADERS)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=10)


def write_config(directory: Path, **overrides: object) -> Path:
    """The shipped config.yaml, with storage in `directory` and the shipped prompts."""
    data = yaml.safe_load((REPO / "config.yaml").read_text())
    data["prompts_dir"] = str(REPO / "prompts")
    data["storage"] = {
        "url": f"sqlite:///{directory / 'hotline.db'}",
        "data_dir": str(directory),
        "recordings_dir": str(directory / "recordings"),
    }
    data.update(overrides)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        old = out.get(key)
        out[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def set_secrets() -> None:
    """The test services' secrets and API key, in the environment they are read from."""
    os.environ["HOTLINE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    os.environ["HOTLINE_STREAM_SECRET"] = "test-stream-secret-0123456789abcdef"
    os.environ["HOTLINE_SESSION_SECRET"] = "test-session-secret-0123456789abcdef"
    os.environ["HOTLINE_API_KEYS"] = f"tests:{API_KEY}"


@contextmanager
def running_service(
    directory: Path,
    *,
    bots: dict[str, dict[str, Any]] | None = None,
    models: SpeechModels | None = None,
    **config: Any,
) -> Iterator[Service]:
    """Another real service: the shipped bots with `bots` (bot name → YAML changes, merged deeply) and
    config.yaml with `config` top-level overrides. Models are shared with the session's service, or
    `models` (stand-ins) load instead."""
    prompts = directory / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    for source in (REPO / "prompts").glob("*.yaml"):
        data = yaml.safe_load(source.read_text())
        data = _merge(data, (bots or {}).get(source.stem, {}))
        (prompts / source.name).write_text(yaml.safe_dump(data, sort_keys=False))
    set_secrets()
    path = write_config(directory, **config)
    data = yaml.safe_load(path.read_text())
    data["prompts_dir"] = str(prompts)
    path.write_text(yaml.safe_dump(data))
    settings = load_settings(path)
    app = create_app(settings, models=models)
    with serve_in_thread(app, startup_timeout_s=SERVICE_START_S) as url:
        settings.service.server.public_url = url
        yield Service(url=url, settings=settings, data_dir=directory, app=app)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store of the test's own, opened and closed around it."""
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    await store.init()
    yield store
    await store.close()
