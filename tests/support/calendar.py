"""Shared set-ups of the date and working-day tests: local times and the shipped calendar."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.domain.workdays import Calendar
from tests.support import ROOT

TZ = ZoneInfo("Asia/Shanghai")
D = date.fromisoformat
OVERRIDES = ROOT / "calendar_overrides.toml"  # the repo's calendar override file


def at(text: str) -> datetime:
    """A local (Asia/Shanghai) moment from "YYYY-MM-DD HH:MM"."""
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


@pytest.fixture(scope="module")
def cal() -> Calendar:
    """The repo's calendar: the official years plus its override file."""
    return Calendar.from_file(OVERRIDES)
