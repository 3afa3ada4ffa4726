"""Crash points for tests of crash safety: `BOT_CRASH_AT=<name>` in the environment makes the
process die (os._exit, as a kill -9 would, without cleanup) when it reaches that point."""
from __future__ import annotations

import os

CRASH_EXIT_CODE = 86


def crash_point(name: str) -> None:
    if os.environ.get("BOT_CRASH_AT") == name:
        os._exit(CRASH_EXIT_CODE)
