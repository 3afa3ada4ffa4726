"""A booking as far as the customer has answered it (`BookingDraft`), with the facts its rules
need, so that a chat step asks the rules once per option without asking the database again.

The facts (`Known`: the customer's family on file, the institutions, the counted uses of
the yearly quotas) are read at most once per message, each on first need, by
`bot.domain.booking_store.Stored`. The draft itself is a value over them and the answers so
far: `check()` is `bookings.check_booking` on the request so far (the one rule function;
the rules are data in rules.toml), and `options(step)` lists what a choice step may offer,
each option with its note (uses left, institutions per city, an escort), every one of them
judged by that same function. No I/O here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import cached_property
from typing import Any, Protocol

from bot.domain.bookings import (BookingFacts, BookingRequest, Person, Place, Refusal,
                                 bookable_dates, check_booking, escorted, packages_for,
                                 quota_years, remaining)
from bot.domain.rules import Package, Rules, Service
from bot.domain.workdays import SHANGHAI, Calendar

# Who a booking is for, as the flow stores it: the policyholder, a family member not yet on
# file (named and numbered in the chat), or a registered one (fm:<family member id>).
SELF, NEW, MEMBER = "self", "new", "fm:"


class Known(Protocol):
    """What the database says about one customer, each fact read at most once."""

    @property
    def family(self) -> tuple[Person, ...]: ...  # registered family members, in order

    @property
    def places(self) -> tuple[Place, ...]: ...  # every institution, by city and name

    def place(self, code: str) -> Place | None: ...

    def used(self, years: list[int]) -> Mapping[str, Mapping[int, int]]: ...
    # counted uses by service, then year (of the years asked for, at least)


@dataclass(frozen=True)
class Offer:
    """One option of a choice step: its code, what it stands for, and what its note says."""

    code: str
    item: Any  # the Service, Person, Package, city (str), Place or date offered
    left: int | None = None  # a service: uses left this year (0: used up, and said so)
    used: int = 0  # a service: uses counted this year
    count: int = 0  # a city: the institutions there that fit the booking
    escorted: bool = False  # an institution: staff escort the customer there


@dataclass(frozen=True)
class BookingDraft:
    rules: Rules
    calendar: Calendar
    now: datetime  # aware
    tier: str  # the tier the policyholder holds now
    me: Person  # the policyholder
    known: Known = field(repr=False)
    # The answers so far (a chat step's check sets one and asks again).
    service: str | None = None
    beneficiary: str | None = None  # SELF | NEW | MEMBER + id
    new_person: Person | None = None  # NEW: the family member named in the chat
    package: str | None = None
    institution: str | None = None  # institution code
    date: date | None = None

    def but(self, **answers: Any) -> "BookingDraft":
        """The same draft with other answers (the facts are shared, not read again)."""
        return replace(self, **answers)

    # --- The answers, resolved -----------------------------------------------------------

    @property
    def today(self) -> date:
        return self.now.astimezone(SHANGHAI).date()

    @cached_property
    def offered_service(self) -> Service | None:
        return self.rules.service(self.service) if self.service else None

    @cached_property
    def person(self) -> Person | None:
        """Who the booking is for, as far as known (None: not yet, or not theirs)."""
        who = self.beneficiary
        if who is None:
            service = self.offered_service
            return None if service is not None and service.family else self.me
        if who == SELF:
            return self.me
        if who == NEW:
            return self.new_person
        member_id = int(who.removeprefix(MEMBER))
        return next((p for p in self.known.family if p.family_member_id == member_id), None)

    @cached_property
    def chosen_package(self) -> str | None:
        """The chosen package, or the only one the tier offers the beneficiary."""
        if self.package:
            return self.package
        choices = self.packages()
        return choices[0].code if len(choices) == 1 else None

    @cached_property
    def place(self) -> Place | None:
        return self.known.place(self.institution) if self.institution else None

    def request(self, **override: Any) -> BookingRequest:
        """The booking request so far; `override` replaces any of its fields."""
        values = dict(beneficiary=self.person, package=self.chosen_package,
                      institution=self.place, date=self.date)
        values.update(override)
        return BookingRequest(service=self.service, tier=self.tier, requested_at=self.now,
                              **values)

    # --- The rules ---------------------------------------------------------------------------

    def facts(self, req: BookingRequest | None = None) -> BookingFacts:
        """What `check_booking` needs about `req` (the request so far when None)."""
        req = req or self.request()
        years = [req.date.year] if req.date else quota_years(self.now, self.rules)
        used = self.known.used(years).get(req.service, {}) \
            if req.service in self.rules.booking.services else {}
        return BookingFacts(rules=self.rules, calendar=self.calendar,
                            used={y: used.get(y, 0) for y in years})

    def judge(self, req: BookingRequest) -> Refusal | None:
        return check_booking(req, self.facts(req))

    def check(self, **override: Any) -> Refusal | None:
        """Why the booking so far (with `override`, see `request`) cannot be made, or None."""
        return self.judge(self.request(**override))

    def used_this_year(self, service: str) -> int:
        return self.known.used([self.today.year]).get(service, {}).get(self.today.year, 0)

    def spent_years(self) -> tuple[list[int], list[int]]:
        """(spent, spare): the years a booking made now may fall in whose uses of the
        service are all used, and those with some left."""
        service = self.offered_service
        limit = service.per_year or 0
        years = quota_years(self.now, self.rules)
        used = self.facts(self.request(date=None)).used
        spent = [y for y in years if used.get(y, 0) >= limit]
        return spent, [y for y in years if y not in spent]

    # --- What a choice step may offer ------------------------------------------------------

    def options(self, step: str, *, city: str | None = None, count: int = 0) -> list[Offer]:
        """The options of the flow's choice step `step` (service, beneficiary, package,
        city, institution, date): each judged by the rules where they decide it."""
        if step == "service":
            return self.services()
        if step == "beneficiary":
            return [Offer(SELF, self.me),
                    *(Offer(f"{MEMBER}{p.family_member_id}", p) for p in self.known.family)]
        if step == "package":
            return [Offer(p.code, p) for p in self.packages()]
        if step == "city":
            cities: dict[str, int] = {}
            for place in self.places():
                cities[place.city] = cities.get(place.city, 0) + 1
            return [Offer(c, c, count=n) for c, n in cities.items()]
        if step == "institution":
            escort = self.service in self.rules.booking.escorted_at_tertiary
            return [Offer(p.code, p, escorted=escort and escorted(p))
                    for p in self.places(city)]
        if step == "date":
            return [Offer(d.isoformat(), d) for d in self.dates(count)]
        raise ValueError(f"no options for step {step!r}")

    def services(self) -> list[Offer]:
        """The tier's bookable services, with this year's uses and what is left."""
        out = []
        for s in self.rules.bookable_services_for(self.tier):
            used = self.used_this_year(s.code)
            out.append(Offer(s.code, s, left=remaining(s, used), used=used))
        return out

    def packages(self) -> tuple[Package, ...]:
        """The tier's packages of the service open to the beneficiary's sex."""
        return packages_for(self.offered_service, self.tier, self.person)

    def places(self, city: str | None = None) -> list[Place]:
        """Institutions (in `city`) giving the service where the booking so far may be
        taken (any date)."""
        return [p for p in self.known.places
                if p.offers(self.service) and (city is None or p.city == city)
                and self.check(institution=p, date=None) is None]

    def dates(self, count: int) -> list[date]:
        """The first `count` dates the rules accept for the booking so far."""
        req = self.request(date=None)
        return bookable_dates(req, self.facts(req), count)
