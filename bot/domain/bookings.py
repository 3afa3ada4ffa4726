"""Booking rules (docs/programme.md, "Booking rules"), as pure functions.

`check_booking(request, facts)` is the one place that decides whether a booking may be made:
the chat flow calls it at every step (with what is known so far), again at commit (with the
quota row locked, see `bot.domain.booking_store.submit_booking`), and staff confirmation
calls it with `staff=True` (a date inside the customer lead time is then a warning, not a
refusal). It returns a `Refusal` code or None; callers map codes to their templates.

`cancellation_terms(booking, now, calendar, cutoff=, grace_hours=)` says whether a
cancellation now is free and until when it is (the cut-off and the grace from rules.toml).

No I/O here: the facts (institution, beneficiary, uses of the quota) are gathered by
`bot.domain.booking_store.gather_facts` (staff, and the commit under the lock) or, for the
chat's steps, read once per message by `booking_store.Stored` under a
`bot.domain.booking_draft.BookingDraft`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from bot.domain.dates import validate_service_date
from bot.domain.rules import Package, Rules, Service
from bot.domain.vocab import WEEKDAYS, BookingStatus, Relation
from bot.domain.workdays import SHANGHAI, Calendar
from bot.infra.config import ROOT

# Statuses whose booking uses the quota of its service date's year.
COUNTING = frozenset({BookingStatus.SUBMITTED, BookingStatus.CONFIRMED, BookingStatus.COMPLETED,
                      BookingStatus.NO_SHOW, BookingStatus.CANCELLED_LATE})
ACTIVE = frozenset({BookingStatus.SUBMITTED, BookingStatus.CONFIRMED})
FAMILY_RELATIONS = frozenset(Relation)  # 配偶、父母、子女


@lru_cache(maxsize=1)
def calendar() -> Calendar:
    """The working-day calendar of the programme (package data plus the override file)."""
    return Calendar.from_file(ROOT / "calendar_overrides.toml")


class Refusal(StrEnum):
    NOT_BOOKABLE = "not_bookable"  # the service is not booked by appointment
    NOT_ENTITLED = "not_entitled"  # the tier held does not include the service
    QUOTA_USED = "quota_used"  # the year's uses are spent
    FAMILY_NOT_ALLOWED = "family_not_allowed"  # the service is for the policyholder only
    NOT_FAMILY = "not_family"  # not a registered immediate family member of the policyholder
    NO_PACKAGE = "no_package"  # the package is not one of the tier's packages for the service
    PACKAGE_SEX = "package_sex"  # a male/female package for someone of the other sex
    NOT_OFFERED = "not_offered"  # the institution does not give the service
    VENUE = "venue"  # the package may not be taken at this kind of institution
    PAST = "past"
    TOO_SOON = "too_soon"  # inside the lead time
    BEYOND_WINDOW = "beyond_window"
    CLOSED = "closed"  # the institution is closed that day
    # Why a booking cannot be cancelled (check_cancellation)
    DONE = "done"  # no longer active (completed, cancelled, no-show)
    STARTED = "started"  # the service has started


# --- What a check looks at ---------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """An institution as the rules see it."""

    id: int
    code: str
    name: str
    city: str
    address: str
    kind: str  # commercial | tertiary_hospital
    services: frozenset[str]
    closed_weekdays: frozenset[int] = frozenset()  # 0 = Monday
    closed_dates: frozenset[date] = frozenset()
    phone: str = ""

    @classmethod
    def of(cls, row: Any) -> "Place":
        return cls(id=row.id, code=row.code, name=row.name, city=row.city, address=row.address,
                   kind=row.kind, services=frozenset(split(row.services)),
                   closed_weekdays=frozenset(WEEKDAYS.index(w) for w in split(row.closed_weekdays)),
                   closed_dates=frozenset(date.fromisoformat(d) for d in split(row.closed_dates)),
                   phone=row.phone or "")

    def offers(self, service: str) -> bool:
        return service in self.services

    def open_on(self, d: date) -> bool:
        return d.weekday() not in self.closed_weekdays and d not in self.closed_dates


def split(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(";") if p.strip()]


@dataclass(frozen=True)
class Person:
    """Who receives the service: the policyholder (`relation` None) or a family member."""

    name: str
    id_number: str
    sex: str  # M | F, from the ID number
    relation: str | None = None  # spouse | parent | child for a family member
    family_member_id: int | None = None  # None: not (yet) registered, or the policyholder
    registered: bool = True  # a family member on the policyholder's record

    @property
    def is_self(self) -> bool:
        return self.relation is None


@dataclass(frozen=True)
class BookingRequest:
    """A booking as far as it is known; the checks of what is still None are skipped."""

    service: str
    tier: str  # the tier the policyholder holds now (when submitting)
    requested_at: datetime  # aware
    beneficiary: Person | None = None
    package: str | None = None
    institution: Place | None = None
    date: date | None = None


@dataclass(frozen=True)
class BookingFacts:
    rules: Rules
    calendar: Calendar
    used: Mapping[int, int] = field(default_factory=dict)  # counted uses by calendar year


# --- The rules -------------------------------------------------------------------------------


def check_booking(req: BookingRequest, facts: BookingFacts, *, staff: bool = False
                  ) -> Refusal | None:
    """Why the booking cannot be made, or None. With `staff`, a date inside the lead time
    is allowed (see `booking_warnings`)."""
    rules, cal = facts.rules, facts.calendar
    if req.service not in rules.booking.services:
        return Refusal.NOT_BOOKABLE
    service = rules.service(req.service)
    if not service.offered_to(req.tier):
        return Refusal.NOT_ENTITLED
    if service.per_year is not None:
        years = [req.date.year] if req.date else quota_years(req.requested_at, rules)
        if all(facts.used.get(y, 0) >= service.per_year for y in years):
            return Refusal.QUOTA_USED
    person = req.beneficiary
    if person is not None and not person.is_self:
        if not service.family:
            return Refusal.FAMILY_NOT_ALLOWED
        if person.relation not in FAMILY_RELATIONS:
            return Refusal.NOT_FAMILY
    package = None
    if req.package is not None:
        package = next((p for p in service.packages_for(req.tier) if p.code == req.package), None)
        if package is None:
            return Refusal.NO_PACKAGE
        if person is not None and package.sex not in (None, person.sex):
            return Refusal.PACKAGE_SEX
    place = req.institution
    if place is not None:
        if not place.offers(req.service):
            return Refusal.NOT_OFFERED
        if package is not None and package.venues and place.kind not in venue_kinds(package, rules):
            return Refusal.VENUE
    if req.date is not None:
        why = validate_service_date(req.date, req.requested_at, cal,
                                    lead_workdays=rules.booking.lead_workdays,
                                    window_days=rules.booking.window_days)
        if why is not None and not (staff and why == "too_soon"):
            return Refusal(why)
        if place is not None and not place.open_on(req.date):
            return Refusal.CLOSED
    return None


def booking_warnings(req: BookingRequest, facts: BookingFacts) -> list[Refusal]:
    """What staff are warned about but may override: a date inside the lead time."""
    if req.date is None:
        return []
    why = validate_service_date(req.date, req.requested_at, facts.calendar,
                                lead_workdays=facts.rules.booking.lead_workdays,
                                window_days=facts.rules.booking.window_days)
    return [Refusal.TOO_SOON] if why == "too_soon" else []


def quota_years(requested_at: datetime, rules: Rules) -> list[int]:
    """The calendar years a service date booked now may fall in (today to the window's end)."""
    today = requested_at.astimezone(SHANGHAI).date()
    last = today + timedelta(days=rules.booking.window_days)
    return list(range(today.year, last.year + 1))


def venue_kinds(package: Package, rules: Rules) -> set[str]:
    return {rules.booking.venue_kinds[v] for v in package.venues}


def packages_for(service: Service, tier: str, person: Person | None) -> tuple[Package, ...]:
    """The tier's packages of a service open to the beneficiary's sex."""
    return service.packages_for(tier, person.sex if person else None)


def escorted(place: Place) -> bool:
    """Staff escort the customer in person only at 三甲 hospitals."""
    return place.kind == "tertiary_hospital"


def bookable_dates(req: BookingRequest, facts: BookingFacts, count: int) -> list[date]:
    """The first `count` dates from today on that `check_booking` accepts for `req`."""
    today = req.requested_at.astimezone(SHANGHAI).date()
    # Every day before the earliest bookable one is refused (past or too soon): start there.
    first = facts.calendar.earliest_bookable(req.requested_at,
                                          lead_workdays=facts.rules.booking.lead_workdays)
    out: list[date] = []
    for i in range(max((first - today).days, 0), facts.rules.booking.window_days + 1):
        d = today + timedelta(days=i)
        if check_booking(replace(req, date=d), facts) is None:
            out.append(d)
            if len(out) == count:
                break
    return out


def remaining(service: Service, used: int) -> int | None:
    return None if service.per_year is None else max(service.per_year - used, 0)


# --- Booking numbers ---------------------------------------------------------------------------


NUMBER_PREFIX = "YY"
# The one format of a booking number: YY + yymmdd of creation + the day's sequence (4 digits).
BOOKING_NO = re.compile(rf"(?i){NUMBER_PREFIX}\d{{10}}")


def booking_number(created: date, seq: int) -> str:
    """The number of the day's `seq`-th booking (BOOKING_NO): YY2612030007."""
    return f"{NUMBER_PREFIX}{created:%y%m%d}{seq:04d}"


# --- Cancelling --------------------------------------------------------------------------------


def service_date(booking: Any) -> date:
    """The date the service is for: the confirmed date once confirmed, else the preferred."""
    return booking.confirmed_date or booking.preferred_date


def upcoming_first(bookings: list, today: date) -> list:
    """Bookings still to come (submitted or confirmed, from today on), soonest first; then
    the others, most recent first."""
    def ahead(b) -> bool:
        return b.status in (BookingStatus.SUBMITTED, BookingStatus.CONFIRMED) and \
            service_date(b) >= today
    coming = sorted((b for b in bookings if ahead(b)), key=lambda b: (service_date(b), b.id))
    rest = sorted((b for b in bookings if not ahead(b)), key=lambda b: (service_date(b), b.id),
                  reverse=True)
    return coming + rest


def service_start(booking: Any) -> datetime:
    """When the service starts: the one definition of "the service has started" (docs/programme.md,
    Cancellation: free cancellation never runs past it; messages about the booking expire
    at it). Midnight of the service date when no time was fixed."""
    return starts_at(service_date(booking), booking.confirmed_time)


def starts_at(day: date, hhmm: str | None) -> datetime:
    """The moment `day` at `hhmm` (HH:MM; midnight when None) in Asia/Shanghai."""
    at = time(0, 0)
    if hhmm:
        hh, mm = hhmm.split(":")
        at = time(int(hh), int(mm))
    return datetime.combine(day, at, tzinfo=SHANGHAI)


def cancellation_terms(booking: Any, now: datetime, calendar: Calendar, *,
                       cutoff: time, grace_hours: int) -> tuple[bool, datetime | None]:
    """(free, deadline): whether cancelling at `now` is free, and until when (exclusive) it
    is free; deadline None means free at any time (a booking staff have not confirmed).

    Free until `cutoff` on the last working day before the service date. A confirmation sent
    when that deadline had passed or was less than `grace_hours` away gives free cancellation
    until `grace_hours` after it was sent, never after the service starts."""
    if booking.status == BookingStatus.SUBMITTED:
        return True, None
    deadline = calendar.free_cancel_deadline(service_date(booking), cutoff=cutoff, tz=SHANGHAI)
    grace = timedelta(hours=grace_hours)
    confirmed_at = booking.confirmed_at
    if confirmed_at is not None:
        if deadline - confirmed_at < grace:
            deadline = max(deadline, min(confirmed_at + grace, service_start(booking)))
    return now < deadline, deadline


def check_cancellation(booking: Any, now: datetime) -> Refusal | None:
    """Why the customer cannot cancel at all (the same kind of answer as `check_booking`):
    DONE (no longer active) or STARTED; None when they can (free or counted: see
    `cancellation_terms`)."""
    if booking.status not in ACTIVE:
        return Refusal.DONE
    if now >= service_start(booking):
        return Refusal.STARTED
    return None


def counts(status: str) -> bool:
    return status in COUNTING

