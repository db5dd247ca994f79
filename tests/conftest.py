"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.testing.fake_piopiy_rest import FakePiopiyRest

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
