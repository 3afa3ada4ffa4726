"""The messages of one WeChat user (and their customer's SMS), for the privacy export."""
from __future__ import annotations

import json

from sqlalchemy import select as sa_select
from sqlmodel import Session

from bot.infra.texts import local
from models import Notification


def messages_for(session: Session, openid: str, customer_id: int | None) -> list[dict]:
    """The queued and sent messages of one WeChat user (and their customer's SMS), for
    privacy export; binding codes are never shown."""
    c = Notification.__table__.c
    where = c.recipient == openid
    if customer_id is not None:
        where = where | (c.customer_id == customer_id)
    rows = session.execute(sa_select(Notification.__table__).where(where).order_by(c.id)).all()
    out = []
    for r in rows:
        payload = json.loads(r.payload or "{}")
        if payload.get("secret"):
            payload = {"template": payload.get("template"), "text": "******"}
        out.append({"id": r.id, "kind": r.kind, "channel": r.channel, "status": r.status,
                    "created_at": local(r.created_at).isoformat() if r.created_at else None,
                    "sent_at": local(r.sent_at).isoformat() if r.sent_at else None,
                    "delivery": r.delivery, "payload": payload})
    return out
