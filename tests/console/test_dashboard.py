"""The dashboard (/admin/dashboard) and the year-end nudge over HTTP, on the demo's data:
the figures a specialist reads, the charts as SVG with the numbers beside them, and the
reminder that an unused benefit resets on 1 January (admin; once per customer, service and
year; never to someone who booked it)."""
from __future__ import annotations

import base64
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from bot.demo import load_demo
from bot.domain import dashboard as figures
from models import Booking, UnansweredQuestion
from tests.support.console import ADMIN_LOGIN, SPEC_LOGIN, add_staff, csrf_of, sign_in
from tests.support.staff import ADMIN, SPEC

pytestmark = pytest.mark.settings(admin_enabled=True)
GOLD = "o_demo_gold"
REMINDER = "demo-benefit-reminder"


@pytest.fixture
def demo(services, settings):
    load_demo(settings)
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    add_staff(services.engine, ADMIN, "赵主管", "admin", ADMIN_LOGIN)


async def book_dental(wx_plain):
    for said in ("预约洁牙", "本人", "北京", "瑞尔齿科北京国贸诊所", "1", "确认"):
        reply = await wx_plain.say(GOLD, said)
    assert "预约已受理" in reply


def reminders(sent) -> list[dict]:
    return [e["body"] for e in sent if e["api"] == "template"
            and e["body"]["template_id"] == REMINDER]


def wait_for(check, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def unused_of(services, year) -> dict[tuple[str, str], int]:
    with Session(services.engine) as s:
        return {(u["service"], u["tier"]): u["customers"]
                for u in figures.unused_benefits(s, services.rules, year)}


# --- The dashboard ----------------------------------------------------------------------------


async def test_a_specialist_reads_the_dashboard_charts_beside_their_numbers(http, demo, wx_plain):
    await book_dental(wx_plain)
    await sign_in(http, SPEC_LOGIN)
    res = await http.get("/admin/dashboard")
    assert res.status_code == 200 and res.headers["cache-control"] == "no-store"
    html = res.text
    images = re.findall(r'<img class="chart" src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(images) == 6
    for data in images:
        svg = base64.b64decode(data).decode()
        assert svg.startswith("<svg") and "<script" not in svg and "kozea" not in svg
    service_chart = base64.b64decode(images[0]).decode()
    assert "洁牙" in service_chart
    table = html[html.index('id="months-service"'):html.index('id="months-tier"')]
    month = datetime.now(timezone(timedelta(hours=8)))
    row = re.search(r"<tr><th>洁牙</th>(.*?)</tr>", table).group(1)
    cells = re.findall(r"<td>(\d+)</td>", row)
    assert len(cells) == 13 and cells[-1] == "1"  # twelve months and the total
    assert "<script" not in html
    quota = html[html.index('id="quota"'):html.index('id="unused"')]
    # 洁牙 is offered to 钻石, 铂金 and 黄金 (one demo customer each); 吴芳 (黄金) used it.
    assert re.search(r"<th>洁牙</th><td>3</td><td>1</td><td>1</td>", quota), quota
    assert "年末提醒" not in html  # the nudge is an admin's


def test_unused_benefits_by_tier_before_and_after_a_booking(services, demo):
    year = services.now().year
    before = unused_of(services, year)
    assert before[("dental", "gold")] == 1 and before[("dental", "diamond")] == 1
    assert ("dental", "pearl") not in before  # 明珠 has no 洁牙


async def test_a_free_cancellation_gives_the_benefit_back(services, demo, wx_plain):
    year = services.now().year
    await book_dental(wx_plain)
    assert unused_of(services, year)[("dental", "gold")] == 0
    with Session(services.engine) as s:
        booking = s.exec(select(Booking)).one()
        booking.status, booking.counted = "cancelled", False
        s.add(booking)
        s.commit()
    assert unused_of(services, year)[("dental", "gold")] == 1


def test_rates_with_nothing_to_count_say_so():
    r = figures.Rates(completed=0, no_show=0, cancelled_late=0, counted_total=0)
    assert r.no_show_rate is None and r.late_cancel_rate is None
    r = figures.Rates(completed=3, no_show=1, cancelled_late=1, counted_total=5)
    assert r.no_show_rate == 0.25 and r.late_cancel_rate == 0.2


def test_unanswered_questions_of_this_month_most_frequent_first(services, demo):
    now = services.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with Session(services.engine) as s:
        for text, at in [("能报销牙套吗", start), ("能报销牙套吗", start + timedelta(hours=1)),
                         ("体检能带孩子吗", start + timedelta(minutes=1)),
                         ("上个月的问题", start - timedelta(seconds=1))]:
            s.add(UnansweredQuestion(text=text, tier="gold", asked_at=at))
        s.commit()
        got = figures.unanswered_this_month(s, now.date(), services.settings.tz)
    assert got == [("能报销牙套吗", 2), ("体检能带孩子吗", 1)]


# --- The year-end nudge -----------------------------------------------------------------------


async def test_the_nudge_reaches_those_with_the_benefit_unused_once(http, demo, wx_plain, sent,
                                                                   services):
    await book_dental(wx_plain)
    year = services.now().year
    await sign_in(http, ADMIN_LOGIN)
    preview = await http.get("/admin/dashboard/nudge")
    assert preview.status_code == 200
    assert re.search(r"<td>洁牙</td><td>黄金</td><td>0</td>", preview.text)  # booked it
    assert re.search(r"<td>洁牙</td><td>钻石</td><td>1</td>", preview.text)
    assert f"{year}年洁牙服务 · 使用截止 {year}年12月31日 · 尚未使用，回复「预约洁牙」即可预约" \
        in preview.text
    sent.clear()
    form = {"csrf": csrf_of(preview.text), "year": str(year), "service": "dental",
            "confirm": "yes"}
    res = await http.post("/admin/dashboard/nudge", data=form)
    assert res.status_code == 303 and "sent=2" in res.headers["location"]
    assert wait_for(lambda: len(reminders(sent)) == 2)
    to = {b["touser"] for b in reminders(sent)}
    assert to == {"o_demo_diamond", "o_demo_platinum"}  # not 吴芳, who booked it
    body = reminders(sent)[0]
    assert body["data"]["thing1"]["value"] == f"{year}年洁牙服务"
    assert body["data"]["date2"]["value"] == f"{year}年12月31日"
    assert body["data"]["thing3"]["value"] == "尚未使用，回复「预约洁牙」即可预约"
    again = await http.post("/admin/dashboard/nudge", data=form)
    assert again.status_code == 303 and "sent=0" in again.headers["location"]
    time.sleep(0.3)
    assert len(reminders(sent)) == 2  # once per customer, service and year
    after = (await http.get("/admin/dashboard/nudge")).text
    assert re.search(r"<td>洁牙</td><td>钻石</td><td>0</td>", after)


async def test_the_nudge_needs_a_confirmation_and_a_benefit(http, demo, sent, services):
    await sign_in(http, ADMIN_LOGIN)
    page = (await http.get("/admin/dashboard/nudge")).text
    year = str(services.now().year)
    for form, why in [({"year": year, "service": "dental"}, "我已核对受众"),
                      ({"year": year, "confirm": "yes"}, "至少勾选"),
                      ({"year": year, "service": "hospital_visit", "confirm": "yes"}, "至少勾选"),
                      ({"year": str(int(year) - 1), "service": "dental", "confirm": "yes"},
                       "重新预览")]:
        res = await http.post("/admin/dashboard/nudge", data={**form, "csrf": csrf_of(page)})
        assert res.status_code == 400 and why in res.text
    time.sleep(0.2)
    assert reminders(sent) == []


async def test_only_an_admin_nudges_and_only_with_the_csrf_token(http, demo, sent, services):
    await sign_in(http, SPEC_LOGIN)
    assert (await http.get("/admin/dashboard/nudge")).status_code == 403
    page = (await http.get("/admin/dashboard")).text
    year = str(services.now().year)
    res = await http.post("/admin/dashboard/nudge", data={
        "csrf": csrf_of(page), "year": year, "service": "dental", "confirm": "yes"})
    assert res.status_code == 403
    await http.post("/admin/logout", data={"csrf": csrf_of(page)})
    await sign_in(http, ADMIN_LOGIN)
    res = await http.post("/admin/dashboard/nudge", data={
        "csrf": "wrong", "year": year, "service": "dental", "confirm": "yes"})
    assert res.status_code == 403
    time.sleep(0.2)
    assert reminders(sent) == []


async def test_anonymous_is_sent_to_sign_in(http, demo):
    for path in ("/admin/dashboard", "/admin/dashboard/nudge"):
        res = await http.get(path, follow_redirects=False)
        assert res.status_code == 303 and res.headers["location"].startswith("/admin/login")
