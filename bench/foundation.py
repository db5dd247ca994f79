"""The call edge: answer_url latency, time to the greeting's first audio, memory with models loaded.

The greeting is pre-synthesized per bot at start-up (phrase cache). The baseline, measured in the same
run on the same machine, is what the first audio would cost without it: synthesizing the greeting on
demand with the same piper voice and resampling it to the call rate.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agent.config.settings import load_settings
from agent.web.app import create_app
from pipelines.audio import resample
from pipelines.models import piper_voice_files
from pipelines.tts import PiperSynthesizer
from testkit.servers import serve_in_thread
from testkit.simulator import PiopiySimulator

REPO = Path(__file__).resolve().parents[1]
NUMBER = "918040001000"  # support_desk, 8 kHz
ANSWERS = 300
CALLS = 10


def pct(values: list[float], q: float) -> float:
    """The q-quantile in milliseconds, rounded."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def run() -> dict[str, Any]:
    """Serve the shipped bots on loopback and measure."""
    secret = "bench-secret-0123456789abcdef"
    os.environ["HOTLINE_WEBHOOK_SECRET"] = secret
    os.environ["HOTLINE_STREAM_SECRET"] = "bench-stream-secret-0123456789abcdef"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        text = (REPO / "config.yaml").read_text()
        text = text.replace("prompts_dir: prompts", f"prompts_dir: {REPO / 'prompts'}")
        text = text.replace("sqlite:///var/hotline.db", f"sqlite:///{tmp}/hotline.db")
        text = text.replace("data_dir: var", f"data_dir: {tmp}").replace(
            "recordings_dir: var/", f"recordings_dir: {tmp}/"
        )
        config.write_text(text)
        settings = load_settings(config)
        started = time.perf_counter()
        with serve_in_thread(create_app(settings), startup_timeout_s=180) as url:
            startup_s = time.perf_counter() - started
            settings.service.server.public_url = url
            answer = _answer_latency(url, secret)
            first_audio = asyncio.run(_first_audio(url, secret))
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    on_demand = _on_demand_greeting(settings.bots["support_desk"].greeting)
    return {
        "startup_s_models_and_phrase_cache": round(startup_s, 2),
        "answer_url_ms": {"p50": pct(answer, 0.5), "p95": pct(answer, 0.95), "n": len(answer)},
        "greeting_first_audio_ms": {
            "p50": pct(first_audio, 0.5),
            "p95": pct(first_audio, 0.95),
            "n": len(first_audio),
        },
        "baseline_on_demand_synthesis_ms": {"p50": pct(on_demand, 0.5), "n": len(on_demand)},
        "ratio_first_audio_vs_on_demand_p50": round(
            statistics.median(first_audio) / statistics.median(on_demand), 3
        ),
        "max_rss_mb_with_models": round(rss_mb, 1),
    }


def _answer_latency(url: str, secret: str) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers={"X-Hotline-Secret": secret}) as http:
        for i in range(ANSWERS):
            body = {"from": "919876543210", "to": NUMBER, "cmiuuid": f"bench-{i}-{time.time()}"}
            t = time.perf_counter()
            response = http.post("/piopiy/answer", json=body)
            out.append(time.perf_counter() - t)
            response.raise_for_status()
    return out


async def _first_audio(url: str, secret: str) -> list[float]:
    """Socket open (PCMO received) → first streamAudio frame, per call."""
    sim = PiopiySimulator(url, webhook_secret=secret, post_events=False)
    out = []
    for _ in range(CALLS):
        t = time.perf_counter()
        async with await sim.place_call(to_number=NUMBER) as call:
            await call.wait_for_bot_audio(timeout=10)
            out.append(time.perf_counter() - t)
    return out


def _on_demand_greeting(text: str) -> list[float]:
    synth = PiperSynthesizer.load(*piper_voice_files("en_US-joe-medium"))
    out = []
    for _ in range(5):
        t = time.perf_counter()
        resample(synth.synthesize(text), synth.sample_rate, 8000)
        out.append(time.perf_counter() - t)
    return out
