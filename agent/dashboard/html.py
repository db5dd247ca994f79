"""Small HTML builders: the layout (templates/layout.html), tables, forms. Every value is escaped here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import cache
from html import escape
from pathlib import Path
from string import Template
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


@cache
def _layout() -> Template:
    return Template((TEMPLATES / "layout.html").read_text())


def e(value: Any) -> str:
    """A value as escaped text ('' for None)."""
    return "" if value is None else escape(str(value), quote=True)


def page(title: str, body: str, *, user: str | None = None, csrf: str = "", flash: str = "") -> str:
    """A whole page: `body` is HTML already escaped by the caller."""
    nav = ""
    if user is not None:
        nav = (
            '<nav><a href="/dashboard">Live calls</a> <a href="/dashboard/calls">Past calls</a> '
            f'<span class="user">{e(user)}</span> '
            f'<form method="post" action="/dashboard/logout" class="inline">{csrf_field(csrf)}'
            '<button type="submit">Log out</button></form></nav>'
        )
    flash_html = f'<p class="flash">{e(flash)}</p>' if flash else ""
    return _layout().substitute(title=e(title), nav=nav, flash=flash_html, body=body)


def csrf_field(token: str) -> str:
    """The hidden CSRF input of a form."""
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, id_: str = "") -> str:
    """A table; cells are HTML already escaped by the caller."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{e(id_)}"' if id_ else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def link(href: str, text: Any) -> str:
    """An anchor with escaped href and text."""
    return f'<a href="{e(href)}">{e(text)}</a>'


def sparkline(values: Sequence[float], *, width: int = 160, height: int = 32) -> str:
    """Values in -1..1 as a small inline SVG line (sentiment per caller turn)."""
    points = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not points:
        return '<span class="muted">no sentiment yet</span>'
    pad = 4  # room for the dots at the edges
    step = (width - 2 * pad) / max(len(points) - 1, 1)
    xy = [(pad + i * step, pad + (1 - (max(-1.0, min(1.0, v)) + 1) / 2) * (height - 2 * pad)) for i, v in
          enumerate(points)]  # fmt: skip
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"><title>{v:+.2f}</title></circle>'
        for (x, y), v in zip(xy, points, strict=True)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="sentiment per turn"><line x1="0" y1="{height / 2}" x2="{width}" y2="{height / 2}" '
        f'class="zero"/><polyline points="{coords}"/>{dots}</svg>'
        f' <span class="muted">last {points[-1]:+.2f}</span>'
    )


def duration(seconds: float | None) -> str:
    """`m:ss`."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    return f"{s // 60}:{s % 60:02d}"
