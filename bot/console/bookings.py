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
from bot.console.web import page
from bot.domain import staff_desk as desk
from bot.domain.booking_store import booking_by_number
from bot.domain.bookings import ACTIVE, calendar
from bot.domain.staff_desk import StaffRefused
from bot.domain.vocab import BookingStatus
from bot.infra.privacy import mask_name
from bot.infra.texts import render
from models import Booking, Customer, FamilyMember, Institution, Notification, StaffAudit

router = APIRouter(prefix="/admin")

PAGE_SIZE = 50
STATUS_NAMES = {"submitted": "受理", "confirmed": "已确认", "completed": "已完成",
                "no_show": "爽约", "cancelled": "已取消", "cancelled_late": "逾期取消"}
RELATION_NAMES = {"spouse": "配偶", "parent": "父母", "child": "子女"}
ACTION_NAMES = {"confirm": "确认", "reconfirm": "改期确认", "completed": "完成", "no_show": "爽约",
                "cancel": "取消", "booked": "提交"}
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def refusal(exc: StaffRefused) -> Markup:
    """The chat command's refusal sentence (staff/refused.j2). The staff templates escape
    every value they print (bot.infra.texts `inert`), so the sentence is safe as it is."""
    return Markup(render("staff/refused", code=exc.code, **exc.facts))


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


def _age(created: datetime, now: datetime) -> str:
    hours = int((now - created).total_seconds() // 3600)
    return f"{hours // 24}天{hours % 24}小时" if hours >= 24 else f"{max(hours, 0)}小时"


def _row(b: Booking, c: Customer, m: FamilyMember | None, i: Institution | None, names: dict,
         now: datetime) -> dict:
    return dict(number=b.number, service=names.get(b.service, b.service),
                person=mask_name(m.name if m else c.name),
                institution=i.name if i else "", city=i.city if i else "",
                preferred=b.preferred_date, confirmed=b.confirmed_date, at=b.confirmed_time,
                status=b.status, status_name=STATUS_NAMES.get(b.status, b.status),
                age=_age(b.created_at, now))


def _choices(request: Request, session: Session) -> dict:
    rules = deps.services(request).rules
    institutions = session.execute(select(Institution.id, Institution.name, Institution.city)
                                   .order_by(Institution.city, Institution.name)).all()
    return dict(statuses=STATUS_NAMES, services=[(s.code, s.name) for s in rules.services],
                cities=sorted({r.city for r in institutions}), institutions=institutions)


@router.get("/bookings")
def queue_page(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    svc = deps.services(request)
    now = svc.now()
    f = Filters.of(request)
    names = {s.code: s.name for s in svc.rules.services}
    with Session(svc.engine) as session:
        rows, total = find(session, f, now.date(), limit=PAGE_SIZE,
                           offset=(f.page - 1) * PAGE_SIZE)
        choices = _choices(request, session)
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    return page(request, "bookings.html", rows=[_row(*r, names, now) for r in rows], f=f,
                total=total, pages=pages, **choices)


def _safe_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/bookings.csv")
def queue_csv(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    """The filtered queue as CSV (UTF-8 with BOM, for Excel), names masked."""
    svc = deps.services(request)
    now = svc.now()
    f = Filters.of(request)
    names = {s.code: s.name for s in svc.rules.services}
    with Session(svc.engine) as session:
        rows, _ = find(session, f, now.date(), limit=100_000)
    out = io.StringIO()
    out.write("\ufeff")
    w = csv.writer(out)
    w.writerow(["预约号", "服务", "受益人", "机构", "城市", "期望日期", "确认日期", "时间", "状态",
                "已等待"])
    for r in rows:
        row = _row(*r, names, now)
        w.writerow([_safe_cell(row[k]) for k in ("number", "service", "person", "institution",
                                                 "city", "preferred", "confirmed", "at",
                                                 "status_name", "age")])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="bookings-{now:%Y%m%d}.csv"'})


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
        return page(request, "not_found.html", status_code=404, what=f"预约 {number}")
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
        relation=RELATION_NAMES.get(m.relation, m.relation) if m else "本人",
        institution=inst, status_name=STATUS_NAMES.get(b.status, b.status),
        free_cancel_until=cal.free_cancel_deadline(day),
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
        return booking_page(request, number, status_code=400, error="表单已过期，请刷新页面后重试。")
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
                            error="请填写确认日期（YYYY-MM-DD）和时间（HH:MM）。")

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
        return booking_page(request, number, status_code=400, error="请选择「已完成」或「爽约」。")

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
                            error="请填写取消原因，客户会收到这个原因。")

    def action(session: Session, now: datetime, shown: int):
        b = desk.staff_cancel(session, me.openid, number, reason.strip()[:200], now,
                              version=shown)
        return Markup(render("staff/cancelled", number=b.number, reason=reason.strip()[:200]))

    return _act(request, number, version, action)
