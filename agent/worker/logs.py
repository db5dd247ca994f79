"""Logging: every line carries the call it is about, as text for a terminal or JSON for a collector.

The call id lives in a context variable set where a call's work starts (the answer_url request, the
stream socket); asyncio tasks copy the context they are created in, so everything a call spawns (its
replies, transcriptions, tools, notifications) logs with its id without passing it around. A record
factory stamps `call_id` on every record, whichever handler (or test's caplog) receives it.

    HOTLINE_LOG_FORMAT=json hotline serve
    {"ts": "2026-11-21T19:10:04.512Z", "level": "INFO", "logger": "agent.call.session", "call_id": "c_5f0c…",
     "msg": "call c_5f0c… ended: caller_hangup"}
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from typing import Any, Literal

NO_CALL = "-"
current_call: contextvars.ContextVar[str] = contextvars.ContextVar("hotline_call_id", default=NO_CALL)
"""The call the running code works for ("-" outside any call)."""

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(call_id)s]: %(message)s"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "call_id"}


def for_call(call_id: str) -> contextvars.Token[str]:
    """From here on (and in tasks created from here), log lines belong to `call_id`."""
    return current_call.set(call_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, call_id, msg, any `extra=` fields, and exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
            "level": record.levelname,
            "logger": record.name,
            "call_id": getattr(record, "call_id", NO_CALL),
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _stamp_call_ids() -> None:
    """Make every LogRecord carry `call_id` from the context (once per process)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "stamps_call_id", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.call_id = current_call.get()
        return record

    make.stamps_call_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)


def setup_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Configure the root logger for the `hotline` command."""
    _stamp_call_ids()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


_stamp_call_ids()  # importing the service is enough for records (and caplog) to carry call ids
