"""`hotline serve` as a process: SIGTERM drains (503 on /healthz, the fallback for new calls, live calls
go on), then it exits 0 with every record saved; past the drain deadline live calls are closed and
saved. Logs are JSON lines that name their call."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agent.records.store import Store
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import API_KEY, REPO, SUPPORT_NUMBER, WEBHOOK_SECRET

HOTLINE = Path(sys.executable).with_name("hotline")
ENV = {
    "HOTLINE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "HOTLINE_STREAM_SECRET": "test-stream-secret-0123456789abcdef",
    "HOTLINE_API_KEYS": f"tests:{API_KEY}",
}


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    url: str
    db: Path
    log: Path

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


WORKER_START_S = 600.0
"""How long a started worker may take to answer /healthz: loading the models takes seconds on a quiet
machine and minutes on a 2-core one that is busy with something else. The wait ends at once if the
process dies, so only a hung start-up ever waits this long; deadlines for what the worker does count from
its readiness, never from its start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_config(tmp_path: Path) -> Path:
    """A config.yaml for one `hotline serve` process: the shipped bots on a free port, its own SQLite
    store, data and recordings under `tmp_path`."""
    port = _free_port()
    data = yaml.safe_load((REPO / "config.yaml").read_text())
    data["prompts_dir"] = str(REPO / "prompts")
    data["server"] = {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"}
    data["storage"] = {"url": f"sqlite:///{tmp_path / 'h.db'}", "data_dir": str(tmp_path / "var"),
                       "recordings_dir": str(tmp_path / "rec")}  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Worker]:
    """A `hotline serve` process on a free port, JSON logs, its own SQLite store."""
    drain_s = getattr(request, "param", 30)
    port = _free_port()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["prompts_dir"] = str(REPO / "prompts")
    config["server"] = {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}",
                        "drain_timeout_s": drain_s}  # fmt: skip
    config["storage"] = {"url": f"sqlite:///{tmp_path / 'h.db'}", "data_dir": str(tmp_path / "var"),
                         "recordings_dir": str(tmp_path / "rec")}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(HOTLINE), "--config", str(tmp_path / "config.yaml"), "--log-format", "json", "serve"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WORKER_START_S
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the worker did not come up"
            time.sleep(0.25)
        yield Worker(process, url, tmp_path / "h.db", log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def record_of(db: Path, call_id: str) -> dict[str, Any]:
    store = Store(f"sqlite:///{db}")
    await store.init()
    try:
        record = await store.call_record(call_id)
    finally:
        await store.close()
    assert record is not None
    return record


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, "the worker did not exit"
        await asyncio.sleep(0.1)
    return process.returncode


async def test_sigterm_drains_live_calls_then_exits_with_every_record(worker: Worker) -> None:
    sim = PiopiySimulator(worker.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        worker.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=worker.url, timeout=5) as http:
            for _ in range(50):  # the signal is handled within a moment
                health = await http.get("/healthz")
                if health.status_code == 503:
                    break
                await asyncio.sleep(0.1)
            assert health.status_code == 503 and health.json()["status"] == "draining"
            assert (await http.get("/livez")).status_code == 200  # draining is not dead: no restart
            body = {"from": "919800000001", "to": SUPPORT_NUMBER, "cmiuuid": "during-drain"}
            late = await http.post("/piopiy/answer", json=body, headers={"X-Hotline-Secret": WEBHOOK_SECRET})
        assert late.status_code == 200 and all(a["action"] != "stream" for a in late.json())
        # The live call goes on as if nothing happened.
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        await call.wait_for_bot_audio(timeout=15, since=call.now())
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
        call_id = str(httpx.URL(call.ws_url).params["call"])
        assert worker.process.poll() is None  # still serving the call
    assert await wait_exit(worker.process, 20) == 0
    record = await record_of(worker.db, call_id)
    assert record["status"] == "completed" and record["end_reason"] == "caller_hangup"
    assert [t["role"] for t in record["turns"]] == ["bot", "caller", "bot"]
    assert "nine in the morning" in record["turns"][2]["text"]
    # Every line is JSON; the call's lines carry its id.
    lines = worker.log_lines()
    assert any(line["msg"].startswith("SIGTERM: draining 1 live calls") for line in lines)
    ended = [line for line in lines if line["logger"] == "agent.call.session" and "ended" in line["msg"]]
    assert ended and ended[0]["call_id"] == call_id
    assert any("during-drain" in line["msg"] and line["call_id"].startswith("c_") for line in lines)


@pytest.mark.parametrize("worker", [2], indirect=True)
async def test_calls_live_at_the_drain_deadline_are_closed_and_saved(worker: Worker) -> None:
    sim = PiopiySimulator(worker.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        call_id = str(httpx.URL(call.ws_url).params["call"])
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        assert await wait_exit(worker.process, 20) == 0
        assert time.monotonic() - started < 10  # 2 s of drain, then a prompt exit
    record = await record_of(worker.db, call_id)
    assert record["end_reason"] == "shutdown" and record["ended_at"] is not None
    assert record["recording"] is not None and record["turns"][0]["role"] == "bot"
