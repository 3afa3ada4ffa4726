"""Messages customers leave for a human agent (人工 outside service hours): the one place a
left message is written, listed, answered and closed, for the chat (the customer's message,
`#回复`), the console's message page and the CLI (`messages list|close`). Every staff
answer or close is audited; a refusal is a `StaffRefused` (unknown_message,
message_closed), as the staff commands' are."""
from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from bot.domain import notify
from bot.domain.staff_desk import StaffRefused, audit, snapshot
from bot.infra.texts import render
from models import LeftMessage

MAX_TEXT = 2000  # characters of a left message kept


def leave_message(session: Session, openid: str, text: str, now: datetime,
                  customer_id: int | None = None) -> LeftMessage:
    """What a customer typed for the agents (`customer_id` when their account is bound)."""
    msg = LeftMessage(openid=openid, text=text[:MAX_TEXT], created_at=now,
                      customer_id=customer_id)
    session.add(msg)
    return msg


def list_messages(session: Session, *, open_only: bool = False) -> list[LeftMessage]:
    """Oldest first, so the longest waiting is answered first."""
    query = select(LeftMessage).order_by(LeftMessage.id)
    if open_only:
        query = query.where(LeftMessage.closed_at.is_(None))
    return list(session.exec(query).all())


def open_message(session: Session, message_id: int) -> LeftMessage:
    """The message, refused as unknown_message or message_closed unless it is open."""
    msg = session.get(LeftMessage, message_id)
    if msg is None:
        raise StaffRefused("unknown_message", id=message_id)
    if msg.closed_at is not None:
        raise StaffRefused("message_closed", id=message_id)
    return msg


def _close(session: Session, msg: LeftMessage, by: str, now: datetime,
           reply: str | None) -> dict:
    before = snapshot(msg)
    msg.closed_at, msg.closed_by, msg.reply = now, by, reply
    session.add(msg)
    session.flush()
    return before


def close_message(session: Session, who: str, message_id: int, now: datetime, *,
                  by: str | None = None) -> LeftMessage:
    """Mark an open message answered without sending anything (the answer went by phone),
    audited as `who`; `by` is who answered it, when not `who` (the CLI's `--by`)."""
    msg = open_message(session, message_id)
    before = _close(session, msg, by or who, now, None)
    audit(session, who, "message_closed", f"message:{msg.id}", now, before=before,
          after=snapshot(msg))
    return msg


def reply_to_message(session: Session, who: str, message_id: int, text: str,
                     now: datetime) -> LeftMessage:
    """Answer a left message as a customer-service message (through the outbox) and close it.
    The message quotes what the customer asked (short, and inert: a link they wrote is not
    sent back as a link from the official account)."""
    msg = open_message(session, message_id)
    before = _close(session, msg, who, now, text)
    notify.text_message(session, msg.openid, render("notify/message_reply", asked=msg.text,
                                                    reply=text),
                        now, key=f"left_message_reply:{msg.id}")
    audit(session, who, "reply", f"message:{msg.id}", now, before=before, after=snapshot(msg))
    return msg
