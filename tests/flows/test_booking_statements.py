"""How many SQL statements one booking message costs, through /wechat (a regression guard:
the customer notices each statement as latency). The booking flow reads the facts once per
message (bot.domain.booking_draft.BookingDraft) instead of once per option."""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import date

import pytest
import time_machine
from sqlalchemy import event
from sqlmodel import Session

from bot.domain.accounts import bind
from models import Institution
from tests.support import factories

U = "oBookStatements000000001"
WED = "2026-11-25 10:00:00+08:00"  # the earliest bookable date is Friday 27 November 2026


@contextmanager
def statements(engine):
    """Every SQL statement the database is sent meanwhile, counted at the driver (the hot
    reads of bot.infra.db.Prepared run on the cursor itself, below SQLAlchemy's events). On
    SQLite: the driver's trace callback (BEGIN and COMMIT count too); on PostgreSQL: every
    statement a psycopg cursor executes."""
    seen: list[str] = []
    if engine.dialect.name != "sqlite":
        import psycopg

        class Counting(psycopg.Cursor):
            def execute(self, query, *args, **kw):
                seen.append(str(query))
                return super().execute(query, *args, **kw)

            def executemany(self, query, *args, **kw):
                seen.append(str(query))
                return super().executemany(query, *args, **kw)

        def checkout(dbapi_conn, record, proxy):
            dbapi_conn.cursor_factory = Counting

        def checkin(dbapi_conn, record):
            dbapi_conn.cursor_factory = psycopg.Cursor
    else:
        def checkout(dbapi_conn, record, proxy):
            dbapi_conn.set_trace_callback(seen.append)

        def checkin(dbapi_conn, record):
            dbapi_conn.set_trace_callback(None)

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield seen
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


# What one booking message may cost at most, on any store (the message's transaction, the
# state, the account and the customer, then the booking's facts: uses, family, institutions,
# each read once, whatever the number of options).
BOUND = 10
STEPS = ["预约洁牙", "配偶", "北京", "北京洁牙门诊", "1", "返回", "1"]


@pytest.mark.parametrize("clinics,family", [(0, 1), (12, 3)])
async def test_a_booking_step_reads_its_facts_once_not_once_per_option(wx_plain, services,
                                                                       clinics, family):
    """Each step of a booking (entry, beneficiary, city, institution, date, 返回 to the date
    step) costs at most BOUND statements, with 2 dental clinics and 1 family member on file
    or with 14 clinics and 3 members: the steps no longer read the database per option."""
    with time_machine.travel(WED, tick=True):
        with Session(services.engine, expire_on_commit=False) as s:
            for i in range(1 + clinics):  # dental clinics in 北京, and one in 上海
                s.add(Institution(code=f"D{i}", name="北京洁牙门诊" if i == 0 else f"北京第{i + 1}洁牙门诊",
                                  city="北京", address="北京某路1号", kind="commercial",
                                  services="dental", phone="010-1", closed_weekdays="sun",
                                  closed_dates=""))
            s.add(Institution(code="S1", name="上海洁牙门诊", city="上海", address="上海某路1号",
                              kind="commercial", services="dental", phone="021-1",
                              closed_weekdays="", closed_dates=""))
            s.add(Institution(code="C1", name="北京商业体检中心", city="北京", address="北京某路2号",
                              kind="commercial", services="checkup", phone="010-2",
                              closed_weekdays="", closed_dates=""))
            c = factories.customer(s, name="李四", tier="gold", sex="M")
            for relation, name, birth, sex in [
                    ("spouse", "王芳", date(1982, 3, 4), "F"), ("child", "李小明", date(2010, 5, 6), "M"),
                    ("parent", "李大山", date(1950, 7, 8), "M")][:family]:
                factories.family(s, c, relation, name, birth, sex)
            bind(s, U, c, services.now())
            s.commit()
        counts = []
        for text in STEPS:
            with statements(services.engine) as seen:
                reply = await wx_plain.say(U, text)
            counts.append(len(seen))
            if os.environ.get("SHOW_STATEMENTS"):
                print(text, len(seen), *(["", *seen] if os.environ["SHOW_STATEMENTS"] == "all"
                                          else []), sep="\n   ")
        assert "请核对预约信息" in reply and "2026年11月27日" in reply  # the summary, first date
        done = await wx_plain.say(U, "确认")
    assert "预约已受理" in done
    assert max(counts) <= BOUND, dict(zip(STEPS, counts))
