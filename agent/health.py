"""What `/healthz` says: ok, degraded (with the reasons) or draining, and whether to send the worker work.

Degraded means records or recordings are at risk, not calls: the store cannot be reached or written
(record writes are kept and retried), or the recordings folder refuses files (raw parts are kept and
finished later). A degraded worker still answers calls, from memory, so it stays in rotation (200): taking
it out would turn a storage fault into missed calls, and with a shared database every worker would
leave at once. Only a draining worker answers 503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.runtime import Runtime


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
        "active_calls": len(rt.sessions),
        "loop_lag_ms": rt.loop_lag.summary(),
        "model_queue_depth": rt.executor.queue_depth,
    }
    if degraded:
        body["degraded"] = degraded
    return body, 503 if rt.draining else 200
