"""The dashboard in Chromium: its charts render (SVG images that load), each beside its
table, readable on a phone without sideways scrolling; an admin previews and sends the
year-end nudge and the reminders reach the double."""
from __future__ import annotations

import time

from datetime import date

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from models import Booking, Customer, Institution, UnansweredQuestion

from tests.support.console import ADMIN_LOGIN, PASSWORD, add_staff
from tests.support.staff import ADMIN

pytestmark = pytest.mark.settings(admin_enabled=True)


def sign_in(page, live_server):
    add_staff(live_server.app.state.services.engine, ADMIN, "赵主管", "admin", ADMIN_LOGIN)
    page.goto(f"{live_server.url}/admin/login")
    page.get_by_label("登录名").fill(ADMIN_LOGIN)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_text("退出登录")).to_be_visible()


def charts_loaded(page) -> list[int]:
    """The natural width of every chart image (0: it did not render)."""
    return page.eval_on_selector_all("img.chart", "imgs => imgs.map(i => i.complete ? "
                                                   "i.naturalWidth : 0)")


def seed(live_server) -> None:
    """A year of bookings by the demo's customers (every status), and a few questions the
    FAQ could not answer: something to draw."""
    services = live_server.app.state.services
    now = services.now()
    statuses = ["completed", "completed", "no_show", "cancelled_late", "cancelled",
                "confirmed", "submitted"]
    with Session(services.engine) as s:
        customers = s.exec(select(Customer)).all()
        places = {i.city: i.id for i in s.exec(select(Institution)).all()}
        cities = sorted(places)
        n = 0
        for month in range(1, now.month + 1):
            for i, c in enumerate(customers[: 2 + month % 4]):
                n += 1
                status = statuses[(n + i) % len(statuses)]
                s.add(Booking(number=f"YY{now:%y}{month:02d}01{n:04d}", request_key=f"seed-{n}",
                              customer_id=c.id, tier=c.tier,
                              service=["dental", "checkup", "expert_outpatient"][n % 3],
                              institution_id=places[cities[n % len(cities)]],
                              preferred_date=date(now.year, month, 1 + n % 27),
                              quota_year=now.year, status=status,
                              counted=status != "cancelled", created_at=now, updated_at=now))
        for text, times in (("牙套能报销吗", 5), ("体检可以带孩子一起吗", 3), ("积分怎么兑换", 1)):
            for _ in range(times):
                s.add(UnansweredQuestion(text=text, tier="gold", asked_at=now))
        s.commit()


def test_the_dashboard_renders_its_charts_on_a_phone(live_server, phone, page, ui):
    seed(live_server)
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/admin/dashboard")
    assert all(w > 0 for w in charts_loaded(page))
    ui.screenshot(page, "dashboard")
    sign_in(phone, live_server)
    phone.goto(f"{live_server.url}/admin/dashboard")
    expect(phone.get_by_role("heading", name="本月未能回答的问题")).to_be_visible()
    widths = charts_loaded(phone)
    assert len(widths) == 6 and all(w > 0 for w in widths)
    box = phone.locator("img.chart").first.bounding_box()
    assert box["width"] <= 375 and box["width"] > 250  # as wide as the screen allows
    assert ui.no_horizontal_scroll(phone)
    rows = phone.locator("#questions tr")
    expect(rows.nth(1)).to_contain_text("牙套能报销吗")  # most frequent first
    ui.screenshot(phone, "dashboard-phone")


def test_an_admin_sends_the_year_end_nudge(live_server, page, ui):
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/admin/dashboard")
    assert all(w > 0 for w in charts_loaded(page))
    page.get_by_role("link", name="年末提醒：预览受众并发送").click()
    page.get_by_label("洁牙（共 3 人）").check()
    page.get_by_role("button", name="确认发送").click()
    expect(page.get_by_role("alert")).to_contain_text("我已核对受众")
    page.get_by_label("洁牙（共 3 人）").check()
    page.get_by_label("我已核对受众").check()
    page.get_by_role("button", name="确认发送").click()
    expect(page.get_by_role("status")).to_contain_text("3 条年末提醒")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = {e["body"]["touser"] for e in live_server.sent if e["api"] == "template"
               and e["body"]["template_id"] == "demo-benefit-reminder"}
        if len(got) == 3:
            break
        time.sleep(0.1)
    assert got == {"o_demo_diamond", "o_demo_platinum", "o_demo_gold"}
