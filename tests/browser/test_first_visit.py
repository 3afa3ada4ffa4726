"""Issue 16's "done when", end to end in Chromium: a new user opens the simulator, books 洁牙
by taps alone, signs in to the console as the demo admin, confirms the booking there, and
sees the confirmation card arrive in the simulator."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from bot.demo import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD

pytestmark = pytest.mark.settings(admin_enabled=True)
GOLD = "o_demo_gold"  # the demo's 黄金 customer: 洁牙 is gold and up (handbook)


def test_book_by_taps_confirm_in_the_console_and_the_card_arrives(live_server, phone, page):
    chat = phone
    chat.set_default_timeout(20_000)
    chat.goto(f"{live_server.url}/simulator?openid={GOLD}")
    chat.get_by_role("button", name="预约服务").click()
    chat.get_by_role("button", name="预约洁牙").click()
    for label in ["本人", "北京", "瑞尔齿科", None, "确认"]:  # None: the first date offered
        last = chat.locator(".msg.bot").last
        expect(last.locator(".tap").first).to_be_visible()
        before = chat.locator(".msg.bot .bubble").count()
        taps = last.locator(".tap") if label is None else last.locator(".tap", has_text=label)
        taps.first.click()
        expect(chat.locator(".msg.bot .bubble")).to_have_count(before + 1)
    received = chat.locator(".card", has=chat.locator("h2", has_text="预约受理通知"))
    expect(received).to_be_visible()
    number = received.locator("text=/YY\\d{10}/").first.inner_text().strip()
    assert chat.locator(".card", has=chat.locator("h2", has_text="预约成功通知")).count() == 0

    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}/admin/login")
    page.get_by_label("登录名").fill(DEMO_ADMIN_LOGIN)
    page.get_by_label("密码").fill(DEMO_ADMIN_PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.get_by_role("link", name="预约", exact=True).first.click()
    page.get_by_role("link", name=number).click()
    page.get_by_label("时间").fill("10:30")
    page.get_by_role("button", name="确认并通知客户").click()
    expect(page.locator(".banner.ok")).to_contain_text(f"预约 {number} 已确认")

    card = chat.locator(".card", has=chat.locator("h2", has_text="预约成功通知"))
    expect(card).to_be_visible()
    expect(card).to_contain_text(number)
    expect(card).to_contain_text("10:30")
