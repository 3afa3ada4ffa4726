"""The bookings queue, its CSV export, and a booking's page with the staff actions. Every
action is the chat command's own domain function (bot.domain.staff_desk): confirm_booking,
close_booking, staff_cancel, with the version the form was shown (a colleague's change in
between refuses it as `changed`)."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy import and_, func, or_, select
from sqlmodel import Session

from bot.console import deps
from bot.console.deps import StaffMember, commit, require_staff
from bot.console.web import page, refusal, said, wording
from bot.domain import staff_desk as desk
from bot.domain.booking_store import booking_by_number
from bot.domain.bookings import ACTIVE, calendar
from bot.domain.staff_desk import StaffRefused
from bot.domain.vocab import BookingStatus
from bot.infra.privacy import mask_name
from bot.infra.texts import names as names_of, render
from models import Booking, Customer, FamilyMember, Institution, Notification, StaffAudit

router = APIRouter(prefix="/admin")

PAGE_SIZE = 50
# The chat commands' names (bot/templates/staff/names.j2, booking/names.j2), one set of words.
STATUS_NAMES = names_of("staff/names").status_names
ACTION_NAMES = names_of("staff/names").action_names
RELATION_NAMES = names_of("booking/names").relation_names
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def parse_day(value: str | None) -> date | None:
    value = (value or "").strip()
    if not DATE_RE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@dataclass
class Filters:
    status: str = ""
    service: str = ""
    city: str = ""
    institution: int | None = None
    start: date | None = None
    end: date | None = None
    needs_action: bool = False
    page: int = 1

    @classmethod
    def of(cls, request: Request) -> "Filters":
        q = request.query_params
        inst = q.get("institution", "")
        try:
            page_no = max(1, min(10_000, int(q.get("page", "1"))))
        except ValueError:
            page_no = 1
        return cls(status=q.get("status", "") if q.get("status", "") in STATUS_NAMES else "",
                   service=q.get("service", "")[:32], city=q.get("city", "")[:32],
                   institution=int(inst) if inst.isdigit() else None,
                   start=parse_day(q.get("from")), end=parse_day(q.get("to")),
                   needs_action=q.get("needs_action") == "1", page=page_no)

    def query_string(self, **change: Any) -> str:
        values = {"status": self.status, "service": self.service, "city": self.city,
                  "institution": self.institution or "", "from": self.start or "",
                  "to": self.end or "", "needs_action": "1" if self.needs_action else "",
                  "page": self.page}
        values.update(change)
        from urllib.parse import urlencode

        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _where(f: Filters, today: date):
    day = func.coalesce(Booking.confirmed_date, Booking.preferred_date)
    conds = []
    if f.status:
        conds.append(Booking.status == f.status)
    if f.service:
        conds.append(Booking.service == f.service)
    if f.city:
        conds.append(Institution.city == f.city)
    if f.institution:
        conds.append(Booking.institution_id == f.institution)
    if f.start:
        conds.append(day >= f.start)
    if f.end:
        conds.append(day <= f.end)
    if f.needs_action:  # submitted; or confirmed for the next 2 days and not yet reminded
        conds.append(or_(Booking.status == BookingStatus.SUBMITTED.value,
                         and_(Booking.status == BookingStatus.CONFIRMED.value,
                              Booking.confirmed_date >= today,
                              Booking.confirmed_date <= today + timedelta(days=2),
                              Booking.reminded_at.is_(None))))
    return conds


def find(session: Session, f: Filters, today: date, *, limit: int | None, offset: int = 0):
    query = (select(Booking, Customer, FamilyMember, Institution)
             .join(Customer, Customer.id == Booking.customer_id)
             .outerjoin(FamilyMember, FamilyMember.id == Booking.family_member_id)
             .outerjoin(Institution, Institution.id == Booking.institution_id)
             .where(*_where(f, today)).order_by(Booking.created_at, Booking.id))
    count = session.execute(select(func.count()).select_from(
        select(Booking.id).outerjoin(Institution, Institution.id == Booking.institution_id)
        .where(*_where(f, today)).subquery())).scalar_one()
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return session.execute(query).all(), int(count)


def age(created: datetime, now: datetime) -> str:
    """How long a booking (or a message) has waited, in days and hours."""
    hours = int((now - created).total_seconds() // 3600)
    words = wording()
    if hours >= 24:
        return words.age_days.format(days=hours // 24, hours=hours % 24)
    return words.age_hours.format(hours=max(hours, 0))


def _row(b: Booking, c: Customer, m: FamilyMember | None, i: Institution | None, names: dict,
         now: datetime) -> dict:
    return dict(number=b.number, service=names.get(b.service, b.service),
                person=mask_name(m.name if m else c.name),
                institution=i.name if i else "", city=i.city if i else "",
                preferred=b.preferred_date, confirmed=b.confirmed_date, at=b.confirmed_time,
                status=b.status, status_name=STATUS_NAMES.get(b.status, b.status),
                age=age(b.created_at, now))


def _choices(request: Request, session: Session) -> dict:
    rules = deps.services(request).rules
    institutions = session.execute(select(Institution.id, Institution.name, Institution.city)
                                   .order_by(Institution.city, Institution.name)).all()
    return dict(statuses=STATUS_NAMES, services=[(s.code, s.name) for s in rules.services],
                cities=sorted({r.city for r in institutions}), institutions=institutions)


@dataclass
class _Queue:
    now: datetime
    filters: Filters
    rows: list[dict]
    total: int
    choices: dict


def _queue(request: Request, *, limit: int, paged: bool) -> _Queue:
    """The queue as the request's filters select it: rows as the page and the CSV show them,
    the total, and (for the page) the filters' choices."""
    svc = deps.services(request)
    now = svc.now()
    f = Filters.of(request)
    names = {s.code: s.name for s in svc.rules.services}
    with Session(svc.engine) as session:
        found, total = find(session, f, now.date(), limit=limit,
                            offset=(f.page - 1) * limit if paged else 0)
        choices = _choices(request, session) if paged else {}
    return _Queue(now, f, [_row(*r, names, now) for r in found], total, choices)


@router.get("/bookings")
def queue_page(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    q = _queue(request, limit=PAGE_SIZE, paged=True)
    pages = max(1, (q.total + PAGE_SIZE - 1) // PAGE_SIZE)
    return page(request, "bookings.html", rows=q.rows, f=q.filters, total=q.total,
                pages=pages, **q.choices)


def _safe_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/bookings.csv")
def queue_csv(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    """The filtered queue as CSV (UTF-8 with BOM, for Excel), names masked."""
    q = _queue(request, limit=100_000, paged=False)
    out = io.StringIO()
    out.write("\ufeff")
    w = csv.writer(out)
    w.writerow(wording().queue_csv_header)
    for row in q.rows:
        w.writerow([_safe_cell(row[k]) for k in ("number", "service", "person", "institution",
                                                 "city", "preferred", "confirmed", "at",
                                                 "status_name", "age")])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="bookings-{q.now:%Y%m%d}.csv"'})


# --- One booking -------------------------------------------------------------------------------


def _history(session: Session, number: str) -> list[dict]:
    rows = session.execute(select(StaffAudit).where(StaffAudit.target == number)
                           .order_by(StaffAudit.id)).scalars().all()
    out = []
    import json

    for a in rows:
        after = json.loads(a.after) if a.after else {}
        out.append(dict(at=a.at, who=a.staff_openid, action=ACTION_NAMES.get(a.action, a.action),
                        status=STATUS_NAMES.get(after.get("status", ""), after.get("status", "")),
                        reason=after.get("reason")))
    return out


def _messages(session: Session, booking_id: int) -> list[Notification]:
    return list(session.execute(select(Notification).where(Notification.booking_id == booking_id)
                                .order_by(Notification.id)).scalars().all())


def booking_page(request: Request, number: str, *, status_code: int = 200, **values) -> Response:
    svc = deps.services(request)
    with Session(svc.engine) as session:
        b = booking_by_number(session, number)
        facts = None if b is None else _facts(request, session, b)
    if facts is None:
        return page(request, "not_found.html", status_code=404, what=said("a_booking", number=number))
    return page(request, "booking.html", status_code=status_code, **facts, **values)


def _facts(request: Request, session: Session, b: Booking) -> dict:
    rules = deps.services(request).rules
    c = session.get(Customer, b.customer_id)
    m = session.get(FamilyMember, b.family_member_id) if b.family_member_id else None
    inst = session.get(Institution, b.institution_id) if b.institution_id else None
    service = rules.service(b.service) if b.service in {s.code for s in rules.services} \
        else None
    package = next((p.name for p in (service.packages if service else ())
                    if p.code == b.package), b.package)
    day = b.confirmed_date or b.preferred_date
    cal = calendar()
    places = session.execute(select(Institution.name).where(
        Institution.services.contains(b.service)).order_by(Institution.name)).scalars().all()
    facts = dict(
        b=b, service=service.name if service else b.service, package=package,
        tier=rules.tier(b.tier).name if rules.has_tier(b.tier) else b.tier,
        person=mask_name(m.name if m else c.name), holder=mask_name(c.name),
        relation=RELATION_NAMES.get(m.relation, m.relation) if m else wording().self_person,
        institution=inst, status_name=STATUS_NAMES.get(b.status, b.status),
        free_cancel_until=cal.free_cancel_deadline(day, cutoff=rules.booking.cancel_cutoff),
        provisional=cal.is_provisional(day), active=b.status in ACTIVE,
        history=_history(session, b.number), messages=_messages(session, b.id),
        places=places, notes=[n for n in (b.department, b.hospital_preference, b.expert,
                                          b.exam, b.visit_note) if n])
    return facts


@router.get("/bookings/{number}")
def show(request: Request, number: str, me: StaffMember = Depends(require_staff())) -> Response:
    return booking_page(request, number.upper()[:16])


def _version(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _act(request: Request, number: str, version: str, action) -> Response:
    """Run one staff action in a transaction; a refusal re-shows the page saying why (409
    when a colleague changed the booking in the meantime), nothing changed."""
    svc = deps.services(request)
    shown = _version(version)
    if shown is None:
        return booking_page(request, number, status_code=400, error=said("form_expired"))
    with Session(svc.engine, expire_on_commit=False) as session:
        try:
            notice = action(session, svc.now(), shown)
        except StaffRefused as exc:
            session.rollback()
            return booking_page(request, number, status_code=409 if exc.code == "changed"
                                else 400, error=refusal(exc))
        commit(request, session)
    return booking_page(request, number, notice=notice)


@router.post("/bookings/{number}/confirm")
def confirm(request: Request, number: str, day: str = Form(""), at: str = Form(""),
            place: str = Form(""), version: str = Form(""),
            me: StaffMember = Depends(require_staff())) -> Response:
    number = number.upper()[:16]
    on = parse_day(day)
    if on is None or not TIME_RE.fullmatch(at.strip()):
        return booking_page(request, number, status_code=400,
                            error=said("confirm_fields"))

    def action(session: Session, now: datetime, shown: int):
        svc = deps.services(request)
        done = desk.confirm_booking(session, me.openid, number, on, at.strip(),
                                    place.strip() or None, now, svc.rules, calendar(),
                                    version=shown)
        b = done.booking
        return Markup(render("staff/confirmed", outcome=done.outcome, number=b.number,
                             day=b.confirmed_date, at=b.confirmed_time, place=done.place.name,
                             warnings=done.warnings))

    return _act(request, number, version, action)


@router.post("/bookings/{number}/close")
def close(request: Request, number: str, outcome: str = Form(""), version: str = Form(""),
          me: StaffMember = Depends(require_staff())) -> Response:
    number = number.upper()[:16]
    if outcome not in (BookingStatus.COMPLETED.value, BookingStatus.NO_SHOW.value):
        return booking_page(request, number, status_code=400, error=said("outcome_choice"))

    def action(session: Session, now: datetime, shown: int):
        b = desk.close_booking(session, me.openid, number, BookingStatus(outcome), now,
                               version=shown)
        return Markup(render("staff/closed", number=b.number, status=b.status))

    return _act(request, number, version, action)


@router.post("/bookings/{number}/cancel")
def cancel(request: Request, number: str, reason: str = Form(""), version: str = Form(""),
           me: StaffMember = Depends(require_staff())) -> Response:
    number = number.upper()[:16]
    if not reason.strip():
        return booking_page(request, number, status_code=400,
                            error=said("cancel_reason"))

    def action(session: Session, now: datetime, shown: int):
        b = desk.staff_cancel(session, me.openid, number, reason.strip()[:200], now,
                              version=shown)
        return Markup(render("staff/cancelled", number=b.number, reason=reason.strip()[:200]))

    return _act(request, number, version, action)
