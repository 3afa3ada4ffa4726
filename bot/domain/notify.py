"""What the bot tells customers, enqueued in the caller's session (the same transaction as
the change that causes it).

STAND-IN (branch h-staff): the real outbox (issue 10) replaces this module on merge, with
these exact signatures. This version only records each request as a `notification` row
(kind, customer, JSON payload, dedupe_key) so that staff features and their tests can see
what was asked for; nothing is sent from here. A second request with the same dedupe key is
ignored (the outbox's exactly-once contract).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from models import Booking, Notification, WechatUser


def _enqueue(session: Session, kind: str, key: str, now: datetime, *,
             customer_id: int | None = None, **payload: Any) -> Notification | None:
    key = key[:160]
    found = session.exec(select(Notification).where(Notification.dedupe_key == key)).first()
    if found is not None:
        return None
    row = Notification(customer_id=customer_id, kind=kind, dedupe_key=key, created_at=now,
                       payload=json.dumps(payload, ensure_ascii=False, default=str))
    session.add(row)
    session.flush()
    return row


def _booking_fields(booking: Booking) -> dict[str, Any]:
    return {"booking_id": booking.id, "number": booking.number, "service": booking.service,
            "status": booking.status,
            "date": (booking.confirmed_date or booking.preferred_date).isoformat(),
            "time": booking.confirmed_time, "institution_id": booking.institution_id}


def booking_received(session: Session, booking: Booking, now: datetime) -> None:
    _enqueue(session, "booking_received", f"booking_received:{booking.id}", now,
             customer_id=booking.customer_id, **_booking_fields(booking))


def booking_confirmed(session: Session, booking: Booking, now: datetime) -> None:
    # One message per confirmation (a re-confirmation is a new one, even back to an earlier
    # date); the caller does not call again for an unchanged confirmation.
    key = f"booking_confirmed:{booking.id}:{booking.confirmed_at.isoformat()}"
    _enqueue(session, "booking_confirmed", key, now, customer_id=booking.customer_id,
             **_booking_fields(booking))


def booking_cancelled(session: Session, booking: Booking, now: datetime, *, counted: bool,
                      by_staff: bool = False, reason: str | None = None) -> None:
    _enqueue(session, "booking_cancelled", f"booking_cancelled:{booking.id}", now,
             customer_id=booking.customer_id, counted=counted, by_staff=by_staff,
             reason=reason, **_booking_fields(booking))


def reminder(session: Session, booking: Booking, now: datetime) -> None:
    _enqueue(session, "reminder", f"reminder:{booking.id}:{booking.confirmed_date}", now,
             customer_id=booking.customer_id, **_booking_fields(booking))


def text_message(session: Session, openid: str, text: str, now: datetime, *, key: str) -> None:
    user = session.get(WechatUser, openid)
    _enqueue(session, "text", key, now, customer_id=user.customer_id if user else None,
             openid=openid, text=text)


def mass_send(session: Session, tag_id: int, content: str, now: datetime, *, key: str) -> None:
    _enqueue(session, "mass_send", key, now, tag_id=tag_id, content=content)


def sms(session: Session, phone: str, template: str, params: dict, now: datetime, *, key: str,
        expires_at: datetime | None = None) -> None:
    _enqueue(session, "sms", key, now, phone=phone, template=template, params=params,
             expires_at=expires_at)
