"""Tools a bot may use: the built-in call actions and the HTTP backends declared in its YAML.

The LLM is offered all of them as OpenAI function tools; the script calls the HTTP ones by name.
The model never dials a number: `transfer_to_department` takes a department name from an enum of the
bot's departments, checked again here when it is called. HTTP tools are called with validated,
URL-encoded arguments (a path placeholder is one whole segment: `/` encoded, `.`, `..` and empty
refused), header secrets come from environment variables, and every failure becomes a `ToolError` with
a short kind the caller can act on (and no secret in its message). Cookies a backend sets are kept for
the rest of that call only: the shared client has no cookie jar, each call's toolbox its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from http.cookiejar import CookiePolicy
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlsplit

import httpx
from jsonschema import Draft202012Validator

from agent.config.actions import BUILTIN_TOOLS
from agent.config.bot import BotConfig, HttpTool
from agent.dialogue.base import DialogueAction
from agent.dialogue.scripted import TemplateError, render

log = logging.getLogger(__name__)

ToolErrorKind = Literal[
    "timeout", "http_status", "bad_args", "bad_response", "unreachable", "unknown_tool", "missing_env"
]


class ToolError(Exception):
    """A tool call that could not be done; `kind` says which way it failed, `status` the HTTP status."""

    def __init__(self, kind: ToolErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: ToolErrorKind = kind
        self.message = message
        self.status = status


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class _NoCookies(CookiePolicy):
    """A cookie policy that keeps and sends nothing."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


def outbound_client(*, env_proxy: bool) -> httpx.AsyncClient:
    """The worker's client for HTTP tools and notifications: one connection pool, no cookie jar (one
    caller's cookies must never reach another's requests), and proxies from the environment only when
    `outbound_http.env_proxy` says so."""
    if env_proxy:
        client = httpx.AsyncClient(trust_env=True)
    else:
        # An explicit transport takes no proxy from the environment; its CA bundle settings
        # (SSL_CERT_FILE, SSL_CERT_DIR) still apply.
        client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(trust_env=True), trust_env=False)
    # On the client's own jar: httpx copies a jar passed as `cookies=` into a default one.
    client.cookies.jar.set_policy(_NoCookies())
    return client


def _filled_url(template: str, encoded: Mapping[str, str]) -> str:
    """`template` with each `{name}` replaced by its percent-encoded value. A value filling a whole path
    segment as `.`, `..` or nothing would move the request to another resource (`/accounts/../balance`
    is `/balance` once normalized): ToolError("bad_args") instead."""
    # Render marks first, so the path's segments can be told apart from the values put into them.
    marks = {name: f"\ue000{i}\ue001" for i, name in enumerate(encoded)}  # never in an encoded value
    marked = render(template, marks)

    def unmark(text: str) -> str:
        for name, mark in marks.items():
            text = text.replace(mark, encoded[name])
        return text

    for segment in urlsplit(marked).path.split("/"):
        if "\ue000" in segment and unmark(segment) in ("", ".", ".."):
            names = ", ".join(name for name, mark in marks.items() if mark in segment)
            value = unmark(segment)
            shown = repr(value) if value else "empty"
            raise ToolError("bad_args", f"{names} cannot be {shown} in the URL path")
    return unmark(marked)


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


class ToolBox:
    """One bot's tools: their OpenAI definitions, the call actions they stand for, and the HTTP calls.

    `run` fits the scripted dialogue's `run_tool` callback. Pass a shared `http` client to pool
    connections across calls (it must keep no cookies: see `outbound_client`); without one the toolbox
    makes its own, closed by `aclose()`. One toolbox serves one call: the cookies its backends set are
    sent back to them during that call, and forgotten with the toolbox.
    """

    def __init__(
        self,
        bot: BotConfig,
        *,
        http: httpx.AsyncClient | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.bot = bot
        self.env = env
        self._tools = {tool.name: tool for tool in bot.tools}
        self._validators = {tool.name: Draft202012Validator(tool.parameters) for tool in bot.tools}
        self._own_http = http is None
        self._http = http if http is not None else outbound_client(env_proxy=False)
        self.cookies = httpx.Cookies()
        """This call's cookies from its tool backends."""

    async def aclose(self) -> None:
        """Close the HTTP client if the toolbox made it."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------ definitions

    def specs(self) -> list[dict[str, Any]]:
        """OpenAI function-tool definitions: the built-in call actions, then the bot's HTTP tools."""
        specs: list[dict[str, Any]] = []
        departments = self.bot.departments
        if departments:
            described = "; ".join(
                f"{name}: {dept.description}" if dept.description else name
                for name, dept in departments.items()
            )
            specs.append(
                _function(
                    "transfer_to_department",
                    "Hand the caller to a human in one of these departments. "
                    f"Departments: {described}. Use only a department name, never a phone number.",
                    {
                        "type": "object",
                        "properties": {
                            "department": {
                                "type": "string",
                                "enum": list(departments),
                                "description": "The department name.",
                            }
                        },
                        "required": ["department"],
                        "additionalProperties": False,
                    },
                )
            )
        specs.append(
            _function(
                "end_call",
                "Hang up, after saying goodbye, when the caller is done or asks to end the call.",
                {
                    "type": "object",
                    "properties": {"reason": {"type": "string", "description": "Why the call ends."}},
                    "required": ["reason"],
                },
            )
        )
        specs.append(
            _function(
                "play_hold_music",
                "Play hold music while the caller waits, e.g. when they ask for a moment.",
                {"type": "object", "properties": {}},
            )
        )
        specs += [_function(tool.name, tool.description, tool.parameters) for tool in self.bot.tools]
        return specs

    def is_action(self, name: str) -> bool:
        """A built-in call action (transfer, hang up, hold music), not an HTTP tool."""
        return name in BUILTIN_TOOLS

    def is_http(self, name: str) -> bool:
        """One of the bot's HTTP tools."""
        return name in self._tools

    def filler_for(self, name: str) -> str | None:
        """What to say while an HTTP tool runs: its own filler, else the bot's; None for other names."""
        tool = self._tools.get(name)
        if tool is None:
            return None
        return tool.filler or self.bot.phrases.filler

    # ------------------------------------------------------------------------------ call actions

    def action_for(self, name: str, args: Mapping[str, Any], reason: Mapping[str, Any]) -> DialogueAction:
        """The call action a built-in tool call stands for; ToolError for an unknown tool or department."""
        why = {**reason, "tool": name}
        if name == "transfer_to_department":
            department = self._department(args.get("department"))
            return DialogueAction(kind="transfer", department=department, reason=why)
        if name == "end_call":
            said = args.get("reason")
            return DialogueAction(kind="hangup", reason={**why, "why": said} if said else why)
        if name == "play_hold_music":
            return DialogueAction(kind="hold_music", reason=why)
        raise ToolError("unknown_tool", f"{name!r} is not a call action")

    def _department(self, asked: Any) -> str:
        known = ", ".join(self.bot.departments) or "none"
        if isinstance(asked, str):
            # Forgive case and spaces ("Billing", "customer care"), nothing else: a number never matches.
            key = "_".join(asked.strip().lower().split())
            if key in self.bot.departments:
                return key
        raise ToolError("bad_args", f"there is no department {asked!r}; departments: {known}")

    # ------------------------------------------------------------------------------ HTTP tools

    async def run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call an HTTP tool; returns args + the response fields + `result`, its phrased result line."""
        tool = self._tools.get(name)
        if tool is None:
            what = "a call action, not an HTTP tool" if name in BUILTIN_TOOLS else "not a tool of this bot"
            raise ToolError("unknown_tool", f"{name!r} is {what}")
        self._check_args(tool, args)
        url, query = self._url(tool, args)
        headers = self._headers(tool)
        started = time.monotonic()
        try:
            async with asyncio.timeout(tool.timeout_s):
                if tool.method == "POST":
                    request = self._http.build_request(
                        "POST", url, json=args, headers=headers, timeout=tool.timeout_s
                    )
                else:
                    # The other arguments join the template's own query (httpx's `params=` replaces it).
                    merged = httpx.URL(url).copy_merge_params(query)
                    request = self._http.build_request("GET", merged, headers=headers, timeout=tool.timeout_s)
                self.cookies.set_cookie_header(request)
                response = await self._http.send(request)
                self.cookies.extract_cookies(response)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolError("timeout", f"{name}: no answer within {tool.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ToolError(
                "unreachable", f"{name}: cannot reach the backend ({type(exc).__name__})"
            ) from None
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log.info("tool %s: HTTP %d in %d ms", name, response.status_code, elapsed_ms)
        if response.status_code >= 400:
            raise ToolError(
                "http_status",
                f"{name}: the backend answered HTTP {response.status_code}",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ToolError("bad_response", f"{name}: the backend did not answer with a JSON object")
        fields = {**args, **body}
        try:
            result = render(tool.result, fields)
        except (TemplateError, ValueError, IndexError) as exc:
            raise ToolError(
                "bad_response", f"{name}: the answer lacks what the result line needs ({exc})"
            ) from None
        return {**fields, "result": result}

    def _check_args(self, tool: HttpTool, args: dict[str, Any]) -> None:
        errors = sorted(self._validators[tool.name].iter_errors(args), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "arguments"
            raise ToolError("bad_args", f"{tool.name}: {where}: {errors[0].message}")

    def _url(self, tool: HttpTool, args: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The URL with arguments filled in (URL-encoded); a GET sends the other arguments as a query."""
        try:
            url = _filled_url(tool.url, {k: quote(_as_text(v), safe="") for k, v in args.items()})
        except (TemplateError, ValueError, IndexError) as exc:
            raise ToolError("bad_args", f"{tool.name}: the URL needs argument {exc}") from None
        except ToolError as exc:
            raise ToolError("bad_args", f"{tool.name}: {exc.message}") from None
        query = {k: _as_text(v) for k, v in args.items() if f"{{{k}}}" not in tool.url}
        return url, query

    def _headers(self, tool: HttpTool) -> dict[str, str]:
        headers: dict[str, str] = {}
        for header, template in tool.headers.items():
            try:
                headers[header] = render(template, {"env": self.env})
            except TemplateError as exc:
                missing = str(exc.args[0]).removeprefix("env.")
                raise ToolError(
                    "missing_env",
                    f"{tool.name}: header {header} needs environment variable {missing}, which is not set",
                ) from None
            except (ValueError, IndexError):
                raise ToolError(
                    "missing_env", f"{tool.name}: header {header} is not a valid template"
                ) from None
        return headers
