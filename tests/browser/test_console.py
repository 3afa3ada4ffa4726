"""The staff console (/admin) in Chromium (issue 16): sign in, wrong passwords until the
lock-out, sign out; a specialist confirms from the queue and the customer's template message
reaches the WeChat double; a stale form is refused; an admin previews and sends a
broadcast; a dead letter is retried; an institutions CSV with a bad row shows the line and
writes nothing; the main pages at a phone's size scroll only vertically (screenshots kept
under docs/screenshots/ for the README)."""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select, update
from sqlmodel import Session

from bot.demo import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, DEMO_STAFF
from bot.domain import broadcasts, notify, staff_desk
from bot.domain.bookings import calendar
from models import Booking, Customer, Institution, Notification, WechatUser

pytestmark = pytest.mark.settings(admin_enabled=True)
GOLD = "o_demo_gold"
SPEC_LOGIN, SPEC_PASSWORD = DEMO_STAFF[1][3], DEMO_STAFF[1][4]
WRONG = "登录名或密码不正确"


def sign_in(page, url: str, login: str, password: str) -> None:
    page.set_default_timeout(20_000)  # a busy 2-core CI machine: confirming sends to WeChat
    page.goto(f"{url}/admin/login")
    page.get_by_label("登录名").fill(login)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()


def a_submitted_booking(live_server) -> tuple[str, datetime]:
    """A 洁牙 booking of the demo's gold customer at 瑞尔齿科 (as the chat flow leaves it),
    for the earliest day the rules allow."""
    services = live_server.app.state.services
    now = services.now()
    day = calendar().earliest_bookable(
        now, lead_workdays=services.rules.booking.lead_workdays)
    with Session(services.engine) as s:
        customer = s.exec(select(Customer).join(WechatUser, WechatUser.customer_id == Customer.id)
                          .where(WechatUser.openid == GOLD)).scalars().one()
        place = s.exec(select(Institution).where(Institution.code == "BJ-D01")).scalars().one()
        number = f"YY{now:%y%m%d}0901"
        s.add(Booking(number=number, request_key=f"browser:{number}", customer_id=customer.id,
                      tier=customer.tier, service="dental", institution_id=place.id,
                      preferred_date=day, quota_year=day.year, status="submitted",
                      created_at=now, updated_at=now))
        s.commit()
    return number, day


def shot(ui, page, name: str) -> None:
    """A screenshot once the page has finished loading (never mid-navigation)."""
    page.wait_for_load_state()
    ui.screenshot(page, name)


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sign_in_wrong_password_until_the_lock_out_and_sign_out(live_server, page, ui):
    url = live_server.url
    page.goto(f"{url}/admin/bookings")
    expect(page).to_have_url(f"{url}/admin/login?next=/admin/bookings")
    shot(ui, page, "console-login")
    limit = live_server.settings.admin_login_max_failures
    for _ in range(limit - 1):
        sign_in(page, url, SPEC_LOGIN, "not-the-password")
        expect(page.locator(".banner.bad")).to_contain_text(WRONG)
    sign_in(page, url, SPEC_LOGIN, SPEC_PASSWORD)  # one short of the limit: still in
    expect(page.locator("h1")).to_contain_text("预约队列")
    page.get_by_role("button", name="退出登录").click()
    expect(page).to_have_url(f"{url}/admin/login")
    page.goto(f"{url}/admin/bookings")
    expect(page).to_have_url(f"{url}/admin/login?next=/admin/bookings")
    for _ in range(limit):
        sign_in(page, url, DEMO_ADMIN_LOGIN, "not-the-password")
    sign_in(page, url, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD)  # locked: the same answer
    expect(page.locator(".banner.bad")).to_contain_text(WRONG)
    expect(page.get_by_role("button", name="退出登录")).to_have_count(0)


def test_a_specialist_confirms_from_the_queue_and_the_customer_gets_the_template(
        live_server, page, ui):
    number, day = a_submitted_booking(live_server)
    sign_in(page, live_server.url, SPEC_LOGIN, SPEC_PASSWORD)
    page.get_by_label("待处理").check()
    page.get_by_role("button", name="筛选").click()
    expect(page).to_have_url(re.compile(r"needs_action=1"))
    page.wait_for_load_state()
    shot(ui, page, "console-queue")
    page.get_by_role("link", name=number).click()
    expect(page.locator("h1")).to_contain_text(number)
    page.get_by_label("时间").fill("10:30")
    page.get_by_role("button", name="确认并通知客户").click()
    expect(page.locator(".banner.ok")).to_contain_text(f"预约 {number} 已确认")
    template = wait_for(lambda: next((c for c in live_server.sent if c["api"] == "template"
                                      and c["body"].get("touser") == GOLD
                                      and "10:30" in str(c["body"])), None))
    assert "瑞尔齿科" in str(template["body"])
    # The booking's page now tells the story: the confirmation and the message sent.
    page.reload()
    expect(page.locator("table").first).to_contain_text("确认")
    expect(page.locator("body")).to_contain_text("booking_confirmed")
    shot(ui, page, "console-booking")
    # The audit log shows the confirmation's record in Shanghai time, never UTC's (issue 14).
    page.goto(f"{live_server.url}/admin/audit?target={number}")
    row = page.locator("tbody tr", has_text="confirm").first
    row.locator("td.record summary").last.click()  # the record after it, unfolded
    expect(row).to_contain_text('"confirmed_at": "')
    expect(row).to_contain_text("+08:00")  # the record's instants: created_at, confirmed_at…
    assert "+00:00" not in row.inner_text()
    confirmed_at = live_server.app.state.services.now().strftime("%Y-%m-%d")
    expect(row.locator("td").first).to_contain_text(confirmed_at)  # the row's time, local


def test_a_stale_form_is_refused(live_server, page):
    number, day = a_submitted_booking(live_server)
    sign_in(page, live_server.url, SPEC_LOGIN, SPEC_PASSWORD)
    page.goto(f"{live_server.url}/admin/bookings/{number}")
    services = live_server.app.state.services
    with Session(services.engine) as s:  # a colleague confirms by chat meanwhile
        staff_desk.confirm_booking(s, "o_demo_admin", number, day, "15:00", None,
                                   services.now(), services.rules, calendar())
        s.commit()
    page.get_by_role("button", name="确认并通知客户").click()
    expect(page.locator(".banner.bad")).to_contain_text("刚刚被其他同事办理过")
    with Session(services.engine) as s:
        b = s.exec(select(Booking).where(Booking.number == number)).scalars().one()
        assert b.confirmed_time == "15:00"


def test_an_admin_previews_and_sends_a_broadcast(live_server, page, ui):
    services = live_server.app.state.services
    assert not broadcasts.sync_tags(services.engine, services.wechat, services.rules).errors
    sign_in(page, live_server.url, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD)
    page.goto(f"{live_server.url}/admin/broadcasts")
    page.get_by_label("黄金", exact=False).check()
    page.get_by_label("内容").fill("本周六上午健康讲座，欢迎参加")
    page.get_by_role("button", name="预览").click()
    expect(page.locator("h2", has_text="预览")).to_be_visible()
    shot(ui, page, "console-broadcast")
    assert not [c for c in live_server.sent if c["api"] == "mass"]
    page.get_by_role("button", name="确认发送").click()
    expect(page.locator(".banner.ok")).to_be_visible()
    call = wait_for(lambda: next((c for c in live_server.sent if c["api"] == "mass"), None))
    assert "健康讲座" in str(call["body"])
    expect(page.locator("table").last).to_contain_text("健康讲座")


def test_a_dead_letter_is_retried(live_server, page, ui):
    services = live_server.app.state.services
    now = datetime.now(timezone.utc)
    with Session(services.engine) as s:
        s.execute(update(WechatUser).where(WechatUser.openid == GOLD).values(last_seen_at=now))
        row_id = notify.text_message(s, GOLD, "您的体检报告已出", now, key="browser:dead")
        s.execute(update(Notification).where(Notification.id == row_id).values(
            status="dead", tries=12, last_error="gave up after 12 tries (45009)"))
        s.commit()
    sign_in(page, live_server.url, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD)
    page.goto(f"{live_server.url}/admin/outbox")
    expect(page.locator("body")).to_contain_text("gave up after 12 tries")
    shot(ui, page, "console-outbox")
    page.get_by_role("button", name="重试", exact=True).click()
    expect(page.locator(".banner.ok")).to_contain_text("已重新排队 1 条")
    wait_for(lambda: any(c["api"] == "custom" and "体检报告已出" in str(c["body"])
                         for c in live_server.sent))
    with Session(services.engine) as s:
        assert wait_for(lambda: s.get(Notification, row_id, populate_existing=True).status
                        == "sent")


def test_an_institutions_csv_with_a_bad_row_shows_the_line_and_writes_nothing(
        live_server, page, tmp_path, ui):
    services = live_server.app.state.services
    with Session(services.engine) as s:
        before = s.execute(select(func.count()).select_from(Institution)).scalar_one()
    path = tmp_path / "institutions.csv"
    path.write_text("code,name,city,address,kind,services,phone,closed\n"
                    "GZ-D09,广州新口腔,广州,广州某路9号,commercial,dental,020-38888888,sun\n"
                    "GZ-D10,广州坏口腔,广州,广州某路10号,clinic,dental,020-1,\n", encoding="utf-8")
    sign_in(page, live_server.url, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD)
    page.goto(f"{live_server.url}/admin/institutions")
    page.get_by_label("上传机构CSV", exact=False).set_input_files(str(path))
    page.get_by_role("button", name="上传并导入").click()
    expect(page.locator(".card.bad")).to_contain_text("line 3")
    expect(page.locator(".card.bad")).to_contain_text("未写入任何数据")
    shot(ui, page, "console-institutions")
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Institution)).scalar_one() == before


PHONE_PAGES = ["bookings", "customers?q=13800000003", "messages", "visits", "calendar", "audit",
               "broadcasts", "outbox", "institutions", "staff"]


def test_the_console_fits_a_phone(live_server, phone, ui):
    number, _ = a_submitted_booking(live_server)
    sign_in(phone, live_server.url, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD)
    for path in PHONE_PAGES + [f"bookings/{number}"]:
        phone.goto(f"{live_server.url}/admin/{path}")
        expect(phone.locator("h1")).to_be_visible()
        assert ui.no_horizontal_scroll(phone), path
    phone.goto(f"{live_server.url}/admin/bookings/{number}")
    shot(ui, phone, "console-booking-phone")
    phone.goto(f"{live_server.url}/admin/bookings")
    shot(ui, phone, "console-queue-phone")
