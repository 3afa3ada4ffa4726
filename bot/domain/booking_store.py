"""Bookings in the database: the facts `check_booking` needs, and the writes that must hold
against concurrent requests.

The quota is enforced by the database: `submit_booking` inserts the (customer, service,
year) row of `quota_use` if it is missing (ON CONFLICT DO NOTHING), locks it with SELECT …
FOR UPDATE (PostgreSQL; SQLite has one writer at a time, which serialises the same way),
re-checks every rule with the uses counted under that lock, and inserts the booking in the
same transaction. A second request for the same quota waits for the first to commit and
then sees its booking. The row is only the lock: the uses are always counted from the
bookings (a use recorded another way, e.g. a booking taken by phone, counts at once).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from sqlalchemy import Connection, bindparam, func, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, select

from bot.domain.bookings import (BookingFacts, BookingRequest, Person, Place, Refusal,
                                 cancellation_terms, check_booking, quota_years, booking_number)
from bot.domain.identity import id_sex
from bot.infra.db import Prepared, upsert
from bot.domain.rules import Rules
from bot.domain.vocab import BookingStatus
from bot.domain.workdays import SHANGHAI, Calendar
from models import Booking, BookingDaySeq, Customer, FamilyMember, Institution, QuotaUse

BOOKING_T = Booking.__table__


class BookingRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal)
        self.refusal = refusal


# --- Reading -----------------------------------------------------------------------------------


# The reads on the chat's hot path take the message's Connection (or a Session, whose
# connection they then use) and run prebuilt Core statements: no ORM objects, and no
# savepoint opened for a message that only reads.
INSTITUTION_T = Institution.__table__
_USES = Prepared(
    select(BOOKING_T.c.quota_year, func.count())
    .where(BOOKING_T.c.customer_id == bindparam("customer_id"),
           BOOKING_T.c.service == bindparam("service"), BOOKING_T.c.counted.is_(True),
           BOOKING_T.c.quota_year.in_(bindparam("years", expanding=True)))
    .group_by(BOOKING_T.c.quota_year))
_INSTITUTIONS = Prepared(select(INSTITUTION_T).order_by(INSTITUTION_T.c.city, INSTITUTION_T.c.name))
_INSTITUTION = Prepared(select(INSTITUTION_T).where(INSTITUTION_T.c.code == bindparam("code")))
FAMILY_T = FamilyMember.__table__
_FAMILY = Prepared(select(FAMILY_T).where(FAMILY_T.c.customer_id == bindparam("customer_id"))
                   .order_by(FAMILY_T.c.id))
_ALL_USES = Prepared(
    select(BOOKING_T.c.service, BOOKING_T.c.quota_year, func.count())
    .where(BOOKING_T.c.customer_id == bindparam("customer_id"), BOOKING_T.c.counted.is_(True),
           BOOKING_T.c.quota_year.in_(bindparam("years", expanding=True)))
    .group_by(BOOKING_T.c.service, BOOKING_T.c.quota_year))


def _conn(db: Connection | Session) -> Connection:
    if isinstance(db, Connection):
        return db
    if db.autoflush:  # as session.execute would: the read sees the session's pending writes
        db.flush()
    return db.connection()


def quota_used(db: Connection | Session, customer_id: int, service: str, year: int) -> int:
    """Counted uses of a yearly quota: bookings submitted, confirmed, completed, missed or
    cancelled late whose service date falls in `year` (a free cancellation gives it back)."""
    return uses(db, customer_id, service, [year]).get(year, 0)


def uses(db: Connection | Session, customer_id: int, service: str,
         years: list[int]) -> dict[int, int]:
    rows = _USES.all(_conn(db), {"customer_id": customer_id, "service": service,
                                 "years": list(years)})
    return {int(y): int(n) for y, n in rows}


def institutions(db: Connection | Session, service: str | None) -> list[Place]:
    """Institutions giving `service` (any service when None), by city and name."""
    return [p for p in map(Place.of, _INSTITUTIONS.all(_conn(db), {}))
            if service is None or p.offers(service)]


def institution(db: Connection | Session, code: str) -> Place | None:
    row = _INSTITUTION.first(_conn(db), {"code": code})
    return Place.of(row) if row else None


def me(customer: Customer) -> Person:
    return Person(name=customer.name, id_number=customer.id_number, sex=customer.sex)


def names_on_file(session: Session, id_number: str) -> set[str]:
    """The names a known person with this ID number has on file (as a policyholder or as
    anyone's family member); empty when nobody has it."""
    customers = session.exec(select(Customer.name).where(Customer.id_number == id_number)).all()
    members = session.exec(select(FamilyMember.name)
                           .where(FamilyMember.id_number == id_number)).all()
    return {*customers, *members}


def person_of(member: FamilyMember) -> Person:
    return Person(name=member.name, id_number=member.id_number, sex=id_sex(member.id_number),
                  relation=member.relation, family_member_id=member.id)


def beneficiary(session: Session, customer: Customer, family_member_id: int | None) -> Person | None:
    """The policyholder, or their registered family member (None: not theirs)."""
    if family_member_id is None:
        return me(customer)
    member = session.get(FamilyMember, family_member_id)
    if member is None or member.customer_id != customer.id:
        return None
    return person_of(member)


def gather_facts(session: Connection | Session, customer_id: int, req: BookingRequest,
                 rules: Rules, calendar: Calendar, *, lock: bool = False) -> BookingFacts:
    """What `check_booking` needs to know about `req`. With `lock` (a Session then), the
    quota row of the service date's year is created if missing and locked until the
    transaction ends."""
    service = rules.service(req.service) if req.service in rules.booking.services else None
    years = [req.date.year] if req.date else quota_years(req.requested_at, rules)
    if lock and req.date is not None and service is not None and service.per_year is not None:
        lock_quota(session, customer_id, req.service, req.date.year)
    used = uses(session, customer_id, req.service, years) if service is not None else {}
    return BookingFacts(rules=rules, calendar=calendar, used=used)


class Stored:
    """What the database says about one customer's booking (`booking_draft.Known`), each
    fact read at most once, on first need: the facts of a `BookingDraft` for one message.
    Reads run on the message's connection (no ORM session, no savepoint)."""

    def __init__(self, conn: Connection, customer_id: int) -> None:
        self.conn, self.customer_id = conn, customer_id
        self._places: dict[str, Place | None] = {}
        self._used: dict[str, dict[int, int]] = {}
        self._years: set[int] = set()

    @cached_property
    def family(self) -> tuple[Person, ...]:
        return tuple(person_of(m) for m in _FAMILY.all(self.conn, {"customer_id": self.customer_id}))

    @cached_property
    def places(self) -> tuple[Place, ...]:
        out = tuple(institutions(self.conn, None))
        self._places.update((p.code, p) for p in out)
        return out

    def place(self, code: str) -> Place | None:
        if code not in self._places:
            if "places" in self.__dict__:  # all were read: it is not there
                return None
            self._places[code] = institution(self.conn, code)
        return self._places[code]

    def place_by_id(self, place_id: int) -> Place | None:
        return next((p for p in self.places if p.id == place_id), None)

    def used(self, years: list[int]) -> Mapping[str, Mapping[int, int]]:
        """Counted uses by service and year (of every service: one read for them all)."""
        missing = [y for y in years if y not in self._years]
        if missing:
            for service, year, n in _ALL_USES.all(self.conn, {"customer_id": self.customer_id,
                                                              "years": missing}):
                self._used.setdefault(service, {})[int(year)] = int(n)
            self._years.update(missing)
        return self._used


def lock_quota(session: Session, customer_id: int, service: str, year: int) -> QuotaUse:
    key = dict(customer_id=customer_id, service=service, year=year)
    session.execute(upsert(session, QuotaUse.__table__).values(**key).on_conflict_do_nothing())
    return session.execute(select(QuotaUse).filter_by(**key).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one()


def bookings_of(session: Session, customer_id: int, limit: int = 20) -> list[Booking]:
    """A policyholder's bookings (for themselves and for family), newest service date first."""
    return list(session.exec(select(Booking).where(Booking.customer_id == customer_id)
                             .order_by(Booking.preferred_date.desc(), Booking.id.desc())
                             .limit(limit)).all())


def booking_by_number(session: Session, number: str) -> Booking | None:
    return session.exec(select(Booking).where(Booking.number == number.upper())).first()


# --- Writing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewBooking:
    """What the customer confirmed; `request_key` is unique per confirmed request."""

    customer_id: int
    request: BookingRequest
    request_key: str
    new_member: FamilyMember | None = None  # a family member to register with the booking
    department: str | None = None
    hospital_preference: str | None = None
    expert: str | None = None
    exam: str | None = None
    visit_note: str | None = None


def submit_booking(session: Session, new: NewBooking, rules: Rules, calendar: Calendar,
                   now: datetime) -> Booking:
    """Check every rule with the quota row locked and write the booking as submitted (受理);
    raise `BookingRefused` when a rule refuses it. Runs in the caller's transaction."""
    req = new.request
    if req.date is None or req.institution is None or req.beneficiary is None:
        raise ValueError("a booking needs a beneficiary, an institution and a date")
    facts = gather_facts(session, new.customer_id, req, rules, calendar, lock=True)
    refusal = check_booking(req, facts)
    if refusal is not None:
        raise BookingRefused(refusal)
    member_id = req.beneficiary.family_member_id
    if new.new_member is not None:
        member_id = _register(session, new.new_member)
    day = now.astimezone(SHANGHAI).date()
    booking = Booking(
        number=booking_number(day, _next_seq(session, day)), request_key=new.request_key,
        customer_id=new.customer_id, family_member_id=member_id, tier=req.tier,
        service=req.service, package=req.package, institution_id=req.institution.id,
        department=new.department, hospital_preference=new.hospital_preference,
        expert=new.expert, exam=new.exam, visit_note=new.visit_note, preferred_date=req.date, quota_year=req.date.year,
        status=BookingStatus.SUBMITTED, counted=True,
        consent_at=now if not req.beneficiary.is_self else None,
        created_at=now, updated_at=now)
    session.add(booking)
    session.flush()
    return booking


def _register(session: Session, member: FamilyMember) -> int:
    """The id of the policyholder's family member with this ID number, added if new."""
    found = session.exec(select(FamilyMember).where(
        FamilyMember.customer_id == member.customer_id,
        FamilyMember.id_number == member.id_number)).first()
    if found is None:
        member.added_in_chat = True
        session.add(member)
        session.flush()
        found = member
    return found.id


def _next_seq(session: Session, day) -> int:
    """The day's next booking sequence number (the counter row is locked until commit)."""
    session.execute(upsert(session, BookingDaySeq.__table__).values(day=day, last=0)
                    .on_conflict_do_nothing())
    table = BookingDaySeq.__table__
    return session.execute(update(table).where(table.c.day == day)
                           .values(last=table.c.last + 1).returning(table.c.last)).scalar_one()


class Stale(Exception):
    """The booking changed since its version was read (another actor's UPDATE won)."""


def bump(session: Session, booking: Booking, seen: int | None = None) -> int:
    """Claim the change of `booking`: one UPDATE that adds one to its version WHERE the
    version is still `seen` (the one the actor was shown; None: the one loaded). A
    concurrent change committed in between makes it match no row: `Stale`."""
    seen = booking.version if seen is None else seen
    res = session.execute(update(BOOKING_T).where(BOOKING_T.c.id == booking.id,
                                                  BOOKING_T.c.version == seen)
                          .values(version=seen + 1))
    if res.rowcount != 1:
        raise Stale(booking.number)
    set_committed_value(booking, "version", seen + 1)
    return seen + 1


def cancel_booking(session: Session, booking: Booking, now: datetime, calendar: Calendar,
                   rules: Rules) -> bool:
    """Cancel `booking` now: free (not counted) or late (counted, cancelled_late), as
    `cancellation_terms` decides at this moment. Returns whether it was free."""
    free, _ = cancellation_terms(booking, now, calendar, cutoff=rules.booking.cancel_cutoff,
                                 grace_hours=rules.booking.confirm_grace_hours)
    if booking.quota_year:
        lock_quota(session, booking.customer_id, booking.service, booking.quota_year)
    session.refresh(booking, with_for_update=True)  # the version as it is now, locked
    bump(session, booking)
    booking.status = BookingStatus.CANCELLED if free else BookingStatus.CANCELLED_LATE
    booking.counted = not free
    booking.cancelled_at = booking.updated_at = now
    session.add(booking)
    session.flush()
    return free
