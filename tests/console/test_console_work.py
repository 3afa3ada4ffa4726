"""The console's other pages (issue 16): left messages (hostile text shown as text, the
reply as #回复 sends it), broadcasts (preview, confirm, the fifth a month refused), the
outbox's dead letters retried, institutions uploaded through the importer (a bad row: its
line shown, nothing written), customers searched masked and one field revealed, audited."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
import time_machine
from sqlalchemy import func, select, update
from sqlmodel import Session

from bot.domain import broadcasts, notify
from models import Broadcast, Institution, LeftMessage, Notification
from tests.support.console import ADMIN_LOGIN, SPEC_LOGIN, add_staff, csrf_of, post, sign_in
from tests.support.staff import (ADMIN, DIAMOND, SPEC, U, audits, delivered, desk,  # noqa: F401
                              tiers)
from tests.support.staff import MENU_LINK, PHISH

pytestmark = pytest.mark.settings(admin_enabled=True)
SCRIPT = "<script>alert(document.cookie)</script>"


@pytest.fixture
def console(desk, services):
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    add_staff(services.engine, ADMIN, "赵主管", "admin", ADMIN_LOGIN)
    return desk


def leave(services, customer, text: str) -> int:
    with Session(services.engine) as s:
        m = LeftMessage(openid=U, customer_id=customer.id, text=text,
                        created_at=datetime.now(timezone.utc))
        s.add(m)
        s.commit()
        return m.id


async def test_a_hostile_left_message_is_shown_as_text(http, console, services):
    leave(services, console, SCRIPT + MENU_LINK + PHISH)
    await sign_in(http, SPEC_LOGIN)
    page = await http.get("/admin/messages")
    assert page.status_code == 200
    assert "<script" not in page.text and '<a href="weixin:' not in page.text
    assert '<a href="http://vip-insurer' not in page.text
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in page.text
    assert "&lt;a href=&#34;weixin://bizmsgmenu?msgmenucontent=%23取消" in page.text
    assert "&lt;a href=&#34;http://vip-insurer.example/login&#34;&gt;" in page.text
    assert "13900001111" in page.text  # the phone to call back, while open, as #留言 shows it
    assert [a.action for a in audits(services, "phone_shown")] == ["phone_shown"]
    assert page.headers["cache-control"] == "no-store"


async def test_replying_from_the_console_is_the_chat_reply(http, console, services, wechat_api,
                                                           sent):
    mid = leave(services, console, "体检报告什么时候出？")
    with Session(services.engine) as s:  # the customer wrote just now: inside the window
        from models import WechatUser

        s.execute(update(WechatUser).where(WechatUser.openid == U)
                  .values(last_seen_at=datetime.now(timezone.utc)))
        s.commit()
    await sign_in(http, SPEC_LOGIN)
    empty = await post(http, "/admin/messages", f"/admin/messages/{mid}/reply", {"text": " "})
    assert empty.status_code == 400
    res = await post(http, "/admin/messages", f"/admin/messages/{mid}/reply",
                     {"text": "报告预计三个工作日内出，届时短信通知您。"})
    assert res.status_code == 200 and f"已回复留言 {mid}" in res.text
    call = await delivered(wechat_api, "custom", U)
    assert "三个工作日" in json.dumps(call["body"], ensure_ascii=False)
    (row,) = audits(services, "reply")
    assert (row.staff_openid, row.target) == (SPEC, f"message:{mid}")
    again = await post(http, "/admin/messages?all=1", f"/admin/messages/{mid}/reply",
                       {"text": "再说一次"})
    assert again.status_code == 400 and "已经回复或关闭过了" in again.text


async def test_a_broadcast_is_previewed_confirmed_and_the_fifth_refused(
        http, tiers, console, services, wechat_api, sent):
    await sign_in(http, ADMIN_LOGIN)
    form = (await http.get("/admin/broadcasts")).text
    assert "钻石（1人，本月剩 4 次）" in form
    preview = await http.post("/admin/broadcasts/preview", data={
        "csrf": csrf_of(form), "tier": "diamond", "content": "周末健康讲座"})
    assert preview.status_code == 200 and "确认发送" in preview.text and "合计约 1 人" in preview.text
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Broadcast)).scalar_one() == 0
    for n in range(4):
        res = await http.post("/admin/broadcasts/send", data={
            "csrf": csrf_of(form), "tier": "diamond", "content": f"周末健康讲座{n}",
            "confirmed": "1"})
        assert res.status_code == 200, res.text
    call = await delivered(wechat_api, "mass")
    assert call["body"]["filter"]["tag_id"] == tiers["diamond"]
    fifth = await http.post("/admin/broadcasts/send", data={
        "csrf": csrf_of(form), "tier": "diamond", "content": "第五次", "confirmed": "1"})
    assert fifth.status_code == 409 and "已达微信每月4次的上限" in fifth.text
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Broadcast)).scalar_one() == 4
    assert "本月剩 0 次" in (await http.get("/admin/broadcasts")).text


async def test_a_dead_letter_is_retried_and_sent(http, console, services, wechat_api, sent):
    now = datetime.now(timezone.utc)
    with Session(services.engine) as s:
        from models import WechatUser

        s.execute(update(WechatUser).where(WechatUser.openid == U).values(last_seen_at=now))
        notify.text_message(s, U, "您的报告已出", now, key="console-test:1")
        s.execute(update(Notification).values(status="dead", tries=12,
                                              last_error="gave up after 12 tries"))
        s.commit()
    await sign_in(http, ADMIN_LOGIN)
    page = await http.get("/admin/outbox")
    assert "gave up after 12 tries" in page.text and "dead" in page.text
    (row,) = [r for r in __import__("bot.infra.outbox", fromlist=["listing"]).listing(
        services.engine, dead_only=True)]
    res = await post(http, "/admin/outbox", "/admin/outbox/retry", {"row": str(row.id)})
    assert res.status_code == 200 and "已重新排队 1 条" in res.text
    call = await delivered(wechat_api, "custom", U)
    assert "您的报告已出" in json.dumps(call["body"], ensure_ascii=False)
    for _ in range(100):
        with Session(services.engine) as s:
            if s.get(Notification, row.id).status == "sent":
                break
        await asyncio.sleep(0.02)
    with Session(services.engine) as s:
        assert s.get(Notification, row.id).status == "sent"


async def test_an_institutions_csv_with_a_bad_row_shows_the_line_and_writes_nothing(
        http, console, services):
    header = "code,name,city,address,kind,services,phone,closed\n"
    good = "BJ9,北京新门诊,北京,北京某路9号,commercial,dental,010-12345678,sun\n"
    bad = "SH9,上海新门诊,上海,上海某路9号,hospital,dental,021-1234,\n"
    await sign_in(http, ADMIN_LOGIN)
    with Session(services.engine) as s:
        before = s.execute(select(func.count()).select_from(Institution)).scalar_one()
    page = (await http.get("/admin/institutions")).text
    res = await http.post("/admin/institutions/upload", data={"csrf": csrf_of(page)},
                          files={"file": ("inst.csv", (header + good + bad).encode(), "text/csv")})
    assert res.status_code == 400 and "line 3" in res.text and "未写入任何数据" in res.text
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Institution)).scalar_one() == before
    ok = await http.post("/admin/institutions/upload", data={"csrf": csrf_of(page)},
                         files={"file": ("inst.csv", (header + good).encode(), "text/csv")})
    assert ok.status_code == 200 and "导入完成" in ok.text and "北京新门诊" in ok.text
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Institution)).scalar_one() == before + 1


async def test_a_customer_is_found_masked_and_an_admin_reveals_one_field_audited(
        http, console, services):
    await sign_in(http, SPEC_LOGIN)
    for key in ("13900001111", "P2024000777"):
        res = await http.get(f"/admin/customers?q={key}")
        assert res.status_code == 200 and "李*" in res.text and "李四" not in res.text, key
        assert "139****1111" in res.text and "黄金" in res.text
        assert "保费贡献值" in res.text and "P2*****0777" in res.text
        assert res.text.count(key) == 1  # only in the search box, as typed
    assert "没有找到" in (await http.get("/admin/customers?q=13000000000")).text
    spec_reveal = await post(http, f"/admin/customers/{console.id}",
                             f"/admin/customers/{console.id}/reveal",
                             {"field": "phone", "reason": "回电"})
    assert spec_reveal.status_code == 403
    http.cookies.clear()
    await sign_in(http, ADMIN_LOGIN)
    no_reason = await post(http, f"/admin/customers/{console.id}",
                           f"/admin/customers/{console.id}/reveal", {"field": "name", "reason": ""})
    assert no_reason.status_code == 400 and "李四" not in no_reason.text
    shown = await post(http, f"/admin/customers/{console.id}",
                       f"/admin/customers/{console.id}/reveal",
                       {"field": "name", "reason": "客户来电核对身份"})
    assert shown.status_code == 200 and "李四" in shown.text and "13900001111" not in shown.text
    (row,) = audits(services, "reveal")
    assert row.staff_openid == ADMIN and row.target == f"customer:{console.id}"
    assert json.loads(row.after) == {"field": "name", "reason": "客户来电核对身份"}


async def test_a_booking_in_a_provisional_year_puts_the_banner_on_every_page(
        wx_plain, http, console, services):
    from tests.support.booking import WED
    from tests.support.staff import booked
    from models import Booking

    with time_machine.travel(WED, tick=True):
        b = await booked(wx_plain, services)
    await sign_in(http, SPEC_LOGIN)
    banner = "2027年的节假日安排尚未公布"
    assert banner not in (await http.get("/admin/calendar")).text  # 2026: official
    with Session(services.engine) as s:
        s.execute(update(Booking).where(Booking.id == b.id)
                  .values(preferred_date=datetime(2027, 1, 11).date(), quota_year=2027))
        s.commit()
    for path in ("/admin/bookings", "/admin/calendar", "/admin/messages", "/admin/audit"):
        assert banner in (await http.get(path)).text, path
    cal = (await http.get("/admin/calendar")).text
    assert "2027" in cal and "暂定" in cal and "官方日历" in cal


async def test_the_audit_log_filters_by_staff_action_record_and_date(http, console, services):
    from bot.domain.staff_desk import audit

    with Session(services.engine) as s:
        audit(s, SPEC, "confirm", "YY2611250001", datetime(2026, 11, 25, 2, tzinfo=timezone.utc))
        audit(s, ADMIN, "cancel", "YY2611250002", datetime(2026, 11, 26, 2, tzinfo=timezone.utc))
        s.commit()
    await sign_in(http, SPEC_LOGIN)
    for query, shown, hidden in (("staff=" + SPEC + "&action=confirm", "YY2611250001", "YY2611250002"),
                                 ("action=cancel", "YY2611250002", "YY2611250001"),
                                 ("target=YY2611250002", "YY2611250002", "YY2611250001"),
                                 ("from=2026-11-26&to=2026-11-26", "YY2611250002", "YY2611250001"),
                                 ("to=2026-11-25", "YY2611250001", "YY2611250002")):
        page = (await http.get(f"/admin/audit?{query}")).text
        assert shown in page and hidden not in page, query
    assert (await http.get("/admin/audit?from=yesterday&page=x")).status_code == 200


async def test_all_dead_letters_are_retried_at_once(http, console, services, wechat_api, sent):
    now = datetime.now(timezone.utc)
    with Session(services.engine) as s:
        from models import WechatUser

        s.execute(update(WechatUser).where(WechatUser.openid == U).values(last_seen_at=now))
        ids = [notify.text_message(s, U, f"第{n}条", now, key=f"console-test:all:{n}")
               for n in (1, 2)]
        s.execute(update(Notification).values(status="dead", tries=12, last_error="gave up"))
        s.commit()
    await sign_in(http, ADMIN_LOGIN)
    res = await post(http, "/admin/outbox", "/admin/outbox/retry", {"row": "all"})
    assert res.status_code == 200 and "已重新排队 2 条" in res.text
    for _ in range(250):
        with Session(services.engine) as s:
            done = [s.get(Notification, i).status for i in ids]
        if done == ["sent", "sent"]:
            break
        await asyncio.sleep(0.02)
    assert done == ["sent", "sent"]
    assert "没有发送失败的消息" in (await http.get("/admin/outbox")).text


async def test_a_message_closed_without_a_reply_sends_nothing(http, console, services, sent):
    mid = leave(services, console, "不用回复了，谢谢")
    await sign_in(http, SPEC_LOGIN)
    res = await post(http, "/admin/messages", f"/admin/messages/{mid}/close", {})
    assert res.status_code == 200 and f"留言 {mid} 已关闭" in res.text
    twice = await post(http, "/admin/messages?all=1", f"/admin/messages/{mid}/close", {})
    assert twice.status_code == 400
    with Session(services.engine) as s:
        assert s.get(LeftMessage, mid).closed_by == SPEC
        assert s.execute(select(func.count()).select_from(Notification)).scalar_one() == 0
    assert [a.action for a in audits(services, "message_closed")] == ["message_closed"]


async def test_the_csv_export_never_hands_a_spreadsheet_a_formula(wx_plain, http, console,
                                                                  services):
    from models import Customer
    from tests.support.booking import WED
    from tests.support.staff import booked

    with time_machine.travel(WED, tick=True):
        await booked(wx_plain, services)
        with Session(services.engine) as s:
            s.execute(update(Customer).where(Customer.id == console.id)
                      .values(name='=HYPERLINK("http://evil.example","李四")'))
            s.commit()
        await sign_in(http, SPEC_LOGIN)
        csv = await http.get("/admin/bookings.csv")
    row = csv.content.decode("utf-8-sig").splitlines()[1]
    assert ",'=*" in row and "evil" not in row
