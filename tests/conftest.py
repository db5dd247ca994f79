"""Shared fixtures: the real service (one per test process, shared by every package's tests) and
PIOPIY's REST API."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from statistics import median

import anyio
import pytest
import yaml

from agent.config.settings import load_settings
from agent.web.app import create_app
from testkit.fake_piopiy_rest import FakePiopiyRest
from testkit.servers import serve_in_thread
from tests.agent.conftest import REPO, SERVICE_START_S, Service, set_secrets, write_config


def _import_anyio_up_front() -> None:
    """pytest rewrites the modules of every package that ships a pytest plugin (anyio does, even with
    `-p no:anyio`), and anyio imports most of itself lazily, on first use. In a service thread that
    rewrite raced the main thread's (CPython 3.11: "AST constructor recursion depth mismatch": a file
    download failed mid-response). Imported here, in the main thread before any service starts, nothing
    of anyio is left to rewrite later."""
    for info in pkgutil.walk_packages(anyio.__path__, "anyio."):
        if not info.name.endswith(("_trio", "pytest_plugin")):
            importlib.import_module(info.name)
    for name in sorted(m for m in list(sys.modules) if m == "anyio" or m.startswith("anyio.")):
        module = sys.modules[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated aliases warn when resolved
            for attr in dir(module):
                getattr(module, attr, None)


_import_anyio_up_front()

FILE_SECONDS = Path(__file__).with_name("file_seconds.json")
"""Seconds each test file took (`HOTLINE_FILE_SECONDS=1 make unit` brings it up to date)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest test files first, each file's tests kept together and in order. `make unit` hands
    files to its processes in this order (`--no-loadscope-reorder`); the run ends when its last long file
    does, so starting the long ones first shortens it. A file not in FILE_SECONDS counts as a median one."""
    seconds: dict[str, float] = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {}
    usual = median(seconds.values()) if seconds else 0.0
    first = {path: i for i, path in enumerate(dict.fromkeys(item.nodeid.split("::")[0] for item in items))}

    def key(item: pytest.Item) -> tuple[float, int]:
        path = item.nodeid.split("::")[0]
        return -seconds.get(path, usual), first[path]

    items.sort(key=key)  # stable: a file's tests keep their order


_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("HOTLINE_FILE_SECONDS"):
        path = report.nodeid.split("::")[0]
        _file_seconds[path] = _file_seconds.get(path, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Written by the main process only (with xdist, every report reaches it too), after a green run; the
    # files that ran get their new seconds, the others keep theirs.
    if _file_seconds and not hasattr(session.config, "workerinput") and session.testsfailed == 0:
        times = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {}
        times |= {path: round(t, 1) for path, t in _file_seconds.items()}
        FILE_SECONDS.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")


PIOPIY_APPID = 1111
PIOPIY_SECRET = "s3cret"


@pytest.fixture(scope="session")
def _piopiy_rest_server() -> Iterator[FakePiopiyRest]:
    # One server per session: starting uvicorn costs ~0.1 s, and reset() isolates the tests.
    with FakePiopiyRest(appid=PIOPIY_APPID, secret=PIOPIY_SECRET) as fake:
        yield fake


@pytest.fixture
def fake_piopiy_rest(_piopiy_rest_server: FakePiopiyRest) -> FakePiopiyRest:
    """PIOPIY's REST API on a local port (appid 1111, secret "s3cret"), with nothing recorded yet."""
    _piopiy_rest_server.reset()
    return _piopiy_rest_server


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The shipped config and bots with real models, on a loopback port, started once per test process."""
    directory = tmp_path_factory.mktemp("service")
    set_secrets()
    # The limiter of failed credentials is tested on services of its own (tests/agent/web/test_auth_limits.py,
    # test_edge.py); here many test files knock with wrong credentials on purpose, in any order.
    security = {**yaml.safe_load((REPO / "config.yaml").read_text())["security"], "max_failed_auth": 100_000}
    settings = load_settings(write_config(directory, security=security))
    with serve_in_thread(create_app(settings), startup_timeout_s=SERVICE_START_S) as url:
        # The port is known only now; ws_url is derived from public_url at answer time.
        settings.service.server.public_url = url
        yield Service(url=url, settings=settings, data_dir=directory)
