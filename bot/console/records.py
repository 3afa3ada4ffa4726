"""The calendar's coverage and the audit log."""
from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlmodel import Session

from bot.console import deps
from bot.console.bookings import PAGE_SIZE, parse_day
from bot.console.deps import StaffMember, require_staff
from bot.console.web import page, wording
from bot.domain.bookings import calendar
from bot.domain.workdays import SHANGHAI
from models import Staff, StaffAudit

router = APIRouter(prefix="/admin")
SOURCES = wording().calendar_sources  # a year's calendar source, by name (console/names.html)


@router.get("/calendar")
def calendar_page(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    cal = calendar()
    year = deps.services(request).now().year
    years = [dict(year=y, source=cal.source(y), name=SOURCES[cal.source(y)])
             for y in range(year - 1, year + 3)]
    return page(request, "calendar.html", years=years)


@router.get("/audit")
def audit_page(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    q = request.query_params
    staff, action, target = q.get("staff", "")[:64], q.get("action", "")[:32], q.get("target", "")[:64]
    start, end = parse_day(q.get("from")), parse_day(q.get("to"))
    try:
        page_no = max(1, min(10_000, int(q.get("page", "1"))))
    except ValueError:
        page_no = 1
    conds = []
    if staff:
        conds.append(StaffAudit.staff_openid == staff)
    if action:
        conds.append(StaffAudit.action == action)
    if target:
        conds.append(StaffAudit.target == target)
    if start:
        conds.append(StaffAudit.at >= datetime.combine(start, datetime.min.time(), SHANGHAI))
    if end:
        conds.append(StaffAudit.at < datetime.combine(end + timedelta(days=1),
                                                      datetime.min.time(), SHANGHAI))
    svc = deps.services(request)
    with Session(svc.engine) as session:
        rows = session.execute(select(StaffAudit).where(*conds).order_by(StaffAudit.id.desc())
                               .limit(PAGE_SIZE).offset((page_no - 1) * PAGE_SIZE)).scalars().all()
        total = session.execute(select(func.count()).select_from(StaffAudit).where(*conds)
                                ).scalar_one()
        actions = session.execute(select(StaffAudit.action).distinct().order_by(
            StaffAudit.action)).scalars().all()
        names = dict(session.execute(select(Staff.openid, Staff.name)).all())
    from urllib.parse import urlencode

    base = {k: v for k, v in dict(staff=staff, action=action, target=target,
                                  **{"from": q.get("from", ""), "to": q.get("to", "")}).items() if v}
    return page(request, "audit.html", rows=rows, total=total, actions=actions, names=names,
                staff=staff, action=action, target=target, start=start, end=end,
                page_no=page_no, pages=max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
                prev_q=urlencode({**base, "page": page_no - 1}),
                next_q=urlencode({**base, "page": page_no + 1}))
