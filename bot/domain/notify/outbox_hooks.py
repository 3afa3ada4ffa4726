"""The domain's hooks of the outbox dispatcher: the message of a row written by set-based
SQL (`prepare`, handed to Services by bot.wiring) and WeChat's delivery result."""
from __future__ import annotations

from datetime import date

from sqlmodel import Session

from bot.infra import outbox
from bot.infra.texts import render
from bot.domain.notify.config import _tier_name, template_body


def prepare(row, payload: dict) -> dict | str:
    """The message of an outbox row written without one (the tier engine's `tier_changed`
    rows carry only the change): a payload to send, or a reason to drop the row."""
    if row.kind == "tier_changed":
        up = payload.get("reason") == "upgrade"
        body = template_body("tier_changed", {
            "tier": _tier_name(payload.get("to", "")), "old_tier": _tier_name(payload.get("from", "")),
            "note": render("notify/tier_note", up=up),
            "date": date.fromisoformat(payload["effective_date"]) if payload.get("effective_date") else ""})
        if body is None:
            return "no tier_changed template configured"
        return {"template": body}
    return f"no message for kind {row.kind}"


def delivery_result(session: Session, msgid: int, status: str) -> int:
    """TEMPLATESENDJOBFINISH: record WeChat's delivery result (success, failed:user block,
    failed:system failed) on the outbox row of template message `msgid`."""
    return outbox.record_delivery(session, msgid, status)
