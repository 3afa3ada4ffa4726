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

from models import Institution

from tests.test_booking import U, WED, world  # noqa: F401 (the fixture)


@contextmanager
def statements(engine):
    """Every SQL statement the database is sent meanwhile. On SQLite: the driver's trace
    callback (the hot reads of bot.infra.db.Prepared run on the cursor itself, below
    SQLAlchemy's events; BEGIN and COMMIT count too); elsewhere SQLAlchemy's cursor event."""
    seen: list[str] = []
    if engine.dialect.name != "sqlite":
        def count(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)
        event.listen(engine, "before_cursor_execute", count)
        try:
            yield seen
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return

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
async def test_a_booking_step_reads_its_facts_once_not_once_per_option(wx_plain, world, services,
                                                                       clinics, family):
    """Each step of a booking (entry, beneficiary, city, institution, date, 返回 to the date
    step) costs at most BOUND statements, with 3 dental clinics and 1 family member on file
    or with 15 clinics and 3 members: the steps no longer read the database per option."""
    with Session(services.engine) as s:
        for i in range(clinics):
            s.add(Institution(code=f"DX{i}", name=f"北京第{i + 2}洁牙门诊", city="北京",
                              address="北京某路2号", kind="commercial", services="dental",
                              phone="010-1", closed_weekdays="", closed_dates=""))
        s.commit()
    members = [("spouse", "王芳", date(1982, 3, 4), "F"), ("child", "李小明", date(2010, 5, 6), "M"),
               ("parent", "李大山", date(1950, 7, 8), "M")][:family]
    with time_machine.travel(WED, tick=True):
        world("gold", family=members)
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
