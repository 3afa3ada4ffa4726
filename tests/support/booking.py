"""Shared set-ups (fixtures, constants and helpers) first written for tests/flows/test_booking.py."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlmodel import Session
from sqlmodel import select as sm_select

from bot.domain.accounts import bind
from models import Booking, Institution
from tests.support import factories


U = "oBookUser0000000000000001"


U2 = "oBookUser0000000000000002"


NUMBER = re.compile(r"YY\d{10}")


WED = "2026-11-25 10:00:00+08:00"


MID = "2026-06-10 10:00:00+08:00"


INSTITUTIONS = [
    # code, name, city, kind, services, closed weekdays, closed dates
    ("D1", "北京洁牙门诊", "北京", "commercial", "dental", "sun", "2026-12-02"),
    ("C1", "北京商业体检中心", "北京", "commercial", "checkup", "", ""),
    ("H1", "北京三甲医院", "北京", "tertiary_hospital", "checkup;expert_outpatient;special_exam",
     "", ""),
    ("S1", "上海洁牙门诊", "上海", "commercial", "dental", "", ""),
]


@pytest.fixture
def world(services):
    """Institutions and a way to make a bound customer of a tier, with family."""
    with Session(services.engine) as s:
        for code, name, city, kind, svc, weekdays, dates in INSTITUTIONS:
            s.add(Institution(code=code, name=name, city=city, address=f"{city}某路1号", kind=kind,
                              services=svc, phone="010-12345678", closed_weekdays=weekdays,
                              closed_dates=dates))
        s.commit()

    def make(tier="gold", openid=U, sex="M", family=()):
        with Session(services.engine, expire_on_commit=False) as s:
            c = factories.customer(s, name="李四", tier=tier, sex=sex)
            members = [factories.family(s, c, rel, name, birth, msex)
                       for rel, name, birth, msex in family]
            bind(s, openid, c, services.now())
            s.commit()
            return c, members
    return make


def bookings(services, **where) -> list[Booking]:
    with Session(services.engine, expire_on_commit=False) as s:
        return list(s.exec(sm_select(Booking).filter_by(**where).order_by(Booking.id)).all())


def count_bookings(services) -> int:
    with Session(services.engine) as s:
        return s.execute(select(func.count()).select_from(Booking)).scalar_one()


async def walk(wx, openid, *messages) -> list[str]:
    replies = []
    for m in messages:
        replies.append(await wx.say(openid, m))
    return replies


async def book_dental(wx, openid=U, *, city="北京", place="北京洁牙门诊", day="1") -> list[str]:
    """预约洁牙 for oneself, answering each step; returns every reply."""
    return await walk(wx, openid, "预约洁牙", "本人", city, place, day, "确认")
