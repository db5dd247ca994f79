"""Errors answered as JSON `{"error": ..., "detail": ...}`: HttpError, and the handlers that make every
failure (ours, the framework's, an unexpected one) answer in that shape."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_STATUSES = {s.value for s in HTTPStatus}


class HttpError(Exception):
    """An error answered as JSON `{"error": ..., "detail": ...}` with an HTTP status."""

    def __init__(self, status: int, error: str, detail: str = "", *, close: bool = False) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail
        self.close = close
        """Close the connection after answering (a body we stopped reading is still on its way)."""


def install_error_handlers(app: FastAPI) -> None:
    """Answer HttpError, invalid requests, framework errors and anything unexpected as JSON errors."""

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        headers = {"Connection": "close"} if exc.close else None
        return JSONResponse(
            {"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, unparsable bodies of typed routes: the same JSON shape as ours.
        error = HTTPStatus(exc.status_code).phrase.lower() if exc.status_code in _STATUSES else "error"
        body = {"error": error, "detail": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error", "detail": type(exc).__name__}, status_code=500)
