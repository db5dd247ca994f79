"""Reload: re-read config.yaml and the bots' YAML while calls go on; what needs a restart is listed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from agent.config.service import ServerConfig
from agent.config.settings import Settings, load_settings
from agent.escalation.rules import CompiledRule, compile_rules
from agent.worker.live_calls import LiveCalls
from pipelines.executor import ModelExecutor
from pipelines.phrase_cache import PhraseCache

log = logging.getLogger(__name__)

RESTART_BOT_KEYS = ("voice", "asr_model", "asr_window_s", "language", "languages")
"""A bot's settings that need its models or voices loaded again."""


@dataclass(frozen=True)
class Reloaded:
    """What a reload did: bots that took their new files, and changes that wait for a restart."""

    reloaded: list[str]
    restart_needed: list[str]
    live_calls: int

    def as_json(self) -> dict[str, Any]:
        """The body of `POST /api/reload`."""
        return {
            "reloaded": self.reloaded,
            "restart_needed": self.restart_needed,
            "live_calls": self.live_calls,
        }


def restart_needed(old: Settings, new: Settings, file_server: ServerConfig | None) -> list[str]:
    """Changes that need models or sockets set up again: a bot added or removed, its voice, ASR model,
    sample rate or languages, or the server, storage and security settings."""
    restart: list[str] = []
    for name in sorted(set(new.bots) ^ set(old.bots)):
        restart.append(f"bot {name} {'added' if name in new.bots else 'removed'}")
    for name in sorted(set(new.bots) & set(old.bots)):
        before, bot = old.bots[name], new.bots[name]
        for key in RESTART_BOT_KEYS:
            if getattr(before, key) != getattr(bot, key):
                restart.append(f"bot {name}: {key}")
        if before.stream.voice_quality != bot.stream.voice_quality:
            restart.append(f"bot {name}: stream.voice_quality")
    if file_server is not None and file_server != new.service.server:
        restart.append("server")  # compared with the file as loaded (public_url may be set at run time)
    for key in ("storage", "security"):
        if getattr(old.service, key) != getattr(new.service, key):
            restart.append(key)
    return restart


async def reload(
    settings: Settings,
    *,
    file_server: ServerConfig | None,
    phrases: dict[str, PhraseCache],
    rules: dict[str, list[CompiledRule]],
    executor: ModelExecutor,
    calls: LiveCalls,
) -> Reloaded:
    """Re-read the files `settings` came from, without dropping a call.

    Raises ConfigError (file, line and key of each problem) and changes nothing when the new files are
    invalid. Otherwise new calls get the new bots; live calls keep their bot (they started with its
    script) but take the new escalation rules at their next turn. Changes listed by `restart_needed`
    take effect after a restart.
    """
    new = load_settings(settings.config_path)
    restart = restart_needed(settings, new, file_server)
    reloaded = [
        n for n in new.bots if n in settings.bots and not any(r.startswith(f"bot {n}") for r in restart)
    ]
    for name in reloaded:
        bot = new.bots[name]
        await phrases[name].warm(bot.fixed_phrases(), executor)
        settings.bots[name] = bot
        settings.files[name] = new.files[name]
        rules[name] = compile_rules(bot)
    settings.service.numbers = {
        number: bot for number, bot in new.service.numbers.items() if bot in settings.bots
    }
    settings.service.unknown_number = new.service.unknown_number
    settings.service.dashboard = new.service.dashboard  # users added or removed at once
    for session in calls.sessions.values():
        if session.bot_name in reloaded:
            session.take_rules(rules[session.bot_name])
    log.info("config reloaded: bots %s; restart needed for %s", reloaded, restart or "nothing")
    return Reloaded(reloaded, restart, len(calls.sessions))
