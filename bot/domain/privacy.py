"""What the bot holds about one WeChat user (PIPL access requests), and erasing what the
bot itself stored when the user unbinds. Customer master data from imports is the
insurer's record and is not touched."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import delete
from sqlmodel import Session, select

from bot.infra.texts import local
from models import (Booking, Customer, FamilyMember, FsmState, HospitalVisit, LeftMessage, Policy,
                    WechatUser)


def _plain(row) -> dict:
    out = {}
    for key, value in row.model_dump().items():
        if isinstance(value, (datetime, date)):
            value = local(value).isoformat()  # an instant: TIMEZONE, with its offset
        elif isinstance(value, Decimal):
            value = str(value)
        out[key] = value
    return out


def export(session: Session, openid: str) -> dict:
    """Everything stored about `openid`: the WeChat account, its conversation state, the
    messages it left, and the policyholder it is bound to with their family and policies."""
    user = session.get(WechatUser, openid)
    out: dict = {"openid": openid, "wechat_user": _plain(user) if user else None}
    state = session.get(FsmState, openid)
    out["conversation_state"] = state.value if state else None
    out["left_messages"] = [_plain(m) for m in session.exec(
        select(LeftMessage).where(LeftMessage.openid == openid).order_by(LeftMessage.id))]
    customer = session.get(Customer, user.customer_id) if user and user.customer_id else None
    out["customer"] = _plain(customer) if customer else None
    from bot.domain.notify import messages_for

    out["messages"] = messages_for(session, openid, customer.id if customer else None)
    if customer is not None:
        out["family_members"] = [_plain(f) for f in session.exec(
            select(FamilyMember).where(FamilyMember.customer_id == customer.id))]
        out["policies"] = [_plain(p) for p in session.exec(
            select(Policy).where(Policy.customer_id == customer.id))]
        out["bookings"] = [_plain(b) for b in session.exec(
            select(Booking).where(Booking.customer_id == customer.id).order_by(Booking.id))]
        out["hospital_visits"] = [_plain(v) for v in session.exec(
            select(HospitalVisit).where(HospitalVisit.customer_id == customer.id))]
    return out


def erase_chat_data(session: Session, openid: str, customer_id: int | None = None) -> None:
    """Forget what the bot stored in chat for `openid`: conversation state (and any code
    hash in it), messages left, and the family members the policyholder added in chat that
    no booking refers to. Bookings stay: they are the insurer's service record and hold the
    year's quota (erasing them would hand a used quota back). The binding itself is removed
    by accounts.unbind."""
    session.exec(delete(FsmState).where(FsmState.key == openid))
    session.exec(delete(LeftMessage).where(LeftMessage.openid == openid))
    if customer_id is not None:
        used = select(Booking.family_member_id).where(Booking.family_member_id.is_not(None))
        session.exec(delete(FamilyMember).where(
            FamilyMember.customer_id == customer_id, FamilyMember.added_in_chat.is_(True),
            FamilyMember.id.not_in(used)))
