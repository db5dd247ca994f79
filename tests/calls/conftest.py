"""A pytest plugin: every `tests/calls/*.yaml` is a call scenario, collected as one test.

Each is played through the real service (shipped config and bots, real models and rules; tools and
webhooks on the demo backend) exactly as `hotline replay FILE` does it, and fails with the readable
expectation diff. Reports (transcript, timeline PNG, HTML, recording) land in var/call-reports/NAME/.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.settings import Settings, load_settings
from testkit.expect import format_failures
from testkit.scenario import Scenario, load_scenario
from testkit.scenario_run import LocalService, local_service, run_scenario

REPO = Path(__file__).resolve().parents[2]
CALLS = Path(__file__).resolve().parent
REPORTS = REPO / "var" / "call-reports"


class _SharedService:
    """One in-process service for all call scenarios of the session, started on first use."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.settings: Settings | None = None
        self.local: LocalService | None = None

    def get(self, config: pytest.Config) -> tuple[Settings, LocalService]:
        if self.settings is None or self.local is None:
            tmp = config._tmp_path_factory.mktemp("calls-service")  # type: ignore[attr-defined]
            os.environ.setdefault("HOTLINE_WEBHOOK_SECRET", "calls-webhook-secret-0123456789")
            os.environ.setdefault("HOTLINE_STREAM_SECRET", "calls-stream-secret-0123456789abcdef")
            settings = load_settings(REPO / "config.yaml")
            self.local = self._stack.enter_context(local_service(settings, tmp, demo_backend=True))
            self.settings = settings
        return self.settings, self.local

    def close(self) -> None:
        self._stack.close()


_service = _SharedService()


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix == ".yaml" and file_path.parent == CALLS:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    _service.close()


class ScenarioFile(pytest.File):
    """A scenario YAML: one test."""

    def collect(self) -> Iterator[pytest.Item]:
        yield ScenarioItem.from_parent(self, name=self.path.stem, scenario=load_scenario(self.path))


class ScenarioFailed(Exception):
    """Expectations that did not hold (the message is the readable diff)."""


class ScenarioItem(pytest.Item):
    """Plays one scenario and checks its expectations."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario

    def runtest(self) -> None:
        settings, local = _service.get(self.config)
        out = REPORTS / self.name
        shutil.rmtree(out, ignore_errors=True)
        run = asyncio.run(
            run_scenario(
                self.scenario,
                url=local.url,
                secret=local.webhook_secret,
                api_key=local.api_key,
                out_dir=out,
                settings=settings,
            )
        )
        self.user_properties.append(("report", str(run.report.get("html"))))
        if run.failures:
            raise ScenarioFailed(f"{format_failures(run.failures)}\n\nreport: {run.report.get('html')}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return f"call scenario {self.path.name} failed:\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"call scenario: {self.name}"
