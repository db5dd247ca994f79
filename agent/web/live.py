"""The live feed socket (/api/live): every call's live events, or one call's, for holders of an API key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket
from sqlalchemy.exc import SQLAlchemyError

from agent.security import is_call_id
from agent.web.api_keys import presented_key
from agent.worker.bus import relay
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter()


@router.websocket("/api/live")
async def live(ws: WebSocket) -> None:
    """Live events of every call, or of one (`?call=ID`), as JSON text frames."""
    rt: Runtime = ws.app.state.runtime
    host = ws.client.host if ws.client else None
    await ws.accept()
    if rt.refusal(host, platform=False) is not None:
        await ws.close(1008, "too many failed attempts")
        return
    try:
        name = await rt.api_keys.name_of(presented_key(ws.headers))
    except (SQLAlchemyError, OSError) as exc:
        log.warning(
            "live socket from %s: API key not checked, the store is unreachable (%s)",
            host,
            type(exc).__name__,
        )
        await ws.close(1011, "the store is unreachable")
        return
    if name is None:
        rt.auth_failed(host, "live")
        log.warning("refused the live socket from %s: missing, wrong or revoked API key", host)
        await ws.close(1008, "unauthorized")
        return
    call = ws.query_params.get("call")
    if call is not None and not is_call_id(call):
        log.warning("live feed refused: %r is not a call id", call[:64])
        await ws.close(1008, "malformed call id")
        return
    await relay(rt.bus.subscribe(call), ws.send_json)
