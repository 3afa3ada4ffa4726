"""The quota holds against concurrent requests, and one confirmation makes one booking even
when it reaches two workers at once."""
from __future__ import annotations

import asyncio
import threading
from datetime import date, datetime

import httpx
import pytest
import time_machine
from sqlalchemy import func, select
from sqlmodel import Session

from bot.app import build_pipeline, create_app
from bot.conversation.stores import SqlDedupStore
from bot.domain import booking_store
from bot.domain.accounts import bind
from bot.domain.bookings import BookingRequest, Refusal, calendar
from models import Booking, Institution
from tests.support import factories
from tests.conftest import REDIS_URL, USE_PG, WeChat

U = "oBookRace000000000000001"
WED = "2026-11-25 10:00:00+08:00"


def _setup(engine, tier="gold"):
    with Session(engine, expire_on_commit=False) as s:
        place = Institution(code="S1", name="上海洁牙门诊", city="上海", address="上海某路1号",
                            kind="commercial", services="dental", phone="021-1234567")
        s.add(place)
        c = factories.customer(s, name="李四", tier=tier)
        bind(s, U, c, datetime.fromisoformat(WED))
        s.commit()
        return c, booking_store.institution(s, "S1")


def _count(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(Booking.__table__)).scalar_one()


if USE_PG:  # PostgreSQL only: SQLite's single writer serialises this by construction
    def test_two_bookings_for_one_quota_committed_at_once_make_one(services):
        """Two connections, no per-user lock: the locked quota_use row alone must refuse the
        second booking of the year."""
        engine = services.engine
        customer, place = _setup(engine)
        now = datetime.fromisoformat(WED)
        barrier = threading.Barrier(2)
        results: list = []

        def attempt(i: int, day: date) -> None:
            req = BookingRequest(service="dental", tier="gold", requested_at=now,
                                 beneficiary=booking_store.Person(name="李四", id_number="x",
                                                                  sex="M"),
                                 package="dental_gold", institution=place, date=day)
            new = booking_store.NewBooking(customer_id=customer.id, request=req,
                                           request_key=f"race-{i}")
            with Session(engine) as s:
                barrier.wait()
                try:
                    booking_store.submit_booking(s, new, services.rules, calendar(), now)
                    # hold the transaction open a moment so the other one really waits
                    s.execute(select(func.pg_sleep(0.2)))
                    s.commit()
                    results.append("ok")
                except booking_store.BookingRefused as exc:
                    s.rollback()
                    results.append(exc.refusal)

        threads = [threading.Thread(target=attempt, args=(i, date(2026, 12, 3 + i)))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(map(str, results)) == sorted(["ok", str(Refusal.QUOTA_USED)])
        assert _count(engine) == 1
        with Session(engine) as s:
            assert booking_store.quota_used(s, customer.id, "dental", 2026) == 1


@pytest.fixture
async def two_workers(settings):
    workers = []
    for _ in range(2):
        pipe = build_pipeline(settings)
        if not (USE_PG or REDIS_URL):  # embedded default: share dedup through the SQLite file
            pipe.dedup = SqlDedupStore(pipe.engine, settings.dedup_ttl_seconds)
        workers.append(pipe)
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, pipeline=p)),
                                 base_url="http://bot.test") for p in workers]
    yield [WeChat(c, "plain") for c in clients], workers[0].services
    for c, p in zip(clients, workers):
        await c.aclose()
        p.close()


async def test_confirm_through_two_workers_at_once_makes_one_booking(two_workers):
    (a, b), services = two_workers
    with time_machine.travel(WED, tick=True):
        _setup(services.engine)
        for text in ("预约洁牙", "本人", "上海", "上海洁牙门诊", "1"):
            await a.say(U, text)
        replies = await asyncio.gather(a.say(U, "确认"), b.say(U, "确认"), a.say(U, "确认"))
    assert _count(services.engine) == 1
    assert sum("YY26112500" in r for r in replies) == 1
