"""Keeps credentials out of every log line: the AppSecret, access tokens, gateway tokens.

`install(secret, …)` (idempotent; Services calls it) makes every log record of the process
redacted when it is created: its message (arguments included) and its exception text. It
works through the record factory, so it covers every logger and every handler (urllib3's
DEBUG lines, uvicorn's own handlers, pytest's capture), and adds a `RedactingFilter` to the
root logger's handlers as a second net. `redact(text)` is for exception texts built by hand.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import deque

MASK = "***"
# secret=…, access_token=… in query strings and form bodies; "secret": "…" in JSON.
_QUERY = re.compile(r"(?i)\b((?:app)?secret|access_token|token)=([^&\s'\"<>#]+)")
_JSON = re.compile(r"(?i)([\"'](?:(?:app)?secret|access_token)[\"']\s*:\s*[\"'])([^\"']+)")
_MIN_SECRET = 6  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_tokens: deque[str] = deque(maxlen=32)  # the access tokens seen lately, newest last
_pattern: re.Pattern | None = None
_installed = False


def _rebuild() -> None:
    global _pattern
    values = sorted({*_secrets, *_tokens}, key=len, reverse=True)
    _pattern = re.compile("|".join(map(re.escape, values))) if values else None


def add_secret(value: str) -> None:
    """Mask `value` wherever it appears (a configured secret)."""
    if value and len(value) >= _MIN_SECRET and value not in _secrets:
        with _lock:
            _secrets.add(value)
            _rebuild()


def add_token(value: str) -> None:
    """Mask an access token wherever it appears (the last few are remembered)."""
    if value and len(value) >= _MIN_SECRET and value not in _tokens:
        with _lock:
            _tokens.append(value)
            _rebuild()


def redact(text: str) -> str:
    if not text:
        return text
    text = _QUERY.sub(lambda m: f"{m[1]}={MASK}", text)
    text = _JSON.sub(lambda m: m[1] + MASK, text)
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return text


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Replace the record's message and exception text by their redacted forms (once)."""
    if getattr(record, "_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return record
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._redacted = True
    return record


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install(*secrets: str) -> None:
    """Redact every log record of this process from now on, masking `secrets` too."""
    global _installed
    for value in secrets:
        add_secret(value)
    with _lock:
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
    install_on_handlers()


def install_on_handlers() -> None:
    """Add the filter to the root logger's handlers (call again after configuring logging)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
