"""Log lines: plain text (`time LEVEL logger: message`) or JSON lines (LOG_FORMAT=json), each
time-stamped in ISO 8601 with the offset of TIMEZONE, never the host's unstated local time.

One message's handling carries its ids on every line it logs, whichever thread logs it:
`request_id` (one per HTTP request to /wechat) and `msg_id` (WeChat's MsgId, or for an
event without one, `event:<CreateTime>`), kept in context variables (`bind`) that the
pipeline carries into its threads.
"""
from __future__ import annotations

import contextvars
import json
import logging
import uuid
from contextlib import contextmanager
from datetime import datetime

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
MSG_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("msg_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def current() -> tuple[str | None, str | None]:
    """(request_id, msg_id) of the code running now."""
    return REQUEST_ID.get(), MSG_ID.get()


@contextmanager
def bound(ids: tuple[str | None, str | None] | None):
    """Log with these (request_id, msg_id) inside the block (a thread handling a message
    taken from another)."""
    if ids is None:
        yield
        return
    t1, t2 = REQUEST_ID.set(ids[0]), MSG_ID.set(ids[1])
    try:
        yield
    finally:
        MSG_ID.reset(t2)
        REQUEST_ID.reset(t1)


def msg_id_of(msg) -> str:
    msg_id = getattr(msg, "id", None)
    if msg_id:
        return str(msg_id)
    created = getattr(msg, "create_time", None)
    return f"event:{int(created.timestamp())}" if created is not None else "event"


class ContextFilter(logging.Filter):
    """Puts the running message's ids on each record (as `request_id`, `msg_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        if not hasattr(record, "msg_id"):
            record.msg_id = MSG_ID.get()
        return True


class IsoFormatter(logging.Formatter):
    """Each line starts with its time in ISO 8601 with the offset, in TIMEZONE
    (2026-12-02T22:30:05.250+08:00)."""

    def __init__(self, tz, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.tz = tz

    def formatTime(self, record, datefmt=None) -> str:  # noqa: N802 (logging's name)
        return datetime.fromtimestamp(record.created, self.tz).isoformat(timespec="milliseconds")


class JsonFormatter(IsoFormatter):
    """One JSON object a line: time, level, logger, message, request_id and msg_id (when a
    message is being handled), exc (the traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        msg_id = getattr(record, "msg_id", None) or MSG_ID.get()
        if request_id:
            line["request_id"] = request_id
        if msg_id:
            line["msg_id"] = msg_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False)


def formatter(tz, fmt: str = "text") -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(tz)
    return IsoFormatter(tz, "%(asctime)s %(levelname)s %(name)s: %(message)s")


def uvicorn_formatter(tz: str, fmt: str = "text") -> logging.Formatter:
    """The app's formatter for uvicorn's own loggers (built by `logging.config.dictConfig`)."""
    from zoneinfo import ZoneInfo

    return formatter(ZoneInfo(tz), fmt)


def uvicorn_log_config(tz: str, fmt: str = "text", level: str = "INFO") -> dict:
    """uvicorn's `log_config`: its own lines (Started server process, Application startup
    complete, Uvicorn running on …) in the app's format, time-stamped in ISO 8601 with the
    offset of `tz` (TIMEZONE), to stderr; other loggers are left as they are."""
    handler = {"class": "logging.StreamHandler", "formatter": "app",
               "stream": "ext://sys.stderr", "filters": ["ids"]}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"app": {"()": "bot.infra.logs.uvicorn_formatter", "tz": tz, "fmt": fmt}},
        "filters": {"ids": {"()": "bot.infra.logs.ContextFilter"}},
        "handlers": {"uvicorn": handler},
        "loggers": {name: {"handlers": ["uvicorn"], "level": level.upper(), "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
