"""The carriers this service speaks: the one module outside a carrier's folder that names it.

A carrier brings its routes (its webhooks and the stream socket served with its link) and, if it can
dial out, a `place_call` for `hotline call`. Adding a carrier: its folder under agent/telephony/ and
one entry here.
"""

from __future__ import annotations

from fastapi import APIRouter

from agent.telephony.piopiy import outbound as piopiy_outbound
from agent.telephony.piopiy import routes as piopiy_routes

ROUTERS: tuple[APIRouter, ...] = (piopiy_routes.router,)
"""Every carrier's routes, included by the app (agent/web/app.py)."""

forwarded_event_news = piopiy_routes.forwarded_event_news
"""A carrier event forwarded by a worker of the previous release (its raw body) as neutral news; drop it
once no such worker runs (agent/worker/commands.py, CarrierEvent)."""

place_call = piopiy_outbound.place_call
"""`hotline call`: dial a number and connect it to a bot (PIOPIY's REST API)."""
