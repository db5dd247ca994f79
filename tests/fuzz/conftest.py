"""Fuzzing the service's surfaces with hypothesis: stream frames, webhooks, the OpenAPI spec, YAML.

Two sizes, chosen by HOTLINE_FUZZ: `ci` (the default: a few hundred cases per surface, part of
`make test`) and `full` (at least 10,000 cases per surface: `make fuzz`). Each test is one surface,
marked `@pytest.mark.surface(NAME)`, and counts its cases with the `surface` fixture. A surface fails on
its first crashing case (hypothesis shrinks and prints it) and on any log record at ERROR or with a
traceback while it ran, from the service's threads too. With HOTLINE_FUZZ_RESULTS=path the figures
(cases, crashes, unhandled exceptions, seconds per surface) are written there as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, settings

from agent.config.service import SecurityConfig
from tests.agent.conftest import REPO, Service, running_service

PROFILE = os.environ.get("HOTLINE_FUZZ", "ci")
if PROFILE not in ("ci", "full"):
    raise pytest.UsageError(f"HOTLINE_FUZZ must be ci or full, not {PROFILE!r}")
FULL_CASES = 10_000
PG_DSN = "postgresql://root@127.0.0.1:5432/test"
CLIENT_LOGGERS = ("websockets.client",)

_common = {
    "deadline": None,  # real sockets and a real database: timing varies with the machine's load
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "print_blob": True,
}
settings.register_profile("hotline-fuzz-ci", max_examples=300, **_common)  # type: ignore[arg-type]
settings.register_profile("hotline-fuzz-full", max_examples=FULL_CASES, **_common)  # type: ignore[arg-type]
FUZZ = settings.get_profile(f"hotline-fuzz-{PROFILE}")


def cases(ci: int, full: int = FULL_CASES) -> settings:
    """The profile's settings with this surface's number of cases (hypothesis runs at most that many)."""
    return settings(FUZZ, max_examples=full if PROFILE == "full" else ci)


@dataclass
class Surface:
    """One fuzzed surface's figures."""

    name: str
    cases: int = 0
    crashes: int = 0
    unhandled_exceptions: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # the first few log records, to read

    def __call__(self) -> None:
        """Count one case."""
        self.cases += 1


SURFACES: dict[str, Surface] = {}


class UnhandledLog(logging.Handler):
    """Keeps every record at ERROR or above, or carrying a traceback, from any logger and thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return  # the fuzzers' own socket client, e.g. when a case kills its socket on purpose
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


WATCH = UnhandledLog()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "surface(name): the fuzzed surface a test counts its cases for")
    logging.getLogger().addHandler(WATCH)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(WATCH)


def _surface_of(item: pytest.Item) -> Surface | None:
    marker = item.get_closest_marker("surface")
    if marker is None:
        return None
    name = str(marker.args[0])
    callspec = getattr(item, "callspec", None)
    if callspec is not None:  # one surface per parameter set, e.g. per storage backend
        name += f" [{callspec.id}]"
    return SURFACES.setdefault(name, Surface(name))


@pytest.fixture
def surface(request: pytest.FixtureRequest) -> Surface:
    """This test's surface: call it once per case."""
    found = _surface_of(request.node)
    assert found is not None, "mark the test with @pytest.mark.surface(NAME)"
    return found


@pytest.fixture(autouse=True)
def _no_unhandled_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the surface on any ERROR (or traceback) logged while it ran, by the service or the test."""
    found = _surface_of(request.node)
    WATCH.records.clear()
    yield
    time.sleep(0.2)  # the service logs from its own thread: let what the last case caused arrive
    records, WATCH.records[:] = list(WATCH.records), []
    if found is not None:
        found.unhandled_exceptions += len(records)
        found.examples += [_describe(r) for r in records[: 3 - len(found.examples)]]
    assert not records, "logged while fuzzing:\n" + "\n\n".join(_describe(r) for r in records[:5])


def _describe(record: logging.LogRecord) -> str:
    text = f"{record.levelname} {record.name}: {record.getMessage()}"
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return text


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    found = _surface_of(item)
    if found is not None and call.when == "call":
        found.seconds += call.duration  # the cases only: not the service's start-up
        if report.failed:  # type: ignore[attr-defined]
            found.crashes += 1  # hypothesis stops at its first failing case (shrunk)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SURFACES:
        return
    terminalreporter.section(f"fuzzing ({PROFILE})")
    for s in SURFACES.values():
        terminalreporter.write_line(
            f"{s.name:<34} {s.cases:>7} cases  {s.crashes} crashes  "
            f"{s.unhandled_exceptions} unhandled exceptions  {s.seconds:7.1f} s"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("HOTLINE_FUZZ_RESULTS")
    if not target or not SURFACES:
        return
    path = Path(target)
    # A run of some surfaces (`make fuzz` with -k, say) updates theirs and keeps the others' figures.
    old = json.loads(path.read_text()) if path.is_file() else {}
    same_size = old.get("_meta", {}).get("profile") == PROFILE
    surfaces: dict[str, Any] = old.get("surfaces", {}) if same_size else {}
    for name, s in SURFACES.items():
        figures = {k: v for k, v in asdict(s).items() if k != "name"}
        surfaces[name] = {**figures, "seconds": round(s.seconds, 1), "date": _now()}
    results = {
        "surfaces": surfaces,
        "total_cases": sum(s["cases"] for s in surfaces.values()),
        "_meta": {
            "date": _now(),
            "profile": PROFILE,
            "seconds": round(sum(s["seconds"] for s in surfaces.values()), 1),
            "pytest_exit_status": int(exitstatus),
            "hypothesis": hypothesis.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": "make fuzz",
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------------------------- services


def postgres_available() -> bool:
    """Whether the local PostgreSQL of the store tests answers."""
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _security() -> dict[str, Any]:
    """The shipped security settings, without the per-address limit on wrong secrets and tokens: the
    fuzzers send thousands of them from 127.0.0.1 on purpose, and must not lock themselves out."""
    shipped = yaml.safe_load((REPO / "config.yaml").read_text()).get("security") or {}
    if "max_failed_auth" in SecurityConfig.model_fields:
        shipped["max_failed_auth"] = 10**9
    return dict(shipped)


@pytest.fixture(scope="session")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real service (shipped bots, SQLite) that the fuzzers attack."""
    with running_service(tmp_path_factory.mktemp("fuzz-sqlite"), security=_security()) as service:
        yield service


@pytest.fixture(scope="session")
def fuzz_service_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The same on PostgreSQL (its own schema): column sizes and JSON rules that SQLite does not check."""
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI")
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    schema = f"hotline_fuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    directory = tmp_path_factory.mktemp("fuzz-pg")
    storage = {
        "url": f"{PG_DSN}?options=-csearch_path%3D{schema}",
        "data_dir": str(directory),
        "recordings_dir": str(directory / "recordings"),
    }
    try:
        with running_service(directory, storage=storage, security=_security()) as service:
            yield service
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
