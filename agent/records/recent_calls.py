"""Calls this worker answered lately: call id ↔ PIOPIY's cmiuuid without a read of the store.

While the database is away, answer_url still answers (its writes are queued in the record writer), and
the call's stream socket, PIOPIY's events and keypad callbacks that follow need to know which call is
which: this worker remembers its calls for KEEP_S after their answer (long enough for the hangup event
of a long call). Bounded: the oldest are forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict

KEEP_S = 7200.0
MAX_CALLS = 10_000


class RecentCalls:
    """Call id → cmiuuid of calls answered in the last `keep_s` seconds (at most `limit`)."""

    def __init__(self, keep_s: float = KEEP_S, *, limit: int = MAX_CALLS) -> None:
        self.keep_s = keep_s
        self.limit = limit
        self._calls: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._by_cmiuuid: dict[str, str] = {}

    def answered(self, call_id: str, cmiuuid: str | None) -> None:
        """Remember a call this worker just answered."""
        self._forget_old()
        self._calls[call_id] = (cmiuuid, time.monotonic())
        if cmiuuid:
            self._by_cmiuuid[cmiuuid] = call_id
        while len(self._calls) > self.limit:
            self._drop(next(iter(self._calls)))

    def cmiuuid(self, call_id: str) -> str | None:
        """PIOPIY's id of a call answered here lately (None: unknown here)."""
        entry = self._calls.get(call_id)
        return entry[0] if entry is not None else None

    def call_id(self, cmiuuid: str | None) -> str | None:
        """Our id of a call answered here lately, by PIOPIY's id."""
        return self._by_cmiuuid.get(cmiuuid) if cmiuuid else None

    def _forget_old(self) -> None:
        cutoff = time.monotonic() - self.keep_s
        while self._calls:
            call_id, (_, at) = next(iter(self._calls.items()))
            if at >= cutoff:
                return
            self._drop(call_id)

    def _drop(self, call_id: str) -> None:
        cmiuuid, _ = self._calls.pop(call_id)
        if cmiuuid and self._by_cmiuuid.get(cmiuuid) == call_id:
            del self._by_cmiuuid[cmiuuid]
