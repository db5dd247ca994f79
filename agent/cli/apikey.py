"""`hotline apikey`: add, list and revoke the named API keys that open /api/* and /metrics.

    hotline apikey add grafana        # prints the new key once; the store keeps only its hash
    hotline apikey list               # names, when made, revoked or not (never a key)
    hotline apikey revoke grafana     # refused at once by every worker sharing the store
    hotline apikey new                # a key for HOTLINE_API_KEYS=name:key (nothing stored)

Keys live in the service's store (config.yaml's storage URL), so every worker sees the same keys.
Exit status: 0, or 1 for a name taken, unknown, already revoked or set in the environment instead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from typing import Any

from agent.config.settings import Settings
from agent.records.access_store import AccessStore, NameTaken
from agent.records.store import Store
from agent.web.api_keys import NAME, key_hash, new_api_key, parse_env_keys


def add_parser(sub: Any) -> None:
    """The `apikey` subcommand and its own subcommands."""
    apikey = sub.add_parser("apikey", help="API keys for /api/* and /metrics: add, list, revoke")
    commands = apikey.add_subparsers(dest="apikey_command", required=True)
    add = commands.add_parser("add", help="make a key; it is printed once, the store keeps its hash")
    add.add_argument("name", type=key_name, help="who or what uses it (letters, digits and _.@-)")
    commands.add_parser("list", help="the keys by name, with when they were made or revoked")
    revoke = commands.add_parser("revoke", help="refuse a key from now on, on every worker")
    revoke.add_argument("name", type=key_name)
    commands.add_parser("new", help="print a fresh key for HOTLINE_API_KEYS (stores nothing)")


def key_name(text: str) -> str:
    """An argparse type: a valid key name."""
    if not NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: 1 to 64 letters, digits and _.@- only")
    return text


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out `hotline apikey …`."""
    if args.apikey_command == "new":
        print(new_api_key())
        return 0
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    env_name = settings.service.security.api_keys_env
    try:
        from_env = parse_env_keys(os.environ.get(env_name, ""), env_name)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        from_env = {}
    store = Store(settings.service.storage.url, base_dir=settings.base_dir)
    access = AccessStore(store)
    await access.init()
    try:
        if args.apikey_command == "add":
            return await _add(access, args.name, from_env, env_name)
        if args.apikey_command == "revoke":
            return await _revoke(access, args.name, from_env, env_name)
        return await _list(access, from_env, env_name)
    finally:
        await store.close()


async def _add(access: AccessStore, name: str, from_env: dict[str, str], env_name: str) -> int:
    if name in from_env:
        print(f"{name} is a key of {env_name} already: choose another name", file=sys.stderr)
        return 1
    key = new_api_key()
    try:
        await access.add_api_key(name, key_hash(key), time.time())
    except NameTaken:
        print(f"a key named {name} exists: revoke it first, or choose another name", file=sys.stderr)
        return 1
    print(key)
    print(f"API key {name}: send it as `Authorization: Bearer <key>`. It is shown only now.", file=sys.stderr)
    return 0


async def _revoke(access: AccessStore, name: str, from_env: dict[str, str], env_name: str) -> int:
    if await access.revoke_api_key(name, time.time()):
        print(f"revoked {name}: every worker refuses it from now on")
        return 0
    if name in from_env:
        print(f"{name} is set in {env_name}: remove it there and restart the workers", file=sys.stderr)
    else:
        print(f"no active key named {name} (see `hotline apikey list`)", file=sys.stderr)
    return 1


async def _list(access: AccessStore, from_env: dict[str, str], env_name: str) -> int:
    keys = await access.api_keys()
    if not keys and not from_env:
        print("no API keys yet: `hotline apikey add NAME`")
        return 0
    rows = [["name", "made", "state"]]
    for key in keys:
        revoked = key["revoked_at"]
        rows.append(
            [key["name"], _when(key["created_at"]), f"revoked {_when(revoked)}" if revoked else "active"]
        )
    rows += [[name, "-", f"active (from {env_name})"] for name in sorted(from_env)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
