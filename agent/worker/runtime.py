"""What one worker process shares between its calls: config, store, secrets, models, live sessions."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import openai

from agent.config.service import ServerConfig
from agent.config.settings import Settings
from agent.dashboard.auth import DashboardSessions, SessionSigner
from agent.dialogue.base import CallContext, Dialogue
from agent.dialogue.llm import LLMDialogue, make_client
from agent.dialogue.scripted import ScriptedDialogue, ToolRunner
from agent.dialogue.tools import ToolBox, outbound_client
from agent.escalation.notify import Notifier
from agent.escalation.rules import CompiledRule, compile_rules
from agent.records.access_store import AccessStore
from agent.records.recent_calls import RecentCalls
from agent.records.record_writer import RecordWriter
from agent.records.recordings import RecordingFinisher
from agent.records.retention import start_retention, stop_retention
from agent.records.store import Store
from agent.security import AddressList, FailureLimiter, StreamTokens, resolve_secret
from agent.telephony.unstreamed import start_sweep, stop_sweep
from agent.web.api_keys import ApiKeys, parse_env_keys
from agent.worker.bus import Bus
from agent.worker.cluster import Cluster, default_worker_id
from agent.worker.listen import ListenHub
from agent.worker.live_calls import LiveCalls
from agent.worker.logs import NO_CALL, current_call
from agent.worker.loop_lag import LoopLagMonitor
from agent.worker.metrics import Metrics
from agent.worker.recovery import Incarnation, recovery_loop, stop_recovery
from agent.worker.reload import reload
from agent.worker.speech_models import CallTranscriber, LocalSpeechModels, SpeechModels
from pipelines.executor import ModelExecutor
from pipelines.phrase_cache import PhraseCache
from pipelines.tts import Synthesizer

log = logging.getLogger(__name__)

BACKGROUND_GRACE_S = 5.0
"""At shutdown, how long notifications still being sent may take."""
RECORD_FLUSH_S = 10.0
"""At shutdown, how long record writes kept while the store was down may still take."""


@dataclass
class Runtime:
    """Process-wide services. Models load once here; every call of the process shares them."""

    settings: Settings
    store: Store
    tokens: StreamTokens
    webhook_secret: str
    executor: ModelExecutor
    phrases: dict[str, PhraseCache]
    synths: dict[str, Synthesizer]
    transcribers: dict[str, CallTranscriber]
    recordings_dir: Path
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    loop_lag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    bus: Bus = field(default_factory=Bus)
    listen: ListenHub = field(default_factory=ListenHub)
    """Supervisors' listen-in: live call audio to the dashboard."""
    calls: LiveCalls = field(init=False)
    """This process's live calls and the orders run on them."""
    tool_http: httpx.AsyncClient = field(init=False)
    """One connection pool for every call's HTTP tools and notifications; it keeps no cookies."""
    file_server: ServerConfig | None = None
    """The server settings as config.yaml gave them at start-up (reload compares with these)."""
    rules: dict[str, list[CompiledRule]] = field(default_factory=dict)
    """Each bot's escalation rules, compiled once."""
    voices: dict[tuple[str, str], tuple[Synthesizer, PhraseCache]] = field(default_factory=dict)
    """(bot, language) → the voice and phrase cache of another language the bot answers in."""
    llm: openai.AsyncOpenAI | None = None
    """The LLM endpoint's client, shared by all calls; None: bots answer from their YAML scripts."""
    notifier: Notifier = field(init=False)
    """Sends `notify` actions' webhooks over the tools' connection pool."""
    metrics: Metrics = field(init=False)
    """This process's Prometheus metrics (its own registry), served at /metrics."""
    writer: RecordWriter = field(init=False)
    """Every call's record writes, kept and retried in order while the store is down."""
    recordings: RecordingFinisher = field(init=False)
    """Turns ended calls' raw parts into WAVs, retrying while the disk refuses (records/recordings.py)."""
    recent: RecentCalls = field(default_factory=RecentCalls)
    """Calls answered here lately, known without the store (answered while it was away, say)."""
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    """Work that may outlive its call (webhook notifications); waited for at shutdown."""
    cluster: Cluster | None = None
    """The other workers (Redis): None when this worker runs alone."""
    retention: asyncio.Task[None] | None = None
    """Deletes expired recordings hourly (agent/records/retention.py); None: recordings are kept forever."""
    incarnation: Incarnation = field(default_factory=lambda: Incarnation(default_worker_id()))
    """This start of this worker, kept in each call's `meta.served_by` (agent/worker/recovery.py)."""
    recovery: asyncio.Task[None] | None = None
    """Finishes calls left active by workers that died (agent/worker/recovery.py)."""
    unstreamed: asyncio.Task[None] | None = None
    """Ends calls whose stream token expired before their stream connected (agent/telephony/unstreamed.py)."""
    auth_failures: FailureLimiter = field(init=False)
    """Wrong secrets and stream tokens per client address (security.max_failed_auth)."""
    platform: AddressList = field(init=False)
    """Who may post PIOPIY webhooks and open streams (security.platform_ips; empty: anyone)."""
    access: AccessStore = field(init=False)
    """API keys and dashboard sessions, in the store shared by the workers."""
    api_keys: ApiKeys = field(init=False)
    """Who may use /api/* and /metrics (security.api_keys_env and `hotline apikey`)."""
    dashboard_sessions: DashboardSessions = field(init=False)
    """Dashboard logins: cookies signed with the session secret, open while the store says so."""

    def __post_init__(self) -> None:
        self.calls = LiveCalls(self.listen)
        self.tool_http = outbound_client(env_proxy=self.settings.service.outbound_http.env_proxy)
        self.notifier = Notifier(self.tool_http)
        self.metrics = Metrics(self)
        self.writer = RecordWriter(self.store)
        self.recordings = RecordingFinisher(self.writer, self.recordings_dir)
        self.recordings.is_live = self.calls.sessions.__contains__
        security = self.settings.service.security
        self.auth_failures = FailureLimiter(security.max_failed_auth, security.failed_auth_window_s)
        self.platform = AddressList(security.platform_ips)
        self.access = AccessStore(self.store)
        self.api_keys = ApiKeys(
            parse_env_keys(os.environ.get(security.api_keys_env, ""), security.api_keys_env), self.access
        )
        session_secret = resolve_secret(
            security.session_secret_env, self.settings.path(self.settings.service.storage.data_dir)
        )
        self.dashboard_sessions = DashboardSessions(SessionSigner.from_secret(session_secret), self.access)

    @classmethod
    async def start(cls, settings: Settings, models: SpeechModels | None = None) -> Runtime:
        """Open the store, resolve secrets, load voices and pre-synthesize every bot's fixed phrases.

        `models` loads the voices and transcribers: the installed piper and Whisper models by default
        (`LocalSpeechModels`); the load benchmark passes stand-ins (agent/worker/speech_models.py).
        """
        models = models or LocalSpeechModels()
        service = settings.service
        data_dir = settings.path(service.storage.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(service.storage.url, base_dir=settings.base_dir)
        await store.init()
        await AccessStore(store).init()
        tokens = StreamTokens(
            resolve_secret(service.security.stream_secret_env, data_dir).encode(),
            service.security.stream_token_ttl_s,
        )
        webhook_secret = resolve_secret(service.security.webhook_secret_env, data_dir)
        # Each call's model work is its own on the pool: one job at a time per call while others wait.
        executor = ModelExecutor(max_workers=2, owner_of=call_of_context)
        started = time.perf_counter()
        phrases: dict[str, PhraseCache] = {}
        synths: dict[str, Synthesizer] = {}
        transcribers: dict[str, CallTranscriber] = {}
        voices: dict[tuple[str, str], tuple[Synthesizer, PhraseCache]] = {}
        for name, bot in settings.bots.items():
            synths[name] = synth = await models.voice(bot.voice, executor)
            cache = PhraseCache(synth, bot.stream.voice_quality)
            await cache.warm(bot.fixed_phrases(), executor)
            phrases[name] = cache
            for code, spec in bot.languages.voices.items():  # each language the bot answers in
                voice = await models.voice(spec, executor)
                voices[(name, code)] = (voice, PhraseCache(voice, bot.stream.voice_quality))
                await voices[(name, code)][1].warm(bot.language_phrases(code), executor)
            # Models load once per process (cached by path); each bot gets a transcriber at its call rate.
            transcribers[name] = await models.transcriber(name, bot, executor, data_dir)
            # One real decode now (the bot's own greeting, at the call rate): the first caller turn
            # then pays no first-run cost (buffer allocation, lazy initialisation in CTranslate2).
            greeting = cache.get(bot.greeting)
            if greeting is not None:
                warm = await transcribers[name].transcribe(greeting)
                log.info("bot %s: ASR warmed in %.0f ms (%r)", name, warm.asr_ms, warm.text[:40])
        log.info(
            "models loaded and %d bots' phrases cached in %.2fs", len(phrases), time.perf_counter() - started
        )
        if service.llm.base_url is None:
            log.info("no LLM endpoint configured: bots answer from their YAML scripts")
        else:
            log.info("dialogue: LLM %s at %s", service.llm.model, service.llm.base_url)
        recordings = settings.path(service.storage.recordings_dir)
        recordings.mkdir(parents=True, exist_ok=True)
        runtime = cls(
            settings, store, tokens, webhook_secret, executor, phrases, synths, transcribers, recordings
        )
        runtime.rules = {name: compile_rules(bot) for name, bot in settings.bots.items()}
        runtime.voices = voices
        runtime.file_server = service.server.model_copy()
        if service.llm.base_url is not None:
            runtime.llm = make_client(service.llm)
        runtime.loop_lag.start()
        runtime.retention = start_retention(store, service.storage.retention_days, recordings)
        if service.cluster.redis_url:
            worker = service.cluster.worker_id or default_worker_id()
            runtime.cluster = await Cluster.connect(
                service.cluster.redis_url, worker, runtime.bus.deliver, runtime.calls.execute
            )
            if runtime.cluster is not None:
                runtime.calls.cluster = runtime.cluster
                runtime.bus.forward = runtime.cluster.forward
                runtime.listen.remote = runtime.cluster.forward_audio
        runtime.incarnation = Incarnation(service.cluster.worker_id or default_worker_id())
        runtime.recovery = asyncio.create_task(
            recovery_loop(
                store,
                recordings,
                runtime.incarnation,
                runtime.cluster,
                alone=not service.cluster.redis_url,
                finisher=runtime.recordings,
            ),
            name="call-recovery",
        )
        runtime.unstreamed = start_sweep(
            store, service.security.stream_token_ttl_s, runtime.metrics.call_ended
        )
        return runtime

    def new_dialogue(self, ctx: CallContext, toolbox: ToolBox, *, run_tool: ToolRunner) -> Dialogue:
        """A call's dialogue: the LLM when an endpoint is configured, else the bot's YAML script."""
        if self.llm is not None:
            return LLMDialogue(
                ctx, self.settings.service.llm, client=self.llm, toolbox=toolbox, run_tool=run_tool
            )
        return ScriptedDialogue(ctx, run_tool=run_tool)

    def voice(self, bot: str, language: str) -> tuple[Synthesizer, PhraseCache]:
        """The synthesizer and phrase cache that speak `language` for a bot (else the bot's own voice)."""
        return self.voices.get((bot, language)) or (self.synths[bot], self.phrases[bot])

    async def stop(self, *, deadline_s: float = 10.0) -> None:
        """Let live calls end (up to a deadline), then close them and release everything."""
        self.draining = True
        await self.calls.wait_idle(deadline_s)
        for session in list(self.calls.sessions.values()):
            await session.close("shutdown")
        if self.background:  # notifications still on their way get a few seconds
            _, late = await asyncio.wait(set(self.background), timeout=BACKGROUND_GRACE_S)
            for task in late:
                task.cancel()
        await stop_retention(self.retention)
        await stop_recovery(self.recovery)
        await self.recordings.stop()  # raw parts still waiting stay for recovery at the next start
        await stop_sweep(self.unstreamed)
        if self.cluster is not None:
            await self.cluster.close()
        await self.loop_lag.stop()
        await self.tool_http.aclose()
        if self.llm is not None:
            await self.llm.close()
        await self.writer.flush(RECORD_FLUSH_S)  # what was kept while the store was down
        await self.store.close()
        self.executor.shutdown()

    async def reload(self) -> dict[str, Any]:
        """Re-read config.yaml and the bots' YAML without dropping a call (agent/worker/reload.py);
        raises ConfigError and changes nothing when they are invalid."""
        done = await reload(
            self.settings,
            file_server=self.file_server,
            phrases=self.phrases,
            rules=self.rules,
            executor=self.executor,
            calls=self.calls,
        )
        return done.as_json()

    def in_background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run work that must not hold a call up and may outlive it; its failure is logged."""
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)

    def refusal(self, host: str | None, *, platform: bool) -> str | None:
        """Why a client must be turned away before its credentials are even checked: `too_many_failures`
        (it sent wrong secrets or tokens too often lately), `not_platform` (a PIOPIY surface and the
        address is not in `security.platform_ips`); None: go on."""
        client = host or "unknown"
        if self.auth_failures.blocked(client):
            return "too_many_failures"
        if platform and not self.platform.allows(host):
            return "not_platform"
        return None

    def auth_failed(self, host: str | None, surface: str) -> None:
        """A wrong secret or stream token: counted per address, and in /metrics."""
        self.auth_failures.failed(host or "unknown")
        self.metrics.error("-", "auth", surface)

    def stream_url(
        self, *, call_id: str, bot: str, from_number: str, to_number: str, exp: int | None = None
    ) -> tuple[str, int]:
        """The ws_url PIOPIY opens for this call, carrying a signed, expiring token, and its expiry."""
        return stream_url(
            self.settings.service.server.ws_base,
            self.tokens,
            call_id=call_id,
            bot=bot,
            from_number=from_number,
            to_number=to_number,
            exp=exp,
        )


def stream_url(
    ws_base: str,
    tokens: StreamTokens,
    *,
    call_id: str,
    bot: str,
    from_number: str,
    to_number: str,
    exp: int | None = None,
) -> tuple[str, int]:
    """ws_url with call id, numbers and an HMAC token bound to all of them + bot + expiry, and that
    expiry. With `exp` (a retried answer_url) the same URL as the first time, else a fresh one."""
    if exp is None:
        exp, token = tokens.issue(call_id, bot, from_number, to_number)
    else:
        token = tokens.sign(call_id, bot, exp, from_number, to_number)
    query = urlencode(
        {"call": call_id, "bot": bot, "from": from_number, "to": to_number, "exp": exp, "token": token}
    )
    return f"{ws_base}/stream?{query}", exp


def call_of_context() -> str | None:
    """The call the running task works for (set by `for_call`), None outside any call."""
    call_id = current_call.get()
    return None if call_id == NO_CALL else call_id


def new_call_id() -> str:
    """Our own call id (the platform's cmiuuid is stored beside it)."""
    return "c_" + uuid.uuid4().hex
