"""What every config model shares: the `Strict` base, the phone-number normalizer, and name patterns."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

NAME = r"^[a-z][a-z0-9_]*$"
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def normalize_number(value: Any) -> str:
    """Phone numbers as digit strings: '+91 80-1234' and 91801234 both become '91801234'."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, int) and value < 0):
        raise ValueError(f"{value!r} is not a phone number")
    digits = re.sub(r"[\s\-().]", "", str(value)).lstrip("+")
    # ASCII digits only: str.isdigit() also passes '²' and other scripts' digits.
    if not re.fullmatch(r"[0-9]{3,16}", digits):
        raise ValueError(f"{value!r} is not a phone number (digits, optionally with a leading +)")
    return digits


def number_or_none(value: Any) -> str | None:
    """A number as a carrier sent it (int or string) as digits, or None when it is not a phone number
    (a withheld caller id, say)."""
    try:
        return normalize_number(value)
    except ValueError:
        return None
