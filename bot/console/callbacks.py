"""Left messages and hospital-visit requests: the lists, reply and close. The reply is
`messages.reply_to_message`, the one #回复 uses (a customer-service message through the
outbox inside WeChat's window, else the reply-waiting template)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlmodel import Session

from bot.console import deps
from bot.console.bookings import refusal
from bot.console.deps import StaffMember, commit, require_staff
from bot.console.web import page
from bot.domain import messages as left
from bot.domain import staff_desk as desk
from bot.domain.staff_desk import StaffRefused
from bot.infra.privacy import mask_name, mask_phone
from bot.infra.texts import render

router = APIRouter(prefix="/admin")


def _caller(row: desk.CallBack) -> dict:
    c = row.customer
    if c is None:
        return dict(name=None, phone=None)
    return dict(name=mask_name(c.name), phone=c.phone if row.reveal else mask_phone(c.phone))


def _messages_page(request: Request, me: StaffMember, status_code: int = 200, **values):
    svc = deps.services(request)
    open_only = request.query_params.get("all") != "1"
    with Session(svc.engine, expire_on_commit=False) as session:
        rows = [dict(item=r.item, **_caller(r))
                for r in desk.left_messages(session, me.openid, svc.now(), open_only=open_only)]
        session.commit()  # the phones shown are audited (phone_shown), as #留言 does
    return page(request, "messages.html", status_code=status_code, rows=rows,
                open_only=open_only, **values)


@router.get("/messages")
def messages(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    return _messages_page(request, me)


@router.post("/messages/{message_id}/reply")
def reply(request: Request, message_id: int, text: str = Form(""),
          me: StaffMember = Depends(require_staff())) -> Response:
    text = text.strip()
    if not text or len(text) > 600:
        return _messages_page(request, me, 400, error="请填写回复内容（600字以内）。")
    svc = deps.services(request)
    with Session(svc.engine) as session:
        try:
            left.reply_to_message(session, me.openid, message_id, text, svc.now())
        except StaffRefused as exc:
            session.rollback()  # the connection goes back before the page reads
            return _messages_page(request, me, 400, error=refusal(exc))
        commit(request, session)
    return _messages_page(request, me, notice=Markup(render("staff/replied", id=message_id)))


@router.post("/messages/{message_id}/close")
def close(request: Request, message_id: int, me: StaffMember = Depends(require_staff())
          ) -> Response:
    svc = deps.services(request)
    with Session(svc.engine) as session:
        try:
            left.close_message(session, me.openid, message_id, svc.now())
        except StaffRefused as exc:
            session.rollback()
            return _messages_page(request, me, 400, error=refusal(exc))
        commit(request, session)
    return _messages_page(request, me, notice=f"留言 {message_id} 已关闭（未回复客户）。")


def _visits_page(request: Request, me: StaffMember, status_code: int = 200, **values):
    svc = deps.services(request)
    open_only = request.query_params.get("all") != "1"
    with Session(svc.engine, expire_on_commit=False) as session:
        rows = [dict(item=r.item, **_caller(r))
                for r in desk.visits(session, me.openid, svc.now(), open_only=open_only)]
        session.commit()
    return page(request, "visits.html", status_code=status_code, rows=rows,
                open_only=open_only, **values)


@router.get("/visits")
def visits(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    return _visits_page(request, me)


@router.post("/visits/{visit_id}/done")
def visit_done(request: Request, visit_id: int, me: StaffMember = Depends(require_staff())
               ) -> Response:
    svc = deps.services(request)
    with Session(svc.engine) as session:
        try:
            desk.close_visit(session, me.openid, visit_id, svc.now())
        except StaffRefused as exc:
            session.rollback()  # the connection goes back before the page reads
            return _visits_page(request, me, 400, error=refusal(exc))
        commit(request, session)
    return _visits_page(request, me, notice=Markup(render("staff/visit_done", id=visit_id)))
