"""The simulator (/simulator) in Chromium: a demo customer books 洁牙 by taps alone, staff
confirm, and the confirmation card arrives; the page fits a phone."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlmodel import Session, select

from bot.domain import staff_desk
from bot.domain.bookings import calendar
from models import Booking, Customer, WechatUser

GOLD = "o_demo_gold"  # the demo's 黄金 customer, entitled to 洁牙 (handbook: gold and up)


def bot_bubbles(page):
    return page.locator(".msg.bot .bubble")


def tap(page, label: str):
    """Tap the last offered line whose text has `label` (a weixin://bizmsgmenu line)."""
    page.locator(".msg.bot").last.locator(".tap", has_text=label).first.click()


def wait_for_reply(page, count: int):
    expect(bot_bubbles(page)).to_have_count(count + 1)


def test_book_dental_by_taps_then_the_confirmation_card_arrives(live_server, phone, ui):
    page = phone
    page.goto(f"{live_server.url}/simulator?openid={GOLD}")
    expect(page.locator("#who")).to_have_value(GOLD)

    page.get_by_role("button", name="预约服务").click()
    page.get_by_role("button", name="预约洁牙").click()
    steps = ["本人", "北京", "瑞尔齿科", None, "确认"]  # None: the first date offered
    for label in steps:
        expect(page.locator(".msg.bot").last.locator(".tap").first).to_be_visible()
        n = bot_bubbles(page).count()
        if label is None:
            page.locator(".msg.bot").last.locator(".tap").first.click()
        else:
            tap(page, label)
        wait_for_reply(page, n)
    last = bot_bubbles(page).last.inner_text()
    with Session(live_server.app.state.services.engine) as session:
        booking = session.exec(select(Booking).join(Customer).join(
            WechatUser, WechatUser.customer_id == Customer.id).where(
            WechatUser.openid == GOLD)).one()
        number, day = booking.number, booking.preferred_date
    assert number in last
    assert booking.service == "dental" and booking.status == "submitted"
    # The "received" template message reaches the phone as a card.
    expect(page.locator(".card h2", has_text="预约受理通知")).to_be_visible(timeout=15_000)

    services = live_server.app.state.services
    with Session(services.engine) as session:
        staff_desk.confirm_booking(session, "specialist", number, day, "10:30", None,
                                   services.now(), services.rules, calendar())
        session.commit()
    card = page.locator(".card", has=page.locator("h2", has_text="预约成功通知"))
    expect(card).to_be_visible(timeout=15_000)
    expect(card).to_contain_text(number)
    expect(card).to_contain_text("10:30")
    expect(card).to_contain_text("免费取消截止")  # until when it cancels free (DOMAIN)
    assert ui.no_horizontal_scroll(page)
    ui.screenshot(page, "simulator")
