"""Shared set-ups (fixtures, constants and helpers) first written for tests/outbound/test_outbox.py."""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from itertools import count

from sqlalchemy import select
from sqlmodel import Session

from bot.domain import notify
from bot.domain.accounts import bind
from bot.domain.vocab import BookingStatus
from bot.infra.outbox import Dispatcher
from models import Booking, Institution, Notification
from tests.support import factories


SH = timezone(timedelta(hours=8))


NOW = datetime(2026, 12, 2, 11, 0, tzinfo=SH)  # a Wednesday, past the 10:00 reminder hour


TOMORROW = date(2026, 12, 3)


T0 = NOW.timestamp()


_seq = count(1)


OUT = Notification.__table__


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def dispatcher(services, clock, engine=None, **settings) -> Dispatcher:
    s = services.settings.model_copy(update=settings) if settings else services.settings
    return Dispatcher(engine or services.engine, s, services.wechat, services.sms.provider,
                      prepare=notify.prepare, clock=clock, jitter=lambda: 0.0)


def customer_with_booking(services, *, openid: str | None = None, day: date = TOMORROW,
                          at: str = "09:30", service: str = "dental", following: bool = True,
                          seen: datetime | None = NOW, phone: str = "13812345678") -> Booking:
    """A bound customer (following unless told) with a booking confirmed for `day`."""
    n = next(_seq)
    openid = openid or f"oOutbox{n:06d}{uuid.uuid4().hex[:8]}"
    with Session(services.engine, expire_on_commit=False) as s:
        place = Institution(code=f"I{n}-{uuid.uuid4().hex[:6]}", name="北京洁牙门诊", city="北京",
                            address="北京市朝阳区某路1号", kind="commercial", services="dental")
        s.add(place)
        c = factories.customer(s, name="李四", tier="gold", phone=phone)
        user = bind(s, openid, c, NOW)
        user.following, user.last_seen_at = following, seen
        b = Booking(number=f"YY261202{n:04d}", request_key=uuid.uuid4().hex, customer_id=c.id,
                    tier="gold", service=service, institution_id=None, preferred_date=day,
                    confirmed_date=day, confirmed_time=at, quota_year=day.year,
                    status=BookingStatus.CONFIRMED, created_at=NOW, updated_at=NOW,
                    confirmed_at=NOW - timedelta(days=5))
        s.flush()
        b.institution_id = place.id
        s.add(b)
        s.commit()
        return b


def rows(services, **where) -> list:
    query = select(OUT).order_by(OUT.c.id)
    for k, v in where.items():
        query = query.where(OUT.c[k] == v)
    with services.engine.connect() as c:
        return c.execute(query).all()


def templates(sent) -> list[dict]:
    return [m["body"] for m in sent if m["api"] == "template"]
