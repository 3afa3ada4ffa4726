"""Admin pages: broadcasts (the #群发 domain: allowance locked per tier and month), the
outbox (backlog, dead letters, retry), institutions (the `import institutions` importer)
and staff accounts (invite, remove, reset a password)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy import func, select
from sqlmodel import Session

from bot.console import deps
from bot.console.deps import StaffMember, commit, require_staff
from bot.console.web import page, refusal, said
from bot.domain import broadcasts, staff_login
from bot.domain import importer
from bot.domain import staff_desk as desk
from bot.domain.staff_desk import StaffRefused
from bot.domain.vocab import STAFF_ROLES
from bot.infra import outbox
from bot.infra.texts import render
from models import Institution, Notification, Staff

router = APIRouter(prefix="/admin")
ADMIN = require_staff("admin")
MAX_BROADCAST = 600  # characters of a broadcast's text
MAX_UPLOAD = 5 * 1024 * 1024
MAX_NAME = 64  # characters of a staff member's name (the column's length)


# --- Broadcasts ----------------------------------------------------------------------------


def _broadcast_page(request: Request, status_code: int = 200, **values) -> Response:
    svc = deps.services(request)
    rules = svc.rules
    codes = [t.code for t in rules.tiers]
    with Session(svc.engine) as session:
        sizes = broadcasts.audience(session, codes)
        left = broadcasts.remaining(session, codes, svc.now())
        history = broadcasts.history(session, 50)
    tiers = [dict(code=t.code, name=t.name, audience=sizes[t.code], left=left[t.code])
             for t in rules.tiers]
    names = {t.code: t.name for t in rules.tiers}
    return page(request, "broadcasts.html", status_code=status_code, tiers=tiers,
                history=history, names=names, limit=broadcasts.MONTHLY_LIMIT,
                chosen=values.pop("chosen", []), content=values.pop("content", ""),
                preview=values.pop("preview", None), **values)


def _tiers(request: Request, form) -> list[str]:
    known = [t.code for t in deps.services(request).rules.tiers]
    chosen = [t for t in form.getlist("tier") if t in known]
    return [t for t in known if t in chosen]


@router.get("/broadcasts")
def broadcast_form(request: Request, me: StaffMember = Depends(ADMIN)) -> Response:
    return _broadcast_page(request)


@router.post("/broadcasts/preview")
async def broadcast_preview(request: Request, me: StaffMember = Depends(ADMIN)) -> Response:
    form = await request.form()
    tiers, content = _tiers(request, form), str(form.get("content") or "").strip()
    if not tiers or not content or len(content) > MAX_BROADCAST:
        return _broadcast_page(request, 400, chosen=tiers, content=content[:MAX_BROADCAST],
                               error=said("broadcast_invalid", limit=MAX_BROADCAST))
    svc = deps.services(request)
    with Session(svc.engine) as session:
        try:
            found = broadcasts.preview(session, tiers, svc.now())
        except StaffRefused as exc:
            session.rollback()
            return _broadcast_page(request, 409, chosen=tiers, content=content,
                                   error=refusal(exc))
    names = {t.code: t.name for t in svc.rules.tiers}
    rows = [dict(name=names[p.tier], audience=p.audience, left=p.left) for p in found]
    return _broadcast_page(request, chosen=tiers, content=content, preview=dict(
        rows=rows, total=sum(p.audience for p in found)))


@router.post("/broadcasts/send")
async def broadcast_send(request: Request, me: StaffMember = Depends(ADMIN)) -> Response:
    form = await request.form()
    tiers, content = _tiers(request, form), str(form.get("content") or "").strip()
    if not tiers or not content or len(content) > MAX_BROADCAST or form.get("confirmed") != "1":
        return _broadcast_page(request, 400, chosen=tiers, content=content[:MAX_BROADCAST],
                               error=said("preview_first"))
    svc = deps.services(request)
    with Session(svc.engine) as session:
        try:
            rows = broadcasts.send(session, me.openid, tiers, content, svc.now())
        except StaffRefused as exc:
            session.rollback()
            return _broadcast_page(request, 409, error=refusal(exc))
        names = [svc.rules.tier(r.tier).name for r in rows]
        audience = sum(r.audience for r in rows)
        commit(request, session)
    return _broadcast_page(request, notice=Markup(render("staff/broadcast_sent", names=names,
                                                         audience=audience)))


# --- The outbox ------------------------------------------------------------------------------


def _outbox_page(request: Request, status_code: int = 200, **values) -> Response:
    svc = deps.services(request)
    c = Notification.__table__.c
    with Session(svc.engine) as session:
        backlog = session.execute(select(c.status, c.kind, func.count()).group_by(
            c.status, c.kind).order_by(c.status, c.kind)).all()
        oldest = session.execute(select(func.min(c.created_at)).where(
            c.status == "pending")).scalar()
    dead = outbox.listing(svc.engine, dead_only=True, limit=200)
    age = None
    if oldest is not None:
        from bot.console.bookings import age as waited

        age = waited(oldest, svc.now())
    return page(request, "outbox.html", status_code=status_code, backlog=backlog,
                oldest=oldest, age=age, dead=dead, **values)


@router.get("/outbox")
def outbox_page(request: Request, me: StaffMember = Depends(ADMIN)) -> Response:
    return _outbox_page(request)


@router.post("/outbox/retry")
def outbox_retry(request: Request, row: str = Form(""), me: StaffMember = Depends(ADMIN)
                 ) -> Response:
    svc = deps.services(request)
    now = svc.now()
    if row == "all":
        ids = [r.id for r in outbox.listing(svc.engine, dead_only=True, limit=100_000)]
        n = outbox.retry(svc.engine, now.timestamp(), all_dead=True)
    elif row.isdigit():
        ids = [int(row)]
        n = outbox.retry(svc.engine, now.timestamp(), row_id=int(row))
    else:
        return _outbox_page(request, 400, error=said("retry_none"))
    with Session(svc.engine) as session:
        desk.audit(session, me.openid, "outbox_retry", f"outbox:{row}", now,
                   after={"rows": n})
        channels = dict(session.execute(select(Notification.id, Notification.channel).where(
            Notification.id.in_(ids[:1000]))).all()) if n else {}
        session.commit()
    if channels:  # sent now; the dispatcher's sweep takes what is left
        svc.kick_outbox(list(channels.items()))
    return _outbox_page(request, notice=said("retried", n=n))


# --- Institutions ------------------------------------------------------------------------------


def _institutions_page(request: Request, status_code: int = 200, **values) -> Response:
    svc = deps.services(request)
    names = {s.code: s.name for s in svc.rules.services}
    with Session(svc.engine) as session:
        rows = session.execute(select(Institution).order_by(Institution.city, Institution.name)
                               ).scalars().all()
    items = [dict(i=i, services=[names.get(s, s) for s in i.services.split(";") if s])
             for i in rows]
    return page(request, "institutions.html", status_code=status_code, rows=items, **values)


@router.get("/institutions")
def institutions(request: Request, me: StaffMember = Depends(ADMIN)) -> Response:
    return _institutions_page(request)


@router.post("/institutions/upload")
async def institutions_upload(request: Request, file: UploadFile = File(None),
                              me: StaffMember = Depends(ADMIN)) -> Response:
    if file is None or not file.filename:
        return _institutions_page(request, 400, error=said("csv_missing"))
    data = await file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        return _institutions_page(request, 400, error=said("csv_too_big", mb=MAX_UPLOAD // (1024 * 1024)))
    svc = deps.services(request)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "institutions.csv"
        path.write_bytes(data)
        report = importer.import_csv(svc.settings, "institutions", path, skip_bad=False,
                                     progress=False, actor=me.openid)
    lines = report.render().replace(str(path), file.filename[:100]).splitlines()
    ok = report.written and report.file_error is None and not report.rejected
    with Session(svc.engine) as session:
        desk.audit(session, me.openid, "import_institutions", file.filename[:60], svc.now(),
                   after={"written": ok, "inserted": report.inserted, "updated": report.updated,
                          "rejected": report.rejected})
        session.commit()
    return _institutions_page(request, 200 if ok else 400, report=lines, ok=ok)


# --- Staff -------------------------------------------------------------------------------------


def _staff_page(request: Request, status_code: int = 200, **values) -> Response:
    svc = deps.services(request)
    with Session(svc.engine) as session:
        rows = session.execute(select(Staff).order_by(Staff.role, Staff.name)).scalars().all()
    return page(request, "staff.html", status_code=status_code, rows=rows,
                roles=STAFF_ROLES, **values)


@router.get("/staff")
def staff(request: Request, me: StaffMember = Depends(ADMIN)) -> Response:
    return _staff_page(request)


@router.post("/staff/invite")
def staff_invite(request: Request, name: str = Form(""), role: str = Form(""),
                 me: StaffMember = Depends(ADMIN)) -> Response:
    name = name.strip()
    if not name or len(name) > MAX_NAME or role not in STAFF_ROLES:
        return _staff_page(request, 400, error=said("staff_invalid", limit=MAX_NAME))
    svc = deps.services(request)
    with Session(svc.engine) as session:
        code, invite = desk.create_invite(session, svc.settings.secret_key, name, role,
                                          svc.now(), who=me.openid)
        expires = invite.expires_at
        session.commit()
    return _staff_page(request, invite=dict(name=name, role=role, code=code, expires=expires))


def _member(session: Session, openid: str) -> Staff | None:
    return session.get(Staff, openid[:64])


@router.post("/staff/{openid}/remove")
def staff_remove(request: Request, openid: str, me: StaffMember = Depends(ADMIN)) -> Response:
    svc = deps.services(request)
    if openid == me.openid:
        return _staff_page(request, 400, error=said("self_deactivate"))
    with Session(svc.engine) as session:
        member = _member(session, openid)
        if member is None:
            session.rollback()
            return _staff_page(request, 404, error=said("unknown_staff"))
        name = member.name
        staff_login.remove_staff(session, me.openid, member, svc.now())
        session.commit()
    return _staff_page(request, notice=said("deactivated", name=name))


@router.post("/staff/{openid}/password")
def staff_password(request: Request, openid: str, me: StaffMember = Depends(ADMIN)) -> Response:
    svc = deps.services(request)
    with Session(svc.engine) as session:
        member = _member(session, openid)
        if member is None:
            session.rollback()
            return _staff_page(request, 404, error=said("unknown_staff"))
        password = staff_login.temporary_password()
        staff_login.set_password(session, me.openid, member, password, svc.now())
        reset = dict(name=member.name, login=member.login, password=password)
        session.commit()
    return _staff_page(request, reset=reset)
