"""Hostile inputs shared by the fuzzers: JSON of every shape, strings a database chokes on, bombs."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Strings that break storage or parsing: NUL (PostgreSQL text refuses it), lone surrogates (not UTF-8),
# over-long values (VARCHAR columns), format and SQL metacharacters, case games on PIOPIY's statuses.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
    st.text(st.sampled_from("\x00\x7f\u202e\ufeff'\"%{}\\\n\t;-"), max_size=12),
    st.integers(min_value=1, max_value=3000).map(lambda n: "9" * n),
    st.sampled_from(
        [
            "",
            " ",
            "hangup",
            "HANGUP",
            "STREAM_DISCONNECTED",
            "in_answered",
            "out_answered",
            "ringing",
            "'; DROP TABLE calls; --",
            "%s%s%s",
            "{0}{__class__}",
            "null",
            "NaN",
        ]
    ),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)

phone_like = st.one_of(
    st.integers(min_value=-10, max_value=10**16),
    st.from_regex(r"\+?[0-9 ()\-.]{0,20}", fullmatch=True),
    nasty_text,
)


def mutated(base: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A body of the right shape with some keys dropped, some replaced by any JSON, some added."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = dict(draw(base))
        keys = sorted(body)
        for key in draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=True)):
            if draw(st.booleans()):
                del body[key]
            else:
                body[key] = draw(json_values)
        body.update(draw(st.dictionaries(nasty_text, json_values, max_size=3)))
        return body

    return build()


def bomb(depth: int, kind: str) -> bytes:
    """Nested JSON as bytes: `[[[…]]]`, `{"a":{"a":…}}`, or unclosed."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth


def to_json(value: Any) -> bytes:
    """JSON as PIOPIY would send it (lone surrogates escaped as \\udxxx, so still valid JSON text)."""
    return json.dumps(value).encode()


def raw_bodies(shaped: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Webhook bodies: mostly near-valid JSON objects, then any JSON, junk bytes, bombs, odd literals."""
    return st.one_of(
        mutated(shaped).map(to_json),
        mutated(shaped).map(to_json),
        json_values.map(to_json),
        st.binary(max_size=300),
        st.builds(
            bomb, st.integers(min_value=1, max_value=120_000), st.sampled_from(["list", "dict", "open"])
        ),
        st.sampled_from(
            [
                b"",
                b"null",
                b"NaN",
                b"-Infinity",
                b'{"from": NaN, "to": Infinity, "cmiuuid": "x"}',
                b"1e999999",
                b'"\\ud800"',
                b'{"cmiuuid": "\\u0000", "status": "\\u0000", "dtmf": "1"}',
                b"\xef\xbb\xbf{}",
                b'{"a": 1, "a": 2}',
                b"x" * 70_000,
            ]
        ),
    )


content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/xml",
        "garbage",
    ]
)
