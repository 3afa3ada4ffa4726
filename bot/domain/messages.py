"""Messages customers leave for a human agent (人工 outside service hours): one data layer
for the chat, the CLI and the staff commands."""
from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from models import LeftMessage


def list_messages(session: Session, *, open_only: bool = False) -> list[LeftMessage]:
    """Oldest first, so the longest waiting is answered first."""
    query = select(LeftMessage).order_by(LeftMessage.id)
    if open_only:
        query = query.where(LeftMessage.closed_at.is_(None))
    return list(session.exec(query).all())


def close_message(session: Session, message_id: int, by: str, now: datetime,
                  reply: str | None = None) -> LeftMessage | None:
    """Mark a message answered; None when there is no such message. Closing twice keeps
    the first close."""
    msg = session.get(LeftMessage, message_id)
    if msg is None:
        return None
    if msg.closed_at is None:
        msg.closed_at, msg.closed_by, msg.reply = now, by, reply
        session.add(msg)
    return msg
