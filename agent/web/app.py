"""The ASGI app: middleware, JSON errors, and the routers of each surface, assembled.

Surfaces: each carrier's routes (agent/telephony/carriers.py: PIOPIY's webhooks, and the stream socket
of agent/telephony/socket.py served with its link), the call API (api.py), the live feed (live.py),
health and metrics (health.py), the dashboard (agent/dashboard/). Bad input gets a 4xx with a JSON
error that says what is wrong (errors.py); nothing a caller or PIOPIY sends can produce a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent.config.settings import Settings
from agent.dashboard.routes import install as install_dashboard
from agent.telephony import carriers
from agent.web import api, health, live
from agent.web.client_address import ClientAddressMiddleware, TrustedProxies
from agent.web.errors import install_error_handlers
from agent.web.url_guard import NulGuard
from agent.worker.runtime import Runtime
from agent.worker.speech_models import SpeechModels


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, models: SpeechModels | None = None
) -> FastAPI:
    """The ASGI app. Pass a started Runtime to share one between apps (tests); else it starts with the app,
    loading speech models through `models` (default: the installed ones, agent/worker/speech_models.py)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        app.state.runtime = runtime or await Runtime.start(settings, models)
        if own:  # workers of the previous release forward PIOPIY's event itself; drop this with them
            app.state.runtime.calls.decode_event = carriers.forwarded_event_news
        try:
            yield
        finally:
            if own:
                await app.state.runtime.stop()

    app = FastAPI(title="Hotline", version="0.1.0", lifespan=lifespan)
    app.add_middleware(NulGuard)  # a 400 before any route: no store holds a NUL (agent/web/url_guard.py)
    # Client addresses as our balancers saw them, never as clients claim (agent/web/client_address.py).
    app.add_middleware(
        ClientAddressMiddleware, proxies=TrustedProxies(settings.service.server.trusted_proxies)
    )
    install_error_handlers(app)
    install_dashboard(app)
    # In this order the OpenAPI spec lists the paths as it always has (the fuzz tests walk it).
    for router in (live.router, health.router, *carriers.ROUTERS, api.router):
        app.include_router(router)
    return app
