"""What staff do to bookings and hospital visits, with an audit row for every change; the
lists of left messages (answered and closed in bot.domain.messages) and visits to call back;
staff invitations; the customer lookup. One data layer for the chat commands
(`handlers/staff.py`) and the CLI.

Every booking rule stays in `bot.domain.bookings.check_booking`: a staff confirmation calls
it with `staff=True` (a date inside the customer lead time is then a warning).

Refusals raise `StaffRefused(code, **facts)`; the handler maps the code to a template.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import Session, select

from bot.domain import notify
from bot.domain.accounts import (BindRules, count_register_failure, keyed_digest,
                                 register_locked_until, save_staff)
from bot.domain.booking_store import (Stale, beneficiary, bump, gather_facts,
                                      lock_quota, booking_by_number, uses)
from bot.domain.bookings import (ACTIVE, BOOKING_NO, BookingRequest, Place, booking_warnings,
                                 check_booking, remaining, service_date, starts_at)
from bot.domain.rules import Rules
from bot.domain.vocab import STAFF_ROLES, BookingStatus
from bot.domain.workdays import SHANGHAI, Calendar
from models import (Booking, Customer, FamilyMember, HospitalVisit, Institution, LeftMessage,
                    Policy, Staff, StaffAudit, StaffInvite, WechatUser)

log = logging.getLogger(__name__)


class StaffRefused(Exception):
    """A staff action is refused; `code` names the reason (a template under staff/refused/)."""

    def __init__(self, code: str, **facts: Any) -> None:
        super().__init__(code)
        self.code = code
        self.facts = facts


# --- Audit ---------------------------------------------------------------------------------


def snapshot(row: Any) -> dict[str, Any] | None:
    """A table row as plain JSON-able values (for the audit's before and after)."""
    if row is None:
        return None
    out = {}
    for col in row.__table__.columns:
        value = getattr(row, col.name)
        out[col.name] = value.isoformat() if isinstance(value, (date, datetime)) else value
    return out


def audit(session: Session, who: str, action: str, target: str, now: datetime, *,
          before: dict | None = None, after: dict | None = None) -> StaffAudit:
    row = StaffAudit(staff_openid=who, action=action, target=str(target)[:64], at=now,
                     before=None if before is None else json.dumps(before, ensure_ascii=False,
                                                                   default=str),
                     after=None if after is None else json.dumps(after, ensure_ascii=False,
                                                                 default=str))
    session.add(row)
    session.flush()
    return row


def audit_many(conn, who: str, action: str, rows: list[tuple[str, dict | None, dict | None]],
               now: datetime) -> None:
    """Audit rows written set-based on a Connection (the bulk `bind --file`): one per
    (target, before, after)."""
    if not rows:
        return
    dump = lambda v: None if v is None else json.dumps(v, ensure_ascii=False, default=str)  # noqa: E731
    conn.execute(insert(StaffAudit.__table__), [
        dict(staff_openid=who, action=action, target=str(t)[:64], at=now, before=dump(b),
             after=dump(a)) for t, b, a in rows])


def audit_rows(session: Session, *, since: date | None = None, staff: str | None = None,
               limit: int = 1000) -> list[StaffAudit]:
    query = select(StaffAudit).order_by(StaffAudit.id)
    if since is not None:
        query = query.where(StaffAudit.at >= datetime.combine(since, datetime.min.time(),
                                                              tzinfo=SHANGHAI))
    if staff:
        query = query.where(StaffAudit.staff_openid == staff)
    return list(session.exec(query.limit(limit)).all())


# --- Invitations ----------------------------------------------------------------------------

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud or retyped
CODE_LENGTH = 10
INVITE_HOURS = 24


def _code_hash(secret: str, code: str) -> str:
    return keyed_digest(secret, "staff-invite", code.strip().upper())


def create_invite(session: Session, secret: str, name: str, role: str, now: datetime, *,
                  who: str = "cli") -> tuple[str, StaffInvite]:
    """A one-time code for a new staff member, valid 24 hours; only its HMAC is stored."""
    if role not in STAFF_ROLES:
        raise ValueError("role must be specialist or admin")
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    invite = StaffInvite(code_hash=_code_hash(secret, code), name=name.strip(), role=role,
                         created_at=now, expires_at=now + timedelta(hours=INVITE_HOURS))
    session.add(invite)
    session.flush()
    audit(session, who, "invite", f"invite:{invite.id}", now,
          after={"name": invite.name, "role": role, "expires_at": invite.expires_at})
    return code, invite


def redeem_invite(session: Session, secret: str, code: str, openid: str, now: datetime, *,
                  limits: BindRules) -> Staff:
    """Link `openid` as the invited staff member; refuses used, expired and unknown codes.
    Each refused code is counted against `openid` (in SQL, `accounts.count_register_failure`),
    logged (never the code) and audited; the last one allowed locks registration from that
    account for a while, as binding's failures do."""
    if session.get(Staff, openid) is not None:
        raise StaffRefused("already_staff")
    conn = session.connection()
    until = register_locked_until(conn, openid, now)
    if until is not None:
        raise StaffRefused("invite_locked", until=until.astimezone(SHANGHAI))
    why = None
    invite = None
    if not re.fullmatch(r"[A-Za-z0-9]{4,32}", code or ""):
        why = "bad_invite"
    else:
        invite = session.exec(select(StaffInvite).where(
            StaffInvite.code_hash == _code_hash(secret, code)).with_for_update()).first()
        if invite is None or invite.used_at is not None:
            why = "bad_invite"
        elif invite.expires_at <= now:
            why = "invite_expired"
    if why is not None:
        failure = count_register_failure(conn, openid, now, limits)
        log.warning("staff registration refused for %s… (%s; %s)", openid[:6], why,
                    f"locked until {failure.locked_until:%H:%M}" if failure.locked_until
                    else f"{failure.left} tries left")
        audit(session, openid, "register_failed", f"invite:{invite.id}" if invite else "invite",
              now, after={"why": why, "left": failure.left,
                          "locked_until": failure.locked_until})
        if failure.locked_until is not None:
            raise StaffRefused("invite_locked", until=failure.locked_until.astimezone(SHANGHAI))
        raise StaffRefused(why)
    invite.used_at, invite.used_by = now, openid
    session.add(invite)
    member = save_staff(session, openid, invite.name, invite.role, now)
    audit(session, openid, "register", f"invite:{invite.id}", now, after=snapshot(member))
    return member


# --- Bookings --------------------------------------------------------------------------------


@dataclass
class Confirmation:
    booking: Booking
    outcome: str  # confirmed | reconfirmed | unchanged
    place: Place
    warnings: list[str] = field(default_factory=list)  # too_soon | provisional


def find_booking(session: Session, number: str, *, lock: bool = True,
                 version: int | None = None) -> Booking:
    """The booking, locked; with `version` (the one the staff member was shown), refused as
    `changed` when it is no longer that one."""
    booking = booking_by_number(session, number)
    if booking is None:
        raise StaffRefused("unknown_booking", number=number.upper())
    if lock:
        session.refresh(booking, with_for_update=True)
    if version is not None and booking.version != version:
        raise _changed(booking)
    return booking


def booking_version(session: Session, number: str) -> int | None:
    """The version of a booking as a staff member is shown it now: the chat command reads it
    when it starts; a console passes the one it displayed."""
    booking = booking_by_number(session, number)
    return booking.version if booking is not None else None


def _changed(booking: Booking) -> StaffRefused:
    return StaffRefused("changed", number=booking.number, status=booking.status,
                        day=booking.confirmed_date, at=booking.confirmed_time)


def _claim(session: Session, booking: Booking, version: int | None) -> None:
    """Take the change: the UPDATE compares the version in its WHERE (see `bump`)."""
    try:
        bump(session, booking, version)
    except Stale:
        session.refresh(booking)
        raise _changed(booking) from None


def confirm_booking(session: Session, who: str, number: str, day: date, at: str,
                    place_name: str | None, now: datetime, rules: Rules, calendar: Calendar,
                    *, version: int | None = None) -> Confirmation:
    """Fix the institution, date and time of a booking (受理 → 预约成功), after the domain's
    one check (`check_booking(staff=True)`) with the quota re-counted under its lock.

    Idempotent: the same date, time and institution again changes nothing and sends nothing
    ("unchanged"). A different date, time or institution on a confirmed booking is a
    re-confirmation: the booking moves, confirmed_at is reset (which also restarts the grace
    for free cancellation) and the customer gets the new confirmation.

    `version`: the booking's version the staff member saw; another change since then (a
    colleague's confirmation a moment earlier) refuses this one as `changed`. A date and
    time already past is refused (the customer could not be told in time)."""
    booking = find_booking(session, number, version=version)
    if booking.status not in ACTIVE:
        raise StaffRefused("not_active", number=booking.number, status=booking.status)
    if place_name:
        row = session.exec(select(Institution).where(Institution.name == place_name)).first()
        if row is None:
            raise StaffRefused("unknown_institution", name=place_name)
    else:
        row = session.get(Institution, booking.institution_id) if booking.institution_id else None
        if row is None:
            raise StaffRefused("no_institution")
    place = Place.of(row)
    if (booking.status == BookingStatus.CONFIRMED and booking.confirmed_date == day
            and booking.confirmed_time == at and booking.institution_id == place.id):
        return Confirmation(booking, "unchanged", place)
    customer = session.get(Customer, booking.customer_id)
    person = beneficiary(session, customer, booking.family_member_id)
    req = BookingRequest(service=booking.service, tier=booking.tier, requested_at=now,
                         beneficiary=person, package=booking.package, institution=place, date=day)
    facts = gather_facts(session, booking.customer_id, req, rules, calendar, lock=True)
    if booking.counted and booking.quota_year in facts.used:  # this booking's own use
        used = dict(facts.used)
        used[booking.quota_year] -= 1
        facts = replace(facts, used=used)
    refusal = check_booking(req, facts, staff=True)
    if refusal is not None:
        raise StaffRefused(f"rule_{refusal.value}", number=booking.number, day=day,
                           year=day.year, place=place.name)
    if starts_at(day, at) <= now:
        raise StaffRefused("time_past", number=booking.number, day=day, at=at)
    warnings = [w.value for w in booking_warnings(req, facts)]
    if calendar.is_provisional(day):
        warnings.append("provisional")
    before = snapshot(booking)
    _claim(session, booking, version)
    outcome = "reconfirmed" if booking.status == BookingStatus.CONFIRMED else "confirmed"
    old_year = booking.quota_year
    if outcome == "reconfirmed":  # a reminder still waiting tells the old date, time or place
        notify.drop_reminders(session, booking, "re-confirmed", requeue=True)
    booking.status = BookingStatus.CONFIRMED
    booking.confirmed_date, booking.confirmed_time = day, at
    booking.institution_id = place.id
    booking.quota_year = day.year
    booking.confirmed_at = booking.updated_at = now
    booking.reminded_at = None
    session.add(booking)
    session.flush()
    if old_year != day.year:  # the use moves: the old year's is given back under its lock
        lock_quota(session, booking.customer_id, booking.service, old_year)
    audit(session, who, "confirm" if outcome == "confirmed" else "reconfirm", booking.number,
          now, before=before, after=snapshot(booking))
    notify.booking_confirmed(session, booking, now)
    return Confirmation(booking, outcome, place, warnings)


def close_booking(session: Session, who: str, number: str, status: BookingStatus,
                  now: datetime, *, version: int | None = None) -> Booking:
    """已完成 or 爽约 (a no-show keeps the use counted) for a confirmed booking whose
    service date has come."""
    booking = find_booking(session, number, version=version)
    if booking.status == status:
        raise StaffRefused("already_closed", number=booking.number, status=booking.status)
    if booking.status != BookingStatus.CONFIRMED:
        raise StaffRefused("not_confirmed", number=booking.number, status=booking.status)
    today = now.astimezone(SHANGHAI).date()
    if today < service_date(booking):
        raise StaffRefused("not_yet_due", number=booking.number, day=service_date(booking))
    before = snapshot(booking)
    _claim(session, booking, version)
    booking.status = status
    booking.counted = True
    booking.updated_at = now
    session.add(booking)
    session.flush()
    audit(session, who, status.value, booking.number, now, before=before, after=snapshot(booking))
    return booking


def staff_cancel(session: Session, who: str, number: str, reason: str, now: datetime, *,
                 version: int | None = None) -> Booking:
    """A cancellation by staff: never counted; the customer is told why."""
    booking = find_booking(session, number, version=version)
    if booking.status not in ACTIVE:
        raise StaffRefused("not_active", number=booking.number, status=booking.status)
    before = snapshot(booking)
    _claim(session, booking, version)
    lock_quota(session, booking.customer_id, booking.service, booking.quota_year)
    booking.status = BookingStatus.CANCELLED
    booking.counted = False
    booking.cancel_reason = reason.strip()[:200]
    booking.cancelled_at = booking.updated_at = now
    session.add(booking)
    session.flush()
    audit(session, who, "cancel", booking.number, now, before=before,
          after={**snapshot(booking), "reason": reason})
    notify.booking_cancelled(session, booking, now, counted=False, by_staff=True, reason=reason)
    return booking


@dataclass
class QueueLine:
    booking: Booking
    person: str  # the beneficiary's name (mask before showing)
    city: str
    institution: str

    @property
    def notes(self) -> list[str]:
        """What the customer wrote with the booking (department, hospital, expert, exam)."""
        b = self.booking
        return [n for n in (b.department, b.hospital_preference, b.expert, b.exam) if n]


def queue(session: Session, statuses: tuple[str, ...], service: str | None, city: str | None,
          limit: int = 300) -> list[QueueLine]:
    """Bookings in these statuses, by service date (the confirmed date, else the preferred
    one), soonest first."""
    day = func.coalesce(Booking.confirmed_date, Booking.preferred_date)
    query = (select(Booking, Customer, FamilyMember, Institution)
             .join(Customer, Customer.id == Booking.customer_id)
             .outerjoin(FamilyMember, FamilyMember.id == Booking.family_member_id)
             .outerjoin(Institution, Institution.id == Booking.institution_id)
             .where(Booking.status.in_(statuses))
             .order_by(day, Booking.confirmed_time, Booking.id).limit(limit))
    if service:
        query = query.where(Booking.service == service)
    if city:
        query = query.where(Institution.city == city)
    return [QueueLine(b, (m.name if m else c.name), i.city if i else "", i.name if i else "")
            for b, c, m, i in session.exec(query).all()]


# --- Customers ---------------------------------------------------------------------------------


@dataclass
class Summary:
    customer: Customer
    tier: str
    bookings_this_year: int
    quotas: list[tuple[str, int | None]]  # (service name, uses left this year)
    last_contact: datetime | None
    matches: int = 1  # customers sharing the phone number looked up


PHONE = re.compile(r"1\d{10}")


def lookup(session: Session, key: str, today: date, rules: Rules) -> Summary | None:
    """A customer by booking number, mobile phone or policy number."""
    key = key.strip()
    customers: list[Customer] = []
    if BOOKING_NO.fullmatch(key):
        booking = booking_by_number(session, key)
        if booking is not None:
            customers = [session.get(Customer, booking.customer_id)]
    elif PHONE.fullmatch(key):
        customers = list(session.exec(select(Customer).where(Customer.phone == key)
                                      .order_by(Customer.id)).all())
    else:
        policy = session.exec(select(Policy).where(Policy.policy_no == key)).first()
        if policy is not None:
            customers = [session.get(Customer, policy.customer_id)]
    if not customers:
        return None
    c = customers[0]
    year = today.year
    count = session.execute(select(func.count()).select_from(Booking).where(
        Booking.customer_id == c.id, Booking.quota_year == year)).scalar_one()
    quotas = []
    for service in rules.bookable_services_for(c.tier):
        used = uses(session, c.id, service.code, [year]).get(year, 0)
        quotas.append((service.name, remaining(service, used)))
    user = session.exec(select(WechatUser).where(WechatUser.customer_id == c.id)).first()
    last = user.last_seen_at if user else None
    message = session.exec(select(LeftMessage.created_at).where(LeftMessage.customer_id == c.id)
                           .order_by(LeftMessage.id.desc())).first()
    if message is not None and (last is None or message > last):
        last = message
    return Summary(c, c.tier, int(count), quotas, last, matches=len(customers))


# --- Messages and hospital visits --------------------------------------------------------------


@dataclass
class CallBack:
    """A left message or a visit request, with the customer to call back: `reveal` when
    the phone on file is shown to staff in full (an open item; audited as `phone_shown`)."""

    item: Any  # LeftMessage | HospitalVisit
    customer: Customer | None  # None: the follower was not bound
    reveal: bool = False


def _reveal(session: Session, who: str, rows: list[CallBack], what: str, now: datetime
            ) -> list[CallBack]:
    """docs/programme.md: staff may see the phone on file of a customer who left a message or a
    visit request, to call back, audited: one audit row per phone shown."""
    for row in rows:
        if row.reveal:
            audit(session, who, "phone_shown", f"customer:{row.customer.id}", now,
                  after={"for": f"{what}:{row.item.id}"})
    return rows


def left_messages(session: Session, who: str, now: datetime, *, open_only: bool
                  ) -> list[CallBack]:
    """Left messages, oldest first, with who left them (the phone in full while open)."""
    query = (select(LeftMessage, Customer)
             .outerjoin(Customer, Customer.id == LeftMessage.customer_id)
             .order_by(LeftMessage.id))
    if open_only:
        query = query.where(LeftMessage.closed_at.is_(None))
    rows = [CallBack(m, c, reveal=c is not None and bool(c.phone) and m.closed_at is None)
            for m, c in session.exec(query).all()]
    return _reveal(session, who, rows, "message", now)


def visits(session: Session, who: str, now: datetime, *, open_only: bool) -> list[CallBack]:
    """Visit requests, oldest first, with the customer (the phone in full while open)."""
    query = (select(HospitalVisit, Customer).join(Customer, Customer.id == HospitalVisit.customer_id)
             .order_by(HospitalVisit.id))
    if open_only:
        query = query.where(HospitalVisit.status == "open")
    rows = [CallBack(v, c, reveal=bool(c.phone) and v.status == "open")
            for v, c in session.exec(query).all()]
    return _reveal(session, who, rows, "visit", now)


def close_visit(session: Session, who: str, visit_id: int, now: datetime) -> HospitalVisit:
    visit = session.get(HospitalVisit, visit_id)
    if visit is None:
        raise StaffRefused("unknown_visit", id=visit_id)
    if visit.status == "done":
        raise StaffRefused("visit_done", id=visit_id)
    before = snapshot(visit)
    visit.status = "done"
    session.add(visit)
    session.flush()
    audit(session, who, "visit_done", f"visit:{visit.id}", now, before=before,
          after=snapshot(visit))
    return visit
