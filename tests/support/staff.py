"""Shared set-ups (fixtures, constants and helpers) first written for tests/flows/test_staff.py, tests/flows/test_staff_desk.py."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlmodel import Session
from sqlmodel import select as sm_select

from bot.domain import broadcasts
from bot.domain.accounts import bind
from bot.domain.staff_desk import create_invite
from models import Booking, Institution, Notification, Staff, StaffAudit
from tests.support import factories
from tests.support.booking import INSTITUTIONS, book_dental, bookings


U = "oStaffCust000000000000001"  # a bound gold customer


SPEC = "oStaffSpec000000000000001"


ADMIN = "oStaffAdmn000000000000001"


STRANGER = "oStaffNobody0000000000001"


@pytest.fixture
def desk(services):
    """Institutions, the two staff accounts and a bound gold customer."""
    now = datetime.now(timezone.utc)
    with Session(services.engine, expire_on_commit=False) as s:
        for code, name, city, kind, svc, weekdays, dates in INSTITUTIONS:
            s.add(Institution(code=code, name=name, city=city, address=f"{city}某路1号", kind=kind,
                              services=svc, phone="010-12345678", closed_weekdays=weekdays,
                              closed_dates=dates))
        s.add(Staff(openid=SPEC, name="王专员", role="specialist", created_at=now))
        s.add(Staff(openid=ADMIN, name="赵主管", role="admin", created_at=now))
        c = factories.customer(s, name="李四", tier="gold", phone="13900001111")
        factories.policy(s, c, "P2024000777", premium="120000")
        bind(s, U, c, now)
        s.commit()
    return c


async def delivered(wechat_api, api: str, touser: str | None = None, timeout: float = 5.0) -> dict:
    """The first call of `api` (to `touser`) that reached the WeChat double, waiting for the
    outbox to send it after the commit."""
    import asyncio

    for _ in range(int(timeout / 0.02)):
        for call in wechat_api.state.sent:
            if call["api"] == api and (touser is None or call["body"].get("touser") == touser):
                return call
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {api} call reached the double: {wechat_api.state.sent}")


def notes(services, kind: str | None = None) -> list[Notification]:
    with Session(services.engine) as s:
        q = sm_select(Notification).order_by(Notification.id)
        if kind:
            q = q.where(Notification.kind == kind)
        return list(s.exec(q).all())


def audits(services, action: str | None = None) -> list[StaffAudit]:
    with Session(services.engine) as s:
        q = sm_select(StaffAudit).order_by(StaffAudit.id)
        if action:
            q = q.where(StaffAudit.action == action)
        return list(s.exec(q).all())


async def booked(wx, services) -> Booking:
    await book_dental(wx, U)  # preferred date: Friday 27 November 2026
    (b,) = bookings(services)
    return b


def invite(services, role="specialist", name="新专员") -> str:
    with Session(services.engine) as s:
        code, _ = create_invite(s, services.settings.secret_key, name, role, services.now())
        s.commit()
    return code


DIAMOND = "oStaffDiam000000000000001"


@pytest.fixture
def tiers(desk, services, wechat_api):
    """A diamond customer besides the gold one, both tagged on WeChat."""
    with Session(services.engine) as s:
        c = factories.customer(s, name="钱五", tier="diamond", phone="13700002222")
        bind(s, DIAMOND, c, services.now())
        s.commit()
    report = broadcasts.sync_tags(services.engine, services.wechat, services.rules)
    assert not report.errors
    with Session(services.engine) as s:
        tags = broadcasts.tier_tags(s)
    return tags


MENU_LINK = ('<a href="weixin://bizmsgmenu?msgmenucontent=%23取消 YY2611250001 已处理'
             '&msgmenuid=x">查看附件</a>')


PHISH = '<a href="http://vip-insurer.example/login">请重新登录</a>'
