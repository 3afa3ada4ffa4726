"""How many SQL statements one booking message costs, through /wechat (a regression guard:
the customer notices each statement as latency). The booking flow reads the facts once per
message (bot.domain.booking_draft.BookingDraft) instead of once per option."""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import date

import time_machine
from sqlalchemy import event

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


async def test_statements_per_booking_step(wx_plain, world, services):
    steps = ["预约洁牙", "配偶", "北京", "北京洁牙门诊", "1", "返回", "1", "确认"]
    with time_machine.travel(WED, tick=True):
        world("gold", family=[("spouse", "王芳", date(1982, 3, 4), "F")])
        out = []
        for text in steps:
            with statements(services.engine) as seen:
                reply = await wx_plain.say(U, text)
            out.append((text, len(seen), reply[:30].replace("\n", " ")))
            if os.environ.get("SHOW_STATEMENTS") == "all":
                print(text, *seen, sep="\n   ")
    if os.environ.get("SHOW_STATEMENTS"):
        for row in out:
            print(row)
