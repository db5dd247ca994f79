"""Stream tokens: bound to call id + bot + expiry, single use; generated secrets persist."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.security import StreamTokens, TokenError, is_call_id, resolve_secret, webhook_secret_ok

NOW = 1_800_000_000.0


@pytest.fixture
def tokens() -> StreamTokens:
    return StreamTokens(b"0123456789abcdef0123456789abcdef", ttl_s=60)


def test_valid_token_opens_once(tokens: StreamTokens) -> None:
    exp, token = tokens.issue("c_1", "support_desk", now=NOW)
    tokens.verify("c_1", "support_desk", str(exp), token, now=NOW + 1)
    with pytest.raises(TokenError, match="already used"):
        tokens.verify("c_1", "support_desk", str(exp), token, now=NOW + 2)


@pytest.mark.parametrize(
    ("call", "bot", "exp_delta", "token_edit", "reason"),
    [
        ("c_2", "support_desk", 0, None, "bad signature"),  # another call
        ("c_1", "order_line", 0, None, "bad signature"),  # another bot
        ("c_1", "support_desk", 3600, None, "bad signature"),  # stretched expiry
        ("c_1", "support_desk", 0, "x", "bad signature"),  # tampered token
        ("c_1", "support_desk", 0, "", "missing"),
    ],
)
def test_token_bound_to_call_bot_and_expiry(
    tokens: StreamTokens, call: str, bot: str, exp_delta: int, token_edit: str | None, reason: str
) -> None:
    exp, token = tokens.issue("c_1", "support_desk", now=NOW)
    presented = token if token_edit is None else (token[:-1] + token_edit if token_edit else "")
    with pytest.raises(TokenError, match=reason):
        tokens.verify(call, bot, exp + exp_delta, presented, now=NOW)


def test_expired_token(tokens: StreamTokens) -> None:
    exp, token = tokens.issue("c_1", "support_desk", now=NOW)
    with pytest.raises(TokenError, match="expired"):
        tokens.verify("c_1", "support_desk", exp, token, now=NOW + 61)


def test_malformed_expiry(tokens: StreamTokens) -> None:
    _, token = tokens.issue("c_1", "support_desk", now=NOW)
    with pytest.raises(TokenError, match="malformed"):
        tokens.verify("c_1", "support_desk", "soon", token, now=NOW)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        StreamTokens(b"short", ttl_s=60)


def test_webhook_secret_compare() -> None:
    assert webhook_secret_ok("abc", "abc")
    assert not webhook_secret_ok("abc", "abd")
    assert not webhook_secret_ok("abc", None)


def test_resolve_secret_env_then_generated_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TEST_SECRET", "from-env")
    assert resolve_secret("HOTLINE_TEST_SECRET", tmp_path) == "from-env"
    monkeypatch.delenv("HOTLINE_TEST_SECRET")
    first = resolve_secret("HOTLINE_TEST_SECRET", tmp_path)
    assert len(first) >= 32 and resolve_secret("HOTLINE_TEST_SECRET", tmp_path) == first
    mode = stat.S_IMODE(os.stat(tmp_path / "secrets" / "HOTLINE_TEST_SECRET").st_mode)
    assert mode == 0o600


def test_the_token_covers_the_numbers(tokens: StreamTokens) -> None:
    """The ws_url's `from` and `to` are signed: a URL whose numbers were changed opens nothing."""
    exp, token = tokens.issue("c_1", "support_desk", "919876543210", "918040001000", now=NOW)
    for caller, called in [("911111111111", "918040001000"), ("919876543210", "1"), ("", "")]:
        with pytest.raises(TokenError, match="bad signature"):
            tokens.verify("c_1", "support_desk", exp, token, caller, called, now=NOW)
    tokens.verify("c_1", "support_desk", exp, token, "919876543210", "918040001000", now=NOW)


def test_a_retried_answer_gets_the_same_url_and_this_process_knows_what_it_issued(
    tokens: StreamTokens,
) -> None:
    from agent.worker.runtime import stream_url

    url, exp = stream_url("ws://h", tokens, call_id="c_1", bot="b", from_number="91", to_number="92")
    again, same_exp = stream_url(
        "ws://h", tokens, call_id="c_1", bot="b", from_number="91", to_number="92", exp=exp
    )
    assert (again, same_exp) == (url, exp)
    assert tokens.issued_here("c_1") and not tokens.issued_here("c_2")
    assert not tokens.issued_here("c_1", now=exp + 1)  # expired: no longer a call of ours to vouch for


def test_call_ids_follow_the_platform_id_and_the_secret() -> None:
    ours, theirs = StreamTokens(b"0" * 32, 60), StreamTokens(b"1" * 32, 60)
    assert ours.call_id_for("u-1") == ours.call_id_for("u-1") != ours.call_id_for("u-2")
    assert ours.call_id_for("u-1") != theirs.call_id_for("u-1")  # not guessable without the secret
    assert is_call_id(ours.call_id_for("u-1"))
