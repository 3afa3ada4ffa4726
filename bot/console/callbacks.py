"""Left messages and hospital-visit requests: the lists, reply and close. The reply is
`messages.reply_to_message`, the one #回复 uses (a customer-service message through the
outbox inside WeChat's window, else the reply-waiting template)."""
from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlmodel import Session

from bot.console import deps
from bot.console.deps import StaffMember, commit, require_staff
from bot.console.web import page, refusal, said
from bot.domain import messages as left
from bot.domain import staff_desk as desk
from bot.domain.staff_desk import StaffRefused
from bot.infra.privacy import mask_name, mask_phone
from bot.infra.texts import render

router = APIRouter(prefix="/admin")
MAX_REPLY = 600  # characters of a reply to a left message


def _caller(row: desk.CallBack) -> dict:
    c = row.customer
    if c is None:
        return dict(name=None, phone=None)
    return dict(name=mask_name(c.name), phone=c.phone if row.reveal else mask_phone(c.phone))


def _list_page(template: str, listing: Callable) -> Callable:
    """A page listing call-backs (`listing`: desk.left_messages or desk.visits), open ones
    unless ?all=1. The phones shown are audited (phone_shown), as #留言 and #探视 do."""
    def show(request: Request, me: StaffMember, status_code: int = 200, **values) -> Response:
        svc = deps.services(request)
        open_only = request.query_params.get("all") != "1"
        with Session(svc.engine, expire_on_commit=False) as session:
            rows = [dict(item=r.item, **_caller(r))
                    for r in listing(session, me.openid, svc.now(), open_only=open_only)]
            session.commit()
        return page(request, template, status_code=status_code, rows=rows,
                    open_only=open_only, **values)
    return show


_messages_page = _list_page("messages.html", desk.left_messages)
_visits_page = _list_page("visits.html", desk.visits)


def _act(request: Request, me: StaffMember, show: Callable, action: Callable,
         notice) -> Response:
    """Run a staff_desk action in one transaction and show the list again: with `notice`,
    or with the refusal's reason (nothing changed)."""
    svc = deps.services(request)
    with Session(svc.engine) as session:
        try:
            action(session, svc.now())
        except StaffRefused as exc:
            session.rollback()  # the connection goes back before the page reads
            return show(request, me, 400, error=refusal(exc))
        commit(request, session)
    return show(request, me, notice=notice)


@router.get("/messages")
def messages(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    return _messages_page(request, me)


@router.post("/messages/{message_id}/reply")
def reply(request: Request, message_id: int, text: str = Form(""),
          me: StaffMember = Depends(require_staff())) -> Response:
    text = text.strip()
    if not text or len(text) > MAX_REPLY:
        return _messages_page(request, me, 400, error=said("reply_empty", limit=MAX_REPLY))
    return _act(request, me, _messages_page,
                lambda session, now: left.reply_to_message(session, me.openid, message_id,
                                                           text, now),
                Markup(render("staff/replied", id=message_id)))


@router.post("/messages/{message_id}/close")
def close(request: Request, message_id: int, me: StaffMember = Depends(require_staff())
          ) -> Response:
    return _act(request, me, _messages_page,
                lambda session, now: left.close_message(session, me.openid, message_id, now),
                said("message_closed", id=message_id))


@router.get("/visits")
def visits(request: Request, me: StaffMember = Depends(require_staff())) -> Response:
    return _visits_page(request, me)


@router.post("/visits/{visit_id}/done")
def visit_done(request: Request, visit_id: int, me: StaffMember = Depends(require_staff())
               ) -> Response:
    return _act(request, me, _visits_page,
                lambda session, now: desk.close_visit(session, me.openid, visit_id, now),
                Markup(render("staff/visit_done", id=visit_id)))
