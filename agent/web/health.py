"""What balancers and scrapers ask: `/livez`, `/healthz` (ok, degraded with the reasons, or draining:
whether to send the worker work) and `/metrics`.

Degraded means records or recordings are at risk, not calls: the store cannot be reached or written
(record writes are kept and retried), or the recordings folder refuses files (raw parts are kept and
finished later). A degraded worker still answers calls, from memory, so it stays in rotation (200): taking
it out would turn a storage fault into missed calls, and with a shared database every worker would
leave at once. Only a draining worker answers 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from agent.web.auth import api_client, runtime_of
from agent.worker.metrics import CONTENT_TYPE
from agent.worker.runtime import Runtime

router = APIRouter()


def degraded_reasons(rt: Runtime) -> dict[str, list[str]]:
    """Part (`store`, `recordings`) → why it is degraded now; empty when everything is fine."""
    reasons: dict[str, list[str]] = {}
    store = [] if (why := rt.store.unwritable_reason()) is None else [why]
    if rt.writer.waiting_calls:
        store.append(
            f"record writes of {rt.writer.waiting_calls} calls waiting for the store "
            f"({rt.writer.pending} writes kept): {rt.writer.last_error}"
        )
    if store:
        reasons["store"] = store
    if recordings := rt.recordings.degraded():
        reasons["recordings"] = recordings
    return reasons


def health(rt: Runtime) -> tuple[dict[str, Any], int]:
    """The `/healthz` body and its HTTP status."""
    degraded = degraded_reasons(rt)
    status = "draining" if rt.draining else "degraded" if degraded else "ok"
    body: dict[str, Any] = {
        "status": status,
        "active_calls": len(rt.calls.sessions),
        "loop_lag_ms": rt.loop_lag.summary(),
        "model_queue_depth": rt.executor.queue_depth,
    }
    if degraded:
        body["degraded"] = degraded
    return body, 503 if rt.draining else 200


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics (agent/worker/metrics.py); needs an API key unless `server.metrics_public`."""
    rt = runtime_of(request)
    if not rt.settings.service.server.metrics_public:
        await api_client(request)
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/livez")
async def livez() -> dict[str, str]:
    """Liveness: 200 whenever the event loop answers, draining or not (a drain must not be killed)."""
    return {"status": "alive"}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Readiness: 200 while taking calls (`ok`, or `degraded` with the reasons: agent/web/health.py), 503
    while draining (load balancers stop sending work)."""
    body, status = health(runtime_of(request))  # degraded storage keeps the worker in rotation
    return JSONResponse(body, status_code=status)
