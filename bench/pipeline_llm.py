"""The dialogue's share of response latency when an LLM answers: support_desk as shipped, its dialogue
served by our OpenAI-compatible test server (real HTTP, real `openai` SDK in the service) with a
200 ms time to first token and 20 ms per token, the same spoken questions as the latency phase.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import yaml

from bench.pipeline_calls import converse, questions_for
from bench.pipeline_service import SUPPORT_NUMBER, WEBHOOK_SECRET, ServiceProcess, write_config
from bench.pipeline_stats import latency_stats
from testkit.llm_server import FakeLlmServer
from testkit.simulator import PiopiySimulator

TTFT_S = 0.2
TOKEN_DELAY_S = 0.02
REPLY = "Sure. Our branches are open from nine to five, Monday to Saturday. Is there anything else?"


def llm_phase(root: Path, calls: int, questions: int) -> dict[str, Any]:
    """Calls answered by the test LLM; latency distributions and the dialogue's share of response."""
    with FakeLlmServer() as llm:
        llm.set_timing(ttft_s=TTFT_S, token_delay_s=TOKEN_DELAY_S)
        llm.on(r".", reply=REPLY)
        config = write_config(root / "llm", [])
        data = yaml.safe_load(config.read_text())
        data["llm"] = {"base_url": llm.base_url, "model": "bench", "first_token_timeout_s": 2.0}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        with ServiceProcess(config, root / "llm.log") as svc:
            convs = asyncio.run(_calls(svc, calls, questions))
        requests = len(llm.requests)
    turns = [t for c in convs for t in c.turns()]
    answered = [t for t in turns if t.get("response_ms") and t.get("dialogue_first_text_ms") is not None]
    shares = [t["dialogue_first_text_ms"] / t["response_ms"] for t in answered]
    return {
        "ttft_s": TTFT_S,
        "token_delay_s": TOKEN_DELAY_S,
        "llm_requests": requests,
        "errors": [c.error for c in convs if c.error],
        **latency_stats(turns),
        "dialogue_share_of_response_p50": round(statistics.median(shares), 3) if shares else None,
    }


async def _calls(svc: ServiceProcess, calls: int, questions: int) -> list[Any]:
    sim = PiopiySimulator(svc.url, webhook_secret=WEBHOOK_SECRET)
    async with svc.client() as api:
        return [
            await converse(sim, api, SUPPORT_NUMBER, questions_for(k, questions), arm="llm", hold_s=0.3)
            for k in range(calls)
        ]
