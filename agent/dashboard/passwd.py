"""`hotline passwd NAME`: print the `dashboard.users` line for a new dashboard user."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from agent.dashboard.auth import hash_password


def add_parser(sub: Any) -> None:
    """Register `passwd` on the `hotline` subcommands."""
    passwd = sub.add_parser("passwd", help="hash a dashboard password; paste the line under dashboard.users")
    passwd.add_argument("name", help="the user's login name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (first line)"
    )


def run(args: argparse.Namespace) -> int:
    """Read the password (twice at a terminal) and print `NAME: "<hash>"`."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 8:
        print("use at least 8 characters", file=sys.stderr)
        return 1
    print(f'{args.name}: "{hash_password(password)}"')
    return 0
