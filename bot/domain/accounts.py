"""Customers and their WeChat accounts: the one place that finds a policyholder by ID
number, binds and unbinds an openid, and says who holds a customer. Used by the chat
handlers, the CLI and the demo alike."""
from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from models import Customer, WechatUser


class BoundElsewhere(Exception):
    """The customer is already bound to another WeChat account."""


def customer_by_id_number(session: Session, id_number: str) -> Customer | None:
    return session.exec(select(Customer).where(Customer.id_number == id_number)).first()


def holder_of(session: Session, customer_id: int) -> WechatUser | None:
    """The WeChat account bound to this customer, if any."""
    return session.exec(select(WechatUser).where(WechatUser.customer_id == customer_id)).first()


def bound_elsewhere(session: Session, customer: Customer, openid: str) -> bool:
    holder = holder_of(session, customer.id)
    return holder is not None and holder.openid != openid


def bind(session: Session, openid: str, customer: Customer, now: datetime) -> WechatUser:
    """Attach `openid` to `customer` (one customer, one WeChat account)."""
    if bound_elsewhere(session, customer, openid):
        raise BoundElsewhere(customer.id)
    user = session.get(WechatUser, openid) or WechatUser(openid=openid, following=True)
    user.customer_id, user.bound_at = customer.id, now
    user.bind_failures, user.bind_locked_until = 0, None
    session.add(user)
    return user


def unbind(session: Session, openid: str) -> bool:
    """Detach `openid` from its customer; False when it was not bound."""
    user = session.get(WechatUser, openid)
    if user is None or user.customer_id is None:
        return False
    user.customer_id, user.bound_at = None, None
    session.add(user)
    return True
