"""config.yaml: where the service listens, its secrets' names, storage, LLM, cluster, PIOPIY, numbers.

Every default lives here. Models forbid unknown keys so a typo is an error that names its file and key,
never a silently ignored setting.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import ENV_NAME, Strict, normalize_number

STORAGE_URL = r"^(sqlite|postgresql)(\+\w+)?://"
STORAGE_URL_HINT = "must be sqlite:///path.db or postgresql://user@host/db"
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_networks(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Trusted proxies as networks; ValueError names an entry that is not an address or a network, or
    one that trusts every address (any client could then choose the address it is counted under)."""
    networks = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        if network.prefixlen == 0:
            raise ValueError(f"{entry!r} trusts every address: list only your load balancers")
        networks.append(network)
    return tuple(networks)


class ServerConfig(Strict):
    """Where the service listens, and the URL PIOPIY uses to reach it."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL PIOPIY reaches us at; the stream ws_url is derived from it (https → wss).",
    )
    drain_timeout_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long live calls may go on before the worker closes them and exits "
        "(new calls get the fallback meanwhile). Keep Kubernetes' terminationGracePeriodSeconds above it.",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve GET /metrics without an API key (for scrapers that cannot send one; "
        "keep the port off the internet then). False: it needs an API key like /api/*.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of the load balancers in front of the workers (or "
        "HOTLINE_TRUSTED_PROXIES, comma-separated; it wins). A request from one of them is counted under "
        "the address the balancer appended to X-Forwarded-For; from anyone else, under its own address "
        "whatever it sends. Empty: trust no proxy.",
    )
    header_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="A request's line and headers must arrive within this many seconds of its first byte "
        "(or of the connection): slower clients get 408 and are disconnected.",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A request's body must arrive within this many seconds of its headers: 408, "
        "disconnected.",
    )
    keep_alive_timeout_s: int = Field(
        default=15,
        ge=1,
        le=300,
        description="An idle kept-alive connection is closed after this many seconds (longer than the "
        "balancer keeps idle connections to a worker, so it never reuses one we are closing).",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        proxy_networks(value)  # ValueError names the entry
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def ws_base(self) -> str:
        """ws:// or wss:// base for stream URLs."""
        return re.sub(r"^http", "ws", self.public_url, count=1)


class SecurityConfig(Strict):
    """Names of the environment variables holding secrets (never the secrets themselves), and limits."""

    webhook_secret_env: str = Field(
        default="HOTLINE_WEBHOOK_SECRET", pattern=ENV_NAME, description="PIOPIY's webhooks (/piopiy/*) only."
    )
    stream_secret_env: str = Field(default="HOTLINE_STREAM_SECRET", pattern=ENV_NAME)
    session_secret_env: str = Field(
        default="HOTLINE_SESSION_SECRET", pattern=ENV_NAME, description="Signs dashboard session cookies."
    )
    api_keys_env: str = Field(
        default="HOTLINE_API_KEYS",
        pattern=ENV_NAME,
        description="API keys for /api/* and /metrics as `name:key,name:key` (besides `hotline apikey add`).",
    )
    stream_token_ttl_s: int = Field(default=600, ge=10, le=86400)
    max_body_bytes: int = Field(default=65536, ge=1024)
    max_frame_bytes: int = Field(default=262144, ge=4096, description="Larger stream frames close with 1009.")
    platform_ips: list[str] = Field(
        default_factory=list,
        description="PIOPIY's addresses (IPs or CIDR networks) allowed to post webhooks (/piopiy/...) and "
        "open streams; empty: any address (the secret and the stream tokens still apply).",
    )
    max_failed_auth: int = Field(
        default=20, ge=1, description="Wrong secrets or stream tokens per address before it is refused."
    )
    failed_auth_window_s: float = Field(default=60.0, gt=0, description="... within this many seconds.")
    max_audio_lead_s: float | None = Field(
        default=2.0,
        ge=0.5,
        le=60.0,
        description="Caller audio may run this far ahead of the call's own clock (since its stream opened; "
        "room for network bursts). Beyond it the stream is read no faster than real time, so one flooding "
        "call cannot starve the others; recorded as a `stream/paced` event. null: no pacing (benchmarks).",
    )
    stream_idle_timeout_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="A stream that sends no frame for this long is closed (end reason `idle_timeout`).",
    )

    @field_validator("platform_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value


class StorageConfig(Strict):
    """Call records (SQLite file by default, PostgreSQL by URL) and where recordings go."""

    url: str = Field(
        default="sqlite:///var/hotline.db", description="or HOTLINE_STORAGE_URL (it wins over the file)."
    )
    data_dir: Path = Path("var")
    recordings_dir: Path = Path("var/recordings")
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Delete the recordings (WAV) of calls that ended more than this many days ago "
        "(checked hourly; the call records stay). None: keep them forever.",
    )
    max_text_frames: int = Field(
        default=20,
        ge=0,
        le=10000,
        description="Stream text frames (call UUID, JSON metadata, junk) kept in a call's record; the "
        "rest are counted in a `stream/text_truncated` event.",
    )
    max_text_bytes: int = Field(
        default=65536,
        ge=0,
        le=16 * 1024 * 1024,
        description="Bytes of stream text kept in a call's record; a frame over what is left is kept as "
        "a stub with its size.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(STORAGE_URL, value):
            raise ValueError(STORAGE_URL_HINT)
        return value


class LlmConfig(Strict):
    """An OpenAI-compatible endpoint; without base_url the bots run their YAML script."""

    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str = Field(default="HOTLINE_LLM_API_KEY", pattern=ENV_NAME)
    timeout_s: float = Field(default=10.0, gt=0)
    first_token_timeout_s: float = Field(default=2.0, gt=0)
    max_retries: int = Field(
        default=1, ge=0, le=3, description="Retries of a failed request, only before its first token."
    )
    context_tokens: int = Field(
        default=3000, ge=200, description="Budget for the messages sent (estimated at ~4 characters a token)."
    )
    max_tool_rounds: int = Field(
        default=3, ge=1, le=10, description="Model calls after tool results, per reply."
    )


class ClusterConfig(Strict):
    """Several workers behind one load balancer share live events, live calls and supervisor commands
    through Redis (records are shared through PostgreSQL). Without redis_url: one worker alone."""

    redis_url: str | None = Field(
        default=None,
        pattern=r"^rediss?://",
        description="e.g. redis://127.0.0.1:6379/0 (or HOTLINE_REDIS_URL).",
    )
    worker_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Default: host name and process id."
    )


class PiopiyConfig(Strict):
    """PIOPIY's REST API (outbound calls, call control). Base URLs are settings so tests reach a fake."""

    appid_env: str = Field(default="PIOPIY_APPID", pattern=ENV_NAME)
    secret_env: str = Field(default="PIOPIY_SECRET", pattern=ENV_NAME)
    rest_base_url: str = "https://rest.telecmi.com"
    action_base_url: str = "https://piopiy.telecmi.com"
    region: Literal["global", "ind"] = "global"


class OutboundHttpConfig(Strict):
    """How the bots' HTTP tools and `notify` webhooks reach their backends."""

    env_proxy: bool = Field(
        default=False,
        description="Go through the proxies HTTP_PROXY, HTTPS_PROXY, ALL_PROXY (and NO_PROXY) of the "
        "environment. False: always direct, whatever the environment says. Read at start-up.",
    )


class UnknownNumberConfig(Strict):
    """What a caller hears when PIOPIY sends a number no bot owns: a line, then a desk or a hangup."""

    say: str | None = "Sorry, this number is not in service right now."
    bridge_to: list[str] = Field(default_factory=list)
    ring_type: Literal["group"] | None = None
    timeout: int = Field(default=40, ge=1)

    @field_validator("bridge_to", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return [normalize_number(v) for v in value] if isinstance(value, list) else value


class DashboardConfig(Strict):
    """The supervisors' web dashboard (/dashboard): who may log in, and for how long."""

    users: dict[str, str] = Field(
        default_factory=dict,
        description="user name → password hash from `hotline passwd NAME`. No users: no dashboard (404).",
    )
    session_ttl_s: int = Field(default=43200, ge=60, le=30 * 86400)
    max_failed_logins: int = Field(default=5, ge=1, description="Per client address, within the window.")
    failed_login_window_s: int = Field(default=300, ge=1)

    @field_validator("users")
    @classmethod
    def _users(cls, value: dict[str, str]) -> dict[str, str]:
        for name, hashed in value.items():
            if not re.match(r"^[A-Za-z0-9_.@-]{1,64}$", name):
                raise ValueError(f"user name {name!r}: letters, digits and _.@- only")
            if not re.match(r"^pbkdf2_sha256\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$", hashed):
                raise ValueError(f"user {name!r}: not a hash from `hotline passwd` (pbkdf2_sha256$…)")
        return value


class ServiceConfig(Strict):
    """config.yaml."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    piopiy: PiopiyConfig = Field(default_factory=PiopiyConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    outbound_http: OutboundHttpConfig = Field(default_factory=OutboundHttpConfig)
    prompts_dir: Path = Path("prompts")
    numbers: dict[str, str] = Field(
        default_factory=dict, description="PIOPIY number → bot (prompts/<bot>.yaml)"
    )
    unknown_number: UnknownNumberConfig = Field(default_factory=UnknownNumberConfig)

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {normalize_number(k): v for k, v in value.items()}

    @model_validator(mode="after")
    def _env_overrides(self) -> ServiceConfig:
        # The endpoint may differ per deployment; an env var beats editing the file.
        if url := os.environ.get("HOTLINE_LLM_BASE_URL"):
            self.llm.base_url = url
        if url := os.environ.get("HOTLINE_REDIS_URL"):
            self.cluster.redis_url = url
        # The balancers' addresses belong to the deployment (compose, Kubernetes), not to the image's file.
        if proxies := os.environ.get("HOTLINE_TRUSTED_PROXIES"):
            entries = [e.strip() for e in proxies.split(",") if e.strip()]
            try:
                proxy_networks(entries)
            except ValueError as exc:
                raise ValueError(f"HOTLINE_TRUSTED_PROXIES: {exc}") from None
            self.server.trusted_proxies = entries
        # A PostgreSQL URL carries a password: containers take it from a secret, not from the file.
        if url := os.environ.get("HOTLINE_STORAGE_URL"):
            if not re.match(STORAGE_URL, url):  # never echo the URL: it may hold the password
                raise ValueError(f"HOTLINE_STORAGE_URL {STORAGE_URL_HINT}")
            self.storage.url = url
        return self
