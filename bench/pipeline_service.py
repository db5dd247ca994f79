"""The service under test for the pipeline benchmark: the real app in its own process, with bench bots.

The service runs in a child process (`python -m bench.pipeline_service CONFIG`, served with
`serve_in_thread` like the tests) so that the simulated callers neither share its GIL nor count in its
CPU time and memory, which are read from /proc. The bench bots are copies of prompts/support_desk.yaml
that differ only in `turn_taking` (the segmented baseline, the end-of-turn silence grid), plus a probe
bot for ASR accuracy whose every answer is a one-word "Pardon?".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from agent.config.base import normalize_number
from agent.config.bot import BotConfig, TurnTaking

REPO = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "bench-pipeline-secret-0123456789"
STREAM_SECRET = "bench-pipeline-stream-secret-0123456789abcdef"
API_KEY = "bench-api-key-0123456789abcdefghij"
"""Reads records and metrics (HOTLINE_API_KEYS=bench:<key>); the webhook secret opens /piopiy/* only."""
SUPPORT_NUMBER = "918040001000"  # support_desk as shipped: 8 kHz, default turn-taking
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchBot:
    """A bot written for the benchmark: its name, its number, and what differs from its source."""

    name: str
    number: str
    turn_taking: dict[str, Any]
    probe: bool = False  # the ASR probe: no intents, answers everything with a short line
    asr_window_s: float | None = None  # None: as shipped


BASELINE = BenchBot(
    "segmented_baseline",
    "918040009800",
    {"end_silence_ms": 800, "speculative_asr": False, "semantic_endpoint": False},
    asr_window_s=30.0,  # faster-whisper as Pipecat and LiveKit call it: Whisper's own 30 s window
)
ASR_PROBE = BenchBot("asr_probe", "918040009900", {}, probe=True)


def shipped_turn_taking() -> TurnTaking:
    """support_desk's turn-taking as shipped (its YAML, or the defaults in agent/config/bot.py)."""
    return BotConfig.model_validate(
        yaml.safe_load((REPO / "prompts" / "support_desk.yaml").read_text())
    ).turn_taking


def silence_bot(end_silence_ms: int) -> BenchBot:
    """support_desk with another end-of-turn silence (speculative ASR on, as shipped)."""
    number = f"91804007{end_silence_ms:04d}"  # 918040070700 for 700 ms: apart from the other bench bots
    return BenchBot(f"end_silence_{end_silence_ms}", number, {"end_silence_ms": end_silence_ms})


def write_config(directory: Path, bots: list[BenchBot], *, shipped: bool = True) -> Path:
    """config.yaml in `directory` with storage there: the shipped bots and numbers (unless `shipped` is
    False), plus `bots`."""
    prompts = directory / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((REPO / "config.yaml").read_text())
    if shipped:
        for bot_file in (REPO / "prompts").glob("*.yaml"):
            shutil.copy(bot_file, prompts / bot_file.name)
    else:
        data["numbers"] = {}
    data["prompts_dir"] = str(prompts)
    # The ASR phase streams prompts flat out (what is heard is measured there, not when): no pacing.
    data["security"] = {**data.get("security", {}), "max_audio_lead_s": None}
    data["storage"] = {
        "url": f"sqlite:///{directory / 'hotline.db'}",
        "data_dir": str(directory),
        "recordings_dir": str(directory / "recordings"),
    }
    source = yaml.safe_load((REPO / "prompts" / "support_desk.yaml").read_text())
    for bot in bots:
        if bot.number in {normalize_number(n) for n in data["numbers"]}:
            raise ValueError(f"bench bot {bot.name}: number {bot.number} already routes to another bot")
        (prompts / f"{bot.name}.yaml").write_text(yaml.safe_dump(_bot_yaml(source, bot), sort_keys=False))
        data["numbers"][bot.number] = bot.name
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _bot_yaml(source: dict[str, Any], bot: BenchBot) -> dict[str, Any]:
    window = {} if bot.asr_window_s is None else {"asr_window_s": bot.asr_window_s}
    if not bot.probe:
        return {**source, **window, "turn_taking": dict(bot.turn_taking)}
    # Everything that could end or redirect the call (intents, transfers, rules) is left out, and the
    # reply is short, so prompt after prompt can be spoken into one call.
    keep = ("name", "language", "voice", "asr_model", "stream", "turn_taking")
    probe = {key: source[key] for key in keep if key in source} | window
    probe["greeting"] = "Hello."
    probe["phrases"] = {"rephrase": "Pardon?"}
    if bot.turn_taking:
        probe["turn_taking"] = dict(bot.turn_taking)
    return probe


class ServiceProcess:
    """`python -m bench.pipeline_service CONFIG [--stand-ins LEXICON]` as a child process; `with` starts
    and stops it. With `stand_ins` (a JSON file: caller utterance → voice print) the service runs on the
    stand-in models of the load profile (testkit/standins.py) instead of piper and Whisper."""

    def __init__(
        self, config: Path, log_path: Path, startup_timeout_s: float = 240.0, *, stand_ins: Path | None = None
    ) -> None:
        self.config = config
        self.stand_ins = stand_ins
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.url = ""
        self.startup_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> ServiceProcess:
        env = {
            **os.environ,
            "HOTLINE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "HOTLINE_STREAM_SECRET": STREAM_SECRET,
            "HOTLINE_API_KEYS": f"bench:{API_KEY}",
        }
        env.pop("HOTLINE_LLM_BASE_URL", None)  # the scripted dialogue: no LLM time in the numbers
        self._log = self.log_path.open("wb")
        started = time.perf_counter()
        stand_ins = ["--stand-ins", str(self.stand_ins)] if self.stand_ins else []
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.pipeline_service", str(self.config), *stand_ins],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        try:
            self.url = self._read_url()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.startup_s = time.perf_counter() - started
        return self

    def _read_url(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._proc.poll() is not None:
                raise RuntimeError(f"the service did not start; see {self.log_path}:\n{self.log_tail()}")
            ready, _, _ = select.select([self._proc.stdout], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(self._proc.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        return line.decode().strip()

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()  # the child stops its server and exits when its stdin closes
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int:
        """The service's process id."""
        assert self._proc is not None
        return self._proc.pid

    def log_tail(self, lines: int = 30) -> str:
        """The end of the service's log (stderr)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cpu_s(self) -> float:
        """User + system CPU seconds the service has used (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        """Resident memory now, in MiB."""
        return _status_kb(self.pid, "VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """The highest resident memory so far (VmHWM), in MiB."""
        return _status_kb(self.pid, "VmHWM") / 1024

    def client(self) -> httpx.AsyncClient:
        """An HTTP client for the service's API and metrics (API key set)."""
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        )


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat; two readings give the machine's CPU use."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


def _serve(config: str, stand_ins: str | None = None) -> None:
    """The child: serve the app until stdin closes; print the URL once it accepts connections."""
    from agent.config.settings import load_settings
    from agent.web.app import create_app
    from testkit.servers import serve_in_thread
    from testkit.standins import StandInModels

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(config)
    models = None
    if stand_ins is not None:
        prints = json.loads(Path(stand_ins).read_text())
        models = StandInModels({text: tuple(p) for text, p in prints.items()})
    with serve_in_thread(create_app(settings, models=models), startup_timeout_s=240) as url:
        settings.service.server.public_url = url  # the port is known only now; ws_url derives from it
        print(url, flush=True)
        sys.stdin.buffer.read()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[3] if sys.argv[2:3] == ["--stand-ins"] else None)
