"""The demo's server log (`serve --demo`: the WeChat double mounted, echoing what it
receives) never shows a beneficiary's full name or an ID number: the template message's
name field is masked as every reply masks a name (钱大山 -> 钱**), while the card the double
holds (what the simulator draws for the customer) is whole. Nor do the bot's own outbox and
WeChat client lines carry them.

Through the real doors: the demo app served on loopback, a booking for a family member made
by signed messages to /wechat, the outbox sending 预约已受理 to the mounted double."""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import date

import httpx
import pytest
import time_machine
from sqlmodel import Session

from bot.app import create_app
from bot.domain.accounts import bind
from models import Institution
from tests.conftest import WeChat, _free_port, _serve
from tests.support import factories
from tests.support.booking import INSTITUTIONS, WED, walk

U = "oDemoLog00000000000000001"
DAD = "钱大山"


@pytest.fixture
def demo(settings):
    """`serve --demo` on a loopback port: the bot, with the double at /wechat-double its
    WeChat API (as `serve --demo` sets WECHAT_API_BASE_URL)."""
    port = _free_port()
    demo_settings = settings.model_copy(update={
        "wechat_double": True, "wechat_api_base_url": f"http://127.0.0.1:{port}/wechat-double"})
    app = create_app(demo_settings, mount_double=True)
    server, thread = _serve(app, port=port)
    yield app, app.state.base_url
    server.should_exit = True
    thread.join(10)


def double_of(app):
    return next(r.app for r in app.routes if getattr(r, "path", "") == "/wechat-double")


async def test_the_demo_log_masks_the_beneficiarys_name(demo, caplog):
    app, base = demo
    services = app.state.services
    with Session(services.engine) as s:
        for code, name, city, kind, svc, weekdays, dates in INSTITUTIONS:
            s.add(Institution(code=code, name=name, city=city, address=f"{city}某路1号",
                              kind=kind, services=svc, phone="010-12345678",
                              closed_weekdays=weekdays, closed_dates=dates))
        c = factories.customer(s, name="钱五", tier="gold", phone="13900001111")
        dad = factories.family(s, c, "parent", DAD, date(1950, 2, 3), "M")
        id_number = dad.id_number
        bind(s, U, c, services.now())
        s.commit()
    caplog.set_level(logging.DEBUG)
    with time_machine.travel(WED, tick=True):
        async with httpx.AsyncClient(base_url=base) as client:
            wx = WeChat(client)
            *_, done = await walk(wx, U, "预约洁牙", DAD, "北京", "北京洁牙门诊", "1", "确认")
            assert "YY" in done, done
            double = double_of(app)
            for _ in range(250):
                cards = [c["body"] for c in double.state.sent if c["api"] == "template"]
                if cards:
                    break
                await asyncio.sleep(0.02)
    (card,) = cards
    assert DAD in json.dumps(card, ensure_ascii=False)  # the card itself is whole
    echoed = [r.getMessage() for r in caplog.records if r.name == "wechat-double"]
    assert any("WeChat double received template" in line and "钱**" in line
               for line in echoed), echoed
    for record in caplog.records:  # no line of any logger: the double, outbox, client, door
        line = record.getMessage()
        assert DAD not in line and id_number not in line, (record.name, line)
