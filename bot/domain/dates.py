"""A customer's typed date (Chinese), as a service date; and the booking checks on it.

`parse_date(text, reference, calendar)` turns what a customer typed into one date, relative to
the moment they typed it, or into a refusal reason:

* ``empty``: nothing typed;
* ``nonsense``: not a date, a date that does not exist (32号, 13月5日, 2月30日), or something
  too vague to ask about (明年的某一天);
* ``ambiguous``: a span of days (下周, 12月, 周末, 12月中旬): ask which day;
* ``past``: a date before the reference date;
* ``several``: two or more dates offered as alternatives (12月9日或10日, 周三还是周四): ask
  which one, never take the first.

No customer-facing text here: callers map the codes to their templates.

How a date without a year (or month) is placed, since customers leave them out:

* a month and day (12月3日, 12.3, 12/3, 1月4日) means the occurrence nearest to the reference
  date, the next one on a tie: in December 1月4日 is next January, while on 30 November
  11月29日 is yesterday (``past``), not next year;
* a bare day (3号, 15日) means the next such day on or after the reference date: on the 30th
  3号 is next month's 3rd; a month without that day is skipped (31号 in November: 31 December);
* a bare weekday (周五, 星期一) means the next one on or after the reference date; with 这/本
  (这周五) it is this week's (Monday to Sunday), even if passed; 下周三 is next week's;
* a festival (元旦, 国庆, 春节) means its next occurrence;
* ``X后第一个工作日`` (元旦后第一个工作日, 国庆后第一个工作日) is the first working day after
  X's first day on the given calendar (after the whole holiday period).

Everything else is left to jionlp's time parser (后天, 下周三, 下个月5号, 2026-12-03...).

`validate_service_date(...)` applies the booking rules to a parsed date, separately.

Pure: the standard library and jionlp; the calendar is passed in (`bot.domain.workdays.Calendar`
or anything with the same methods).
"""
from __future__ import annotations

import calendar as _cal
import contextlib
import io
import re
import threading
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Literal, Protocol

from bot.domain.workdays import SHANGHAI, local_date


ParseReason = Literal["empty", "nonsense", "ambiguous", "past", "several"]
Refusal = Literal["past", "too_soon", "beyond_window"]



class Calendar(Protocol):
    """What this module needs of `bot.domain.workdays.Calendar`."""

    def is_holiday(self, d: date) -> bool: ...
    def add_workdays(self, d: date, n: int) -> date: ...
    def earliest_bookable(self, request_dt: datetime | date, *, lead_workdays: int,
                          tz: tzinfo = SHANGHAI) -> date: ...
    def touches_provisional(self, first: date, last: date) -> bool: ...




# A span of days up to this long is `ambiguous` (ask which day); a longer one is `nonsense`.
_MAX_AMBIGUOUS_DAYS = 31


@dataclass(frozen=True)
class ParsedDate:
    """Either `date` or `reason` is set."""

    date: date | None = None
    reason: ParseReason | None = None

    @property
    def ok(self) -> bool:
        return self.date is not None


def _refuse(reason: ParseReason) -> ParsedDate:
    return ParsedDate(reason=reason)


# --- Normalising ---------------------------------------------------------------------------

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
              "六": 6, "七": 7, "八": 8, "九": 9}
_CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十]+(?=[月日号])")
_NOISE = re.compile(r"^(?:我想|我要|想|要)?(?:预约|约在|约|定在|改到|改在|安排在|就)?|"
                    r"(?:吧|呢|啊|可以吗|可以|行吗|好吗|就行|即可)?[\s。.!！?？,，~～]*$")


def cn_number(text: str) -> str:
    """一..三十一 written in Chinese characters, as digits ('十二' → '12'); other text as is."""
    if "十" in text:
        tens, _, ones = text.partition("十")
        if len(tens) > 1 or len(ones) > 1 or (tens and tens not in _CN_DIGITS):
            return text
        if ones and ones not in _CN_DIGITS:
            return text
        return str((_CN_DIGITS[tens] if tens else 1) * 10 + (_CN_DIGITS[ones] if ones else 0))
    if len(text) == 1:
        return str(_CN_DIGITS[text])
    return text


def normalize(text: str) -> str:
    """Full-width to half-width, no spaces, Chinese numerals before 月/日/号 as digits,
    polite padding (我想约…吧) and trailing punctuation dropped."""
    text = unicodedata.normalize("NFKC", text or "")
    text = re.sub(r"\s+", "", text)
    text = _NOISE.sub("", text)
    return _CN_NUMBER.sub(lambda m: cn_number(m.group()), text)


# --- Patterns handled here -----------------------------------------------------------------

_FULL = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})[日号]?$")
_MONTH_DAY = re.compile(r"^(\d{1,2})(?:[-./]|月份?)(\d{1,2})[日号]?$")
_DAY = re.compile(r"^(\d{1,3})[日号]$")
_MONTH = re.compile(r"^(\d{1,3})月份?$")
_MONTH_END = re.compile(r"^(?:(这个?|本)月|月)(?:底|末)$")
_NEXT_MONTH_END = re.compile(r"^下个?月(?:底|末)$")
_SPANS = re.compile(r"^(?:(?:这|本|下下?|上)个?)?(?:周末|礼拜|星期|周|月|月份|月初|月中|月底前)$|"
                    r"^(?:最近|近期|过几天|改天|有空|随便|都行|尽快|越快越好)")
_VAGUE = re.compile(r"某|哪天|什么时候|随时")
_WEEKDAY = re.compile(r"^(?:周|星期|礼拜)([一二三四五六日天1-7])$")
_AFTER = re.compile(r"^(.+?)(?:之|以)?后的?第([一二三四五1-5])个工作日$")
_FESTIVAL = re.compile(r"^(?:元旦|春节|除夕|元宵节?|清明节?|五一|劳动节|端午节?|七夕|中秋节?|"
                       r"国庆节?|重阳节?|圣诞节?|元旦节)$")
# Alternatives between dates (或, 还是, 、): each side naming a day, a weekday or a day word.
_OR = re.compile(r"或者|或是|或|还是|要么|、|，|,|和|跟")
_DAYLIKE = re.compile(r"\d{1,2}[日号]?$|\d{1,2}[日号]|\d{1,2}月|[周星期礼拜][一二三四五六日天1-7]|"
                      r"今天|明天|后天|大后天|元旦|春节|国庆|中秋|端午|清明|五一")
_EXPLICIT_YEAR = re.compile(r"\d{2,4}年|今年|明年|去年|前年|后年")


def _valid(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _nearest_month_day(month: int, day: int, today: date) -> date | None:
    """The occurrence of month/day nearest to `today` (the later one on a tie)."""
    candidates = [d for y in (today.year - 1, today.year, today.year + 1)
                  if (d := _valid(y, month, day)) is not None]
    if not candidates:
        return None
    return min(candidates, key=lambda d: (abs((d - today).days), d < today))


def _next_day_of_month(day: int, today: date) -> date | None:
    """The next `day`-th of a month on or after `today`."""
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    for _ in range(13):
        found = _valid(year, month, day)
        if found is not None and found >= today:
            return found
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


def _month_end(today: date, months_ahead: int) -> date:
    year, month = divmod(today.year * 12 + today.month - 1 + months_ahead, 12)
    return date(year, month + 1, _cal.monthrange(year, month + 1)[1])


# --- jionlp --------------------------------------------------------------------------------

_jionlp_lock = threading.Lock()
_parse_time = None


def _jionlp():
    """jionlp's `parse_time`, imported on first use (it takes a few tenths of a second and
    prints a banner to stdout, which is swallowed)."""
    global _parse_time
    if _parse_time is None:
        with _jionlp_lock:
            if _parse_time is None:
                with contextlib.redirect_stdout(io.StringIO()):
                    import jionlp
                _parse_time = jionlp.parse_time
    return _parse_time


def warm_up() -> None:
    """Import jionlp and load its tables now rather than on a customer's first message."""
    parse = _jionlp()
    with _jionlp_lock:
        parse("明天", time_base=[2026, 1, 1, 0, 0, 0])


def _jionlp_days(text: str, now: datetime) -> tuple[date, date] | None:
    """The first and last day jionlp reads in `text`, or None when it reads no point or span."""
    parse = _jionlp()
    base = [now.year, now.month, now.day, now.hour, now.minute, now.second]
    with _jionlp_lock:  # the parser object keeps per-call state
        try:
            result = parse(text, time_base=base)
        except Exception:  # jionlp raises ValueError, IndexError, ... on what it cannot read
            return None
    if not isinstance(result, dict) or result.get("type") not in ("time_point", "time_span"):
        return None
    try:
        first, last = (datetime.strptime(t, "%Y-%m-%d %H:%M:%S").date() for t in result["time"])
    except (TypeError, ValueError, KeyError):
        return None
    return (first, last) if first <= last else None


# --- Parsing -------------------------------------------------------------------------------


# What a day said alone is made of (12月18日, 下周三上午, 明天吧, 1月3号那天): a message with
# anything else in it (明天见, 今天天气不错, 元旦后第一个工作日) is more than a date.
_DAY_ALONE = re.compile(r"(?:\d|[零〇一二两三四五六七八九十]|年|月|份|日|号|今天|明天|后天|大后天|这|本|"
                        r"下|周|星期|礼拜|天|上午|下午|早上|中午|晚上|点|半|元旦|春节|国庆节?|"
                        r"中秋节?|端午节?|清明节?|五一|那天|这天|那个|的|就|那|[-/.:])+")


def is_day_alone(text: str, reference: datetime, calendar: Calendar,
                 tz: tzinfo = SHANGHAI) -> bool:
    """Whether the whole message is one day and nothing more (12月18日, 1月3号, 下周三),
    past or not: a date typed with no request around it."""
    cleaned = normalize(text)
    if not cleaned or not _DAY_ALONE.fullmatch(cleaned):
        return False
    return parse_date(text, reference, calendar, tz).reason in (None, "past")


def is_bare_weekday(text: str) -> bool:
    """Whether the text is a weekday alone (周六, 星期六): on that weekday it means today."""
    return bool(_WEEKDAY.match(normalize(text)))


def parse_date(text: str, reference: datetime, calendar: Calendar,
               tz: tzinfo = SHANGHAI) -> ParsedDate:
    """The service date a customer means by `text`, typed at `reference` (an aware datetime;
    its local date in `tz` is "today"). See the module's docstring for the rules."""
    now = reference.astimezone(tz) if isinstance(reference, datetime) else None
    today = local_date(reference, tz)
    if now is None:
        now = datetime(today.year, today.month, today.day, 12, tzinfo=tz)
    cleaned = normalize(text)
    if not cleaned:
        return _refuse("empty")
    result = _parse(cleaned, now, today, calendar, depth=0)
    if result.date is not None and result.date < today:
        return _refuse("past")
    return result


def _parse(text: str, now: datetime, today: date, calendar: Calendar, depth: int) -> ParsedDate:
    parts = [p for p in _OR.split(text) if p]
    if len(parts) >= 2 and sum(bool(_DAYLIKE.search(p)) for p in parts) >= 2:
        return _refuse("several")
    if _VAGUE.search(text):
        return _refuse("nonsense")
    if _SPANS.search(text):
        return _refuse("ambiguous")

    if m := _FULL.match(text):
        found = _valid(*map(int, m.groups()))
        return ParsedDate(found) if found else _refuse("nonsense")
    if m := _MONTH_DAY.match(text):
        found = _nearest_month_day(int(m[1]), int(m[2]), today)
        return ParsedDate(found) if found else _refuse("nonsense")
    if m := _DAY.match(text):
        found = _next_day_of_month(int(m[1]), today)
        return ParsedDate(found) if found else _refuse("nonsense")
    if m := _MONTH.match(text):
        return _refuse("ambiguous" if 1 <= int(m[1]) <= 12 else "nonsense")
    if _MONTH_END.match(text):
        return ParsedDate(_month_end(today, 0))
    if _NEXT_MONTH_END.match(text):
        return ParsedDate(_month_end(today, 1))
    if (m := _AFTER.match(text)) and depth == 0:
        head = _parse(m[1], now, today, calendar, depth + 1)
        if head.date is None:
            return head
        n = int(m[2]) if m[2].isdigit() else _CN_DIGITS[m[2]]
        return ParsedDate(calendar.add_workdays(head.date, n))

    days = _jionlp_days(text, now)
    if days is None:
        return _refuse("nonsense")
    first, last = days
    if first != last:
        return _refuse("ambiguous" if (last - first).days < _MAX_AMBIGUOUS_DAYS else "nonsense")

    # Roll forward what customers leave implicit; jionlp places it in the current week/year.
    if _WEEKDAY.match(text) and first < today:
        first += timedelta(days=7)
    elif _FESTIVAL.match(text) and not _EXPLICIT_YEAR.search(text) and first < today:
        again = _jionlp_days("明年" + text, now)
        if again is None or again[0] != again[1]:
            return _refuse("nonsense")
        first = again[0]
    return ParsedDate(first)


# --- Booking rules -------------------------------------------------------------------------


def validate_service_date(d: date, request_dt: datetime, calendar: Calendar, *,
                          lead_workdays: int, window_days: int,
                          tz: tzinfo = SHANGHAI) -> Refusal | None:
    """Why `d` cannot be booked by a request made at `request_dt`, or None when it can.

    * ``past``: before the request date (its local date in `tz`);
    * ``too_soon``: before the earliest bookable date, the `lead_workdays`-th working day
      after the request date;
    * ``beyond_window``: more than `window_days` days after the request date.

    A weekend or public holiday is NOT refused: service days are whatever days the institution
    is open (checked elsewhere); see `service_date_notes`.
    """
    request_day = local_date(request_dt, tz)
    if d < request_day:
        return "past"
    if d < calendar.earliest_bookable(request_dt, lead_workdays=lead_workdays, tz=tz):
        return "too_soon"
    if (d - request_day).days > window_days:
        return "beyond_window"
    return None


def service_date_notes(d: date, request_dt: datetime, calendar: Calendar,
                       tz: tzinfo = SHANGHAI) -> frozenset[str]:
    """Information, not refusals: ``day_off`` when `d` is a weekend day or public holiday (the
    institution may be closed), ``provisional`` when a year from the request date to `d` is on
    the provisional calendar (tell the customer staff will confirm the date)."""
    notes = set()
    if calendar.is_holiday(d):
        notes.add("day_off")
    if calendar.touches_provisional(min(local_date(request_dt, tz), d), d):
        notes.add("provisional")
    return frozenset(notes)
