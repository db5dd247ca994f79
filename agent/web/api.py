"""The call API (/api/*): list and read calls and recordings, the calls live now, a supervisor's orders
(transfer, hang up), and reloading the config. Every route needs an API key (agent/web/auth.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from agent.config.yamlfile import ConfigError
from agent.security import CALL_ID_PATTERN, is_call_id
from agent.web.auth import api_client, runtime_of
from agent.web.errors import HttpError
from agent.worker.commands import Supervise

log = logging.getLogger(__name__)

router = APIRouter()


class SupervisorAction(BaseModel):
    """Who asks (for the record)."""

    user: str | None = Field(default=None, max_length=64)


class SupervisorTransfer(SupervisorAction):
    """Transfer to one of the call's bot departments."""

    department: str = Field(min_length=1, max_length=64)


@router.get("/api/calls")
async def list_calls(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31),  # beyond a database's integer: a 422, not a 500
    bot: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    rt = await api_client(request)
    total, calls = await rt.store.list_calls(limit=limit, offset=offset, bot=bot, status=status)
    return {"total": total, "limit": limit, "offset": offset, "calls": calls}


@router.get("/api/calls/{call_id}")
async def get_call(request: Request, call_id: str) -> Response:
    rt = await api_client(request)
    _check_call_id(call_id)
    record = await rt.store.call_record(call_id)
    if record is None:
        raise HttpError(404, "no such call", call_id)
    record["live"] = call_id in rt.calls.sessions
    # Serialized on a thread: a long call's record must not hold up every other call's audio.
    return Response(await asyncio.to_thread(_json_bytes, record), media_type="application/json")


@router.get("/api/calls/{call_id}/recording")
async def get_recording(request: Request, call_id: str) -> FileResponse:
    rt = await api_client(request)
    _check_call_id(call_id)
    path = await rt.store.recording_path(call_id)
    if path is None or not path.is_file():
        raise HttpError(404, "no recording for this call", call_id)
    return FileResponse(path, media_type="audio/wav", filename=f"{call_id}.wav")


@router.get("/api/live-calls")
async def live_calls(request: Request) -> dict[str, Any]:
    """The calls live right now on every worker (with the cluster), oldest first."""
    rt = await api_client(request)
    return {"worker": rt.calls.worker_id, "calls": await rt.calls.listing()}


# Typed bodies are checked before the handler runs: the key is checked before them, as a dependency.
@router.post("/api/calls/{call_id}/transfer", dependencies=[Depends(api_client)])
async def supervisor_transfer(request: Request, call_id: str, body: SupervisorTransfer) -> JSONResponse:
    """A supervisor's "transfer now": to a department of the call's bot (never a number)."""
    rt = runtime_of(request)
    _check_call_id(call_id)
    record = await rt.store.call_record(call_id)
    bot = rt.settings.bots.get(record["bot"]) if record and record.get("bot") else None
    if bot is None:
        raise HttpError(404, "no such call", call_id)
    if body.department not in bot.departments:
        raise HttpError(422, "no such department", f"departments: {', '.join(sorted(bot.departments))}")
    command = Supervise("transfer", body.user, body.department)
    return _routed(call_id, await rt.calls.route(call_id, command))


@router.post("/api/calls/{call_id}/hangup", dependencies=[Depends(api_client)])
async def supervisor_hangup(request: Request, call_id: str, body: SupervisorAction) -> JSONResponse:
    """A supervisor's "hang up"."""
    rt = runtime_of(request)
    _check_call_id(call_id)
    return _routed(call_id, await rt.calls.route(call_id, Supervise("hangup", body.user)))


@router.post("/api/reload")
async def reload(request: Request) -> dict[str, Any]:
    rt = await api_client(request)
    try:
        return await rt.reload()
    except ConfigError as exc:
        raise HttpError(422, "invalid config: nothing reloaded", "\n".join(map(str, exc.problems))) from None


def _routed(call_id: str, worker: str | None) -> JSONResponse:
    if worker is None:
        raise HttpError(409, "the call is not live", call_id)
    return JSONResponse({"ok": True, "call_id": call_id, "worker": worker}, status_code=202)


def _check_call_id(call_id: str) -> None:
    """A call id from a URL: one we could have minted, or a 400 (ids name files: nothing else passes)."""
    if not is_call_id(call_id):
        log.warning("refused a malformed call id %r", call_id[:64])
        raise HttpError(400, "malformed call id", f"a call id matches {CALL_ID_PATTERN}")


def _json_bytes(value: Any) -> bytes:
    """JSON as FastAPI's JSONResponse writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
