"""China's working-day calendar, for booking lead times and free-cancellation deadlines.

Three sources, per calendar year, checked in this order:

* ``override``: the year is a section of the override file (``calendar_overrides.toml``),
  which operations staff fill in from the State Council's yearly notice. Within such a year a
  day is off when it is listed as a holiday, or when it is a Saturday or Sunday not listed as
  a make-up workday (调休上班).
* ``official``: the ``chinesecalendar`` package knows the year (holidays and make-up workdays
  as the State Council published them).
* ``provisional``: neither knows the year. Saturdays, Sundays and every statutory holiday that
  the ``holidays`` package computes for China are off; no make-up workday is assumed, so a
  provisional calendar may count too few working days but never counts a holiday as one.
  A warning is logged once per provisional year used.

A date the override file lists (as a holiday or a make-up workday) is decided by that entry
whatever the year's source, so a notice that reaches into the previous year (元旦 from 31
December) can be entered under the year it was published for.

Pure: the standard library and the two calendar packages only; callers pass settings in.
"""
from __future__ import annotations

import logging
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import chinese_calendar
import holidays as holidays_lib

log = logging.getLogger(__name__)

Source = Literal["official", "override", "provisional"]

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Any stretch of this many days without a working day means the data is wrong.
_MAX_DAYS_OFF = 60


class CalendarError(ValueError):
    """The override file is unreadable or invalid; the message is one line naming the key."""


@dataclass(frozen=True)
class YearOverride:
    """One section of the override file: the year's days off and make-up workdays."""

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    notice: str = ""


# --- The override file ---------------------------------------------------------------------

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def load_overrides(path: str | Path) -> dict[int, YearOverride]:
    """Read and check the override file; a missing file means no overrides."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CalendarError(f"{path}: cannot read the calendar overrides "
                            f"({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CalendarError(f"{path}: not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CalendarError(f"{path}: not valid TOML: {exc}") from None
    return parse_overrides(raw, origin=str(path))


def parse_overrides(raw: Mapping[str, Any], origin: str = "calendar_overrides.toml"
                    ) -> dict[int, YearOverride]:
    """Check a parsed override mapping (``{"years": {"2027": {...}}}``)."""
    def bad(key: str, problem: str) -> CalendarError:
        return CalendarError(f"{origin}: {key}: {problem}")

    unknown = set(raw) - {"years"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown key (years go under [years.YYYY])")
    years = raw.get("years", {})
    if not isinstance(years, Mapping):
        raise bad("years", "must be a table of years, e.g. [years.2027]")
    result: dict[int, YearOverride] = {}
    seen: dict[date, str] = {}
    for name, section in years.items():
        key = f"years.{name}"
        if not (isinstance(name, str) and re.fullmatch(r"\d{4}", name)):
            raise bad(key, "a year is written with four digits, e.g. [years.2027]")
        year = int(name)
        if not isinstance(section, Mapping):
            raise bad(key, "must be a table with holidays = [...] and workdays = [...]")
        unknown = set(section) - {"holidays", "workdays", "notice"}
        if unknown:
            raise bad(f"{key}.{sorted(unknown)[0]}", "unknown key (holidays, workdays, notice)")
        notice = section.get("notice", "")
        if not isinstance(notice, str):
            raise bad(f"{key}.notice", "must be text")
        days: dict[str, frozenset[date]] = {}
        for field in ("holidays", "workdays"):
            entries = section.get(field, [])
            if not isinstance(entries, list):
                raise bad(f"{key}.{field}", "must be a list, e.g. [2027-01-01]")
            found: set[date] = set()
            for index, entry in enumerate(entries, start=1):
                entry_key = f"{key}.{field}[#{index}]"
                for day in _entry_days(entry, entry_key, bad, ranges=field == "holidays"):
                    if not year - 1 <= day.year <= year + 1:
                        raise bad(entry_key, f"{day} is not in or next to {year}")
                    if field == "workdays" and day.weekday() < 5:
                        raise bad(entry_key, f"{day} is a weekday; only a Saturday or Sunday "
                                  "can be a make-up workday")
                    if day in seen:
                        raise bad(entry_key, f"{day} is already listed in {seen[day]}")
                    seen[day] = f"{key}.{field}"
                    found.add(day)
            days[field] = frozenset(found)
        result[year] = YearOverride(days["holidays"], days["workdays"], notice)
    return result


def _entry_days(entry: Any, key: str, bad, *, ranges: bool) -> Iterable[date]:
    if isinstance(entry, Mapping) and ranges:
        if set(entry) != {"from", "to"}:
            raise bad(key, "a range is written {from = 2027-10-01, to = 2027-10-07}")
        first, last = _day(entry["from"], key, bad), _day(entry["to"], key, bad)
        if last < first:
            raise bad(key, f"the range ends ({last}) before it starts ({first})")
        if (last - first).days > 31:
            raise bad(key, f"the range {first} to {last} is longer than a month")
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [_day(entry, key, bad)]


def _day(value: Any, key: str, bad) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise bad(key, f"{value!r} is not a date written YYYY-MM-DD")


# --- The calendar --------------------------------------------------------------------------


def official_years() -> range:
    """The years the chinesecalendar package has data for."""
    known = chinese_calendar.constants.holidays
    return range(min(known).year, max(known).year + 1)


class Calendar:
    """Working days in mainland China; thread-safe, with a per-year cache."""

    def __init__(self, overrides: Mapping[int, YearOverride] | None = None) -> None:
        self._overrides = dict(overrides or {})
        # Every listed date decides itself, whichever section lists it.
        self._listed: dict[date, bool] = {}
        for section in self._overrides.values():
            self._listed.update(dict.fromkeys(section.holidays, False))
            self._listed.update(dict.fromkeys(section.workdays, True))
        self._official = official_years()
        self._years: dict[int, tuple[bool, ...]] = {}
        self._earliest: dict[tuple[date, int], date] = {}  # earliest_bookable's answers
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path) -> Calendar:
        return cls(load_overrides(path))

    # --- Years -------------------------------------------------------------------------
    def source(self, year: int) -> Source:
        if year in self._overrides:
            return "override"
        if year in self._official:
            return "official"
        return "provisional"

    def is_provisional(self, d: date) -> bool:
        return self.source(d.year) == "provisional"

    def touches_provisional(self, first: date, last: date) -> bool:
        """Whether any day from `first` to `last` (inclusive) is on a provisional year."""
        return any(self.source(y) == "provisional" for y in range(first.year, last.year + 1))

    def check_year(self, year: int) -> tuple[Source, str]:
        """Which source covers `year`, as a line or two for staff (``calendar check``)."""
        source = self.source(year)
        if source == "override":
            notice = self._overrides[year].notice
            where = f" ({notice})" if notice else ""
            return source, f"{year}: covered by calendar_overrides.toml{where}"
        if source == "official":
            return source, (f"{year}: covered by the chinesecalendar package "
                            f"(it knows {self._official.start}-{self._official.stop - 1})")
        return source, (f"{year}: PROVISIONAL: weekends and computed statutory holidays only, "
                        "no make-up workdays\n"
                        f"WARNING: load the State Council's {year} holiday notice into "
                        "calendar_overrides.toml; until then booking dates in "
                        f"{year} are provisional and must be confirmed by staff")

    # --- Days --------------------------------------------------------------------------
    def is_workday(self, d: date) -> bool:
        if isinstance(d, datetime):
            d = d.date()
        listed = self._listed.get(d)
        if listed is not None:
            return listed
        return self._year(d.year)[d.timetuple().tm_yday - 1]

    def is_holiday(self, d: date) -> bool:
        """A day off: a weekend day that is not a make-up workday, or a public holiday."""
        return not self.is_workday(d)

    def add_workdays(self, d: date, n: int) -> date:
        """The n-th working day after `d` (before it when n < 0), not counting `d`; n=0: `d`."""
        step = timedelta(days=1 if n > 0 else -1)
        remaining, idle = abs(n), 0
        while remaining:
            d += step
            if self.is_workday(d):
                remaining -= 1
                idle = 0
            else:
                idle += 1
                if idle > _MAX_DAYS_OFF:
                    raise CalendarError(f"no working day in the {_MAX_DAYS_OFF} days "
                                        f"around {d}: check calendar_overrides.toml")
        return d

    def last_workday_before(self, d: date) -> date:
        """The last working day strictly before `d`."""
        return self.add_workdays(d, -1)

    def earliest_bookable(self, request_dt: datetime | date, *, lead_workdays: int,
                          tz: tzinfo = SHANGHAI) -> date:
        """The first service date bookable for a request made at `request_dt`.

        The request date is the local date (`tz`) of the request moment; the earliest date is
        the `lead_workdays`-th working day after it (with a lead of 2: Wednesday → Friday,
        Saturday → Tuesday).
        """
        key = (local_date(request_dt, tz), lead_workdays)
        earliest = self._earliest.get(key)
        if earliest is None:  # the calendar never changes: asked many times per message
            if len(self._earliest) > 4096:
                self._earliest.clear()
            earliest = self._earliest[key] = self.add_workdays(*key)
        return earliest

    def free_cancel_deadline(self, service_date: date, *, cutoff: time,
                             tz: tzinfo = SHANGHAI) -> datetime:
        """Until when (exclusive) a cancellation is free: `cutoff` (rules.toml's
        `booking.cancel_cutoff`) on the last working day before."""
        return datetime.combine(self.last_workday_before(service_date), cutoff, tzinfo=tz)

    # --- The per-year table ------------------------------------------------------------
    def _year(self, year: int) -> tuple[bool, ...]:
        table = self._years.get(year)
        if table is None:
            with self._lock:
                table = self._years.get(year)
                if table is None:
                    table = self._years[year] = self._build(year)
        return table

    def _build(self, year: int) -> tuple[bool, ...]:
        days = [date(year, 1, 1) + timedelta(days=i)
                for i in range((date(year + 1, 1, 1) - date(year, 1, 1)).days)]
        source = self.source(year)
        if source == "override":
            # The section's holidays and make-up workdays are in self._listed.
            return tuple(d.weekday() < 5 for d in days)
        if source == "official":
            return tuple(chinese_calendar.is_workday(d) for d in days)
        log.warning("calendar: %s is not covered by chinesecalendar nor calendar_overrides.toml; "
                    "using a provisional calendar (weekends and computed statutory holidays). "
                    "Load the State Council's %s holiday notice.", year, year)
        off = set(holidays_lib.country_holidays("CN", years=year))
        return tuple(d.weekday() < 5 and d not in off for d in days)


def local_date(moment: datetime | date, tz: tzinfo = SHANGHAI) -> date:
    """The date of `moment` in `tz`; an aware datetime is required (a date passes through)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("a naive datetime has no local date: pass an aware datetime")
        return moment.astimezone(tz).date()
    return moment


# --- `calendar check [YEAR]` ---------------------------------------------------------------


def check_command(calendar: Calendar, years: Iterable[int]) -> tuple[int, str]:
    """The text of ``calendar check`` and its exit status: 1 when a year is provisional."""
    lines, status = [], 0
    for year in years:
        source, message = calendar.check_year(year)
        lines.append(message)
        status = max(status, int(source == "provisional"))
    return status, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bot.domain.workdays check [YEAR ...] [--overrides PATH]``; without a year,
    this year and next (Asia/Shanghai)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bot.domain.workdays",
                                     description="China's working-day calendar.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="Which source covers a year.")
    check.add_argument("years", nargs="*", type=int, metavar="YEAR")
    check.add_argument("--overrides", default="calendar_overrides.toml",
                       help="the override file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        calendar = Calendar.from_file(args.overrides)
    except CalendarError as exc:
        print(exc)
        return 2
    this_year = datetime.now(SHANGHAI).year
    status, text = check_command(calendar, args.years or [this_year, this_year + 1])
    print(text)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
