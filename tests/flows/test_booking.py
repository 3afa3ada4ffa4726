"""Booking, 我的预约 and 取消预约 through /wechat: signed requests, a real database and
controlled time. Expected values come from docs/programme.md ("Booking rules", "Services"),
not from the templates under test: tests look at what was written and at the dates, numbers
and names a reply must carry."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select, update
from sqlmodel import Session
from sqlmodel import select as sm_select

from bot.domain.accounts import bind
from bot.domain.vocab import BookingStatus
from models import Booking, Customer, FamilyMember, Institution
from tests.support import factories
from tests.support.booking import MID, NUMBER, U, U2, WED, book_dental, bookings, count_bookings, walk, world  # noqa: F401
from tests.support.tiers import RULES


# A Wednesday: the earliest bookable date is Friday 27 November 2026 (DOMAIN: 2 working days).
# Mid-year: the 90-day window stays inside 2026, so a spent 2026 use blocks any booking.


# --- A booking from start to end, per tier ------------------------------------------------------


@pytest.mark.parametrize("tier,entry,steps,service", [
    ("gold", "预约洁牙", ["本人", "北京", "北京洁牙门诊", "1"], "dental"),
    ("platinum", "预约体检", ["本人", "铂金健康体检套餐(男性)", "北京", "北京商业体检中心", "1"],
     "checkup"),
    ("platinum", "专家门诊", ["本人", "心内科", "不限", "北京", "北京三甲医院", "1"],
     "expert_outpatient"),
    ("diamond", "专家门诊", ["本人", "心内科", "不限", "张医生", "北京", "北京三甲医院", "1"],
     "expert_outpatient"),
    ("diamond", "特种检查", ["本人", "核磁共振检查", "腰痛三个月，医生建议做核磁", "北京", "北京三甲医院",
                          "1"], "special_exam"),
])
async def test_a_bound_customer_books_sees_and_cancels(wx_plain, world, services, tier, entry,
                                                        steps, service):
    with time_machine.travel(WED, tick=True):
        world(tier)
        replies = await walk(wx_plain, U, entry, *steps)
        assert "确认" in replies[-1] and "2026年11月27日" in replies[-1]  # first offered date
        done = await wx_plain.say(U, "确认")
        (b,) = bookings(services)
        assert b.status == BookingStatus.SUBMITTED and b.service == service and b.counted
        assert b.preferred_date == date(2026, 11, 27) and b.tier == tier
        assert re.fullmatch(r"YY261125\d{4}", b.number) and b.number in done
        if tier == "diamond" and service == "expert_outpatient":
            assert b.expert == "张医生" and b.department == "心内科"
        if tier == "platinum" and service == "expert_outpatient":
            assert b.expert is None  # DOMAIN: 铂金 may not name the expert
        mine = await wx_plain.say(U, "我的预约")
        assert b.number in mine and "李*" in mine and "李四" not in mine
        reply = await wx_plain.say(U, f"取消预约 {b.number}")
        assert b.number in reply
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.status == BookingStatus.CANCELLED and not b.counted


async def test_booking_numbers_count_up_within_a_day(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        world("gold", openid=U2)
        await book_dental(wx_plain, U)
        await book_dental(wx_plain, U2)
    numbers = [b.number for b in bookings(services)]
    assert numbers == ["YY2611250001", "YY2611250002"]


async def test_unbound_user_is_led_into_binding(wx_plain, world):
    reply = await wx_plain.say(U, "预约洁牙")
    assert "姓名" in reply  # binding's first question


# --- Entitlement per tier -----------------------------------------------------------------------


@pytest.mark.parametrize("tier,entry,needed", [
    ("pearl", "预约洁牙", "黄金"),
    ("mass", "预约洁牙", "黄金"),
    ("gold", "预约体检", "铂金"),
    ("gold", "专家门诊", "铂金"),
    ("platinum", "特种检查", "钻石"),
])
async def test_a_tier_without_the_service_is_told_which_tier_gives_it(wx_plain, world, services,
                                                                       tier, entry, needed):
    with time_machine.travel(WED, tick=True):
        world(tier)
        reply = await wx_plain.say(U, entry)
    assert needed in reply
    assert "本人（" not in reply  # no flow started
    assert count_bookings(services) == 0


# The shipped cancellation rules (rules.toml): the handbook's noon cut-off and 24 h grace.
TERMS = dict(cutoff=RULES.booking.cancel_cutoff, grace_hours=RULES.booking.confirm_grace_hours)
# DOMAIN, "Services": the services each tier may book (all for family too).
TIER_SERVICES = {"diamond": {"洁牙", "健康体检", "专家门诊预约", "特种检查预约"},
                 "platinum": {"洁牙", "健康体检", "专家门诊预约"}, "gold": {"洁牙"},
                 "pearl": set(), "mass": set()}
SERVICE_KEYS = {"洁牙": "BOOK_DENTAL", "健康体检": "BOOK_CHECKUP", "专家门诊预约": "BOOK_EXPERT",
                "特种检查预约": "BOOK_SPECIAL"}


@pytest.mark.parametrize("tier", list(TIER_SERVICES))
async def test_the_service_list_offers_only_the_tiers_services(wx_plain, world, tier):
    """Each service's menu entry: a service of the tier asks for whom, offering the
    policyholder and their registered family member (masked); any other service is refused
    with the list of the services the tier does give."""
    with time_machine.travel(WED, tick=True):
        world(tier, family=[("spouse", "王芳", date(1982, 3, 4), "F")])
        for service, key in SERVICE_KEYS.items():
            reply = await wx_plain.click(U, key)
            await wx_plain.say(U, "退出")
            if service in TIER_SERVICES[tier]:
                assert "本人（李*）" in reply and "配偶 王*" in reply, (service, reply)
                assert "李四" not in reply and "王芳" not in reply
            else:
                assert "本人（" not in reply and "王*" not in reply, (service, reply)
                offered = set(re.findall(r"([^：、\s]+)（今年剩余", reply))
                assert offered == TIER_SERVICES[tier], (service, reply)


async def test_tier_change_after_submitting_keeps_the_booking(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        customer, _ = world("platinum")
        await walk(wx_plain, U, "预约体检", "本人", "1", "北京", "北京商业体检中心", "1", "确认")
        with Session(services.engine) as s:
            s.execute(update(Customer).where(Customer.id == customer.id).values(tier="gold"))
            s.commit()
        mine = await wx_plain.say(U, "我的预约")
    (b,) = bookings(services)
    assert b.status == BookingStatus.SUBMITTED and b.number in mine


# --- Quota ---------------------------------------------------------------------------------------


async def test_a_second_booking_in_the_same_year_is_refused(wx_plain, world, services):
    with time_machine.travel(MID, tick=True):
        world("gold")
        await book_dental(wx_plain)
        reply = await wx_plain.say(U, "预约洁牙")
    assert "2026" in reply and len(bookings(services)) == 1
    assert "本人（" not in reply  # refused before any step


async def test_a_family_use_counts_against_the_policyholders_quota(wx_plain, world, services):
    with time_machine.travel(MID, tick=True):
        world("gold", family=[("spouse", "王芳", date(1982, 3, 4), "F")])
        await walk(wx_plain, U, "预约洁牙", "2", "北京", "北京洁牙门诊", "1", "确认")
        reply = await wx_plain.say(U, "洗牙")
    (b,) = bookings(services)
    assert b.family_member_id is not None and b.consent_at is not None
    assert len(bookings(services)) == 1 and "本人（" not in reply


async def test_quota_across_new_year_uses_next_years_quota(wx_plain, world, services):
    # 20 December 2026: a booking for January 2027 uses 2027's quota (DOMAIN).
    with time_machine.travel("2026-12-21 10:00:00+08:00", tick=True):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊", "2026年12月28日", "确认")
        # 2026's use is spent, but a 2027 date can still be booked
        replies = await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊")
        assert "2026年12" not in replies[-1]  # no 2026 date is offered any more
        late = await walk(wx_plain, U, "2026年12月30日")
        assert "2026" in late[0]  # refused: 2026's use is spent
        await walk(wx_plain, U, "2027年1月5日", "确认")
        again = await wx_plain.say(U, "预约洁牙")
    years = sorted(b.quota_year for b in bookings(services))
    assert years == [2026, 2027]
    assert "2026" in again and "2027" in again  # both years are spent now


async def test_a_free_cancellation_gives_the_use_back(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await book_dental(wx_plain)
        await walk(wx_plain, U, "取消预约", "确认")
        benefits = await wx_plain.say(U, "我的权益")
        assert "洁牙" in benefits and "剩余 1/1" in benefits
        replies = await book_dental(wx_plain)
    assert [b.status for b in bookings(services)] == [BookingStatus.CANCELLED,
                                                       BookingStatus.SUBMITTED]
    assert NUMBER.search(replies[-1])


async def test_my_benefits_shows_the_use_taken(wx_plain, world):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await book_dental(wx_plain)
        benefits = await wx_plain.say(U, "我的权益")
    assert "剩余 0/1" in benefits


# --- Lead time and window ------------------------------------------------------------------------


async def test_lead_time_from_a_saturday_request_is_tuesday(wx_plain, world, services):
    with time_machine.travel("2026-11-28 10:00:00+08:00", tick=True):  # Saturday
        world("gold")
        replies = await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊")
        assert "12月1日" in replies[-1]  # Tuesday is the first date offered
        assert "11月30日" not in replies[-1]
        refused = await wx_plain.say(U, "2026-11-30")  # Monday: too soon
        assert "2026年12月1日" in refused
        await walk(wx_plain, U, "2026-12-01", "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 12, 1)


async def test_lead_time_across_national_day_2026(wx_plain, world, services):
    # 国庆 2026: 1-7 October off; request on Wednesday 30 September: the 2nd working day
    # after it is Friday 9 October (8 October is the first working day after the holiday).
    with time_machine.travel("2026-09-30 10:00:00+08:00", tick=True):
        world("gold")
        replies = await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊")
        assert "10月9日" in replies[-1]
        refused = await wx_plain.say(U, "10月8日")
        assert "2026年10月9日" in refused
        await walk(wx_plain, U, "10月9日", "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 10, 9)


async def test_window_edge_90_days_yes_91_no(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊")
        day91 = date(2026, 11, 25) + timedelta(days=91)
        refused = await wx_plain.say(U, day91.isoformat())
        assert "90" in refused
        day90 = date(2026, 11, 25) + timedelta(days=90)
        await walk(wx_plain, U, day90.isoformat(), "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2027, 2, 23)


async def test_past_and_nonsense_dates_are_refused(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊")
        past = await wx_plain.say(U, "2026-11-20")
        assert "过去" in past  # says why
        after_past = await wx_plain.say(U, "确认")
        nonsense = await wx_plain.say(U, "13月45日")
        assert "看懂" in nonsense and "过去" not in nonsense  # says why: not a date it can read
        after_nonsense = await wx_plain.say(U, "确认")
        assert past != nonsense
    for reply in (past, after_past, nonsense, after_nonsense):
        # the date is asked for again, from the earliest bookable one (DOMAIN: Wednesday →
        # Friday); nothing was booked, so no booking number is given
        assert "11月27日" in reply and NUMBER.search(reply) is None, reply
    assert count_bookings(services) == 0


async def test_a_provisional_year_is_said_to_be_provisional(wx_plain, world):
    with time_machine.travel("2026-12-21 10:00:00+08:00", tick=True):
        world("gold")
        replies = await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "2027-01-06")
    assert "暂定" in replies[-1] and "2027年1月6日" in replies[-1]  # DOMAIN: say it is provisional


# --- Institution ----------------------------------------------------------------------------------


async def test_a_closed_weekday_and_a_closed_date_are_refused(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        replies = await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊")
        assert "11月29日" not in replies[-1]  # a Sunday: the institution is closed
        sunday = await wx_plain.say(U, "2026-11-29")
        assert "2026年11月29日" in sunday
        closed_day = await wx_plain.say(U, "2026-12-02")
        assert "2026年12月2日" in closed_day
        await walk(wx_plain, U, "2026-12-03", "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 12, 3)


async def test_only_institutions_giving_the_service_are_offered(wx_plain, world):
    with time_machine.travel(WED, tick=True):
        world("gold")
        replies = await walk(wx_plain, U, "预约洁牙", "本人", "北京")
    assert "北京洁牙门诊" in replies[-1] and "北京三甲医院" not in replies[-1]


@pytest.mark.parametrize("tier,package,hospital_ok", [
    ("diamond", "钻石健康体检套餐(男性)", True),
    ("platinum", "铂金健康体检套餐(男性)", False),
])
async def test_checkup_venue_per_tier(wx_plain, world, services, tier, package, hospital_ok):
    """DOMAIN: 钻石 at commercial centres or 三甲 hospitals; 铂金 at commercial centres only."""
    with time_machine.travel(WED, tick=True):
        world(tier)
        replies = await walk(wx_plain, U, "预约体检", "本人", package, "北京")
    assert "北京商业体检中心" in replies[-1]
    assert ("北京三甲医院" in replies[-1]) is hospital_ok


async def test_checkup_venue_is_rechecked_at_commit(wx_plain, world, services):
    """A tertiary hospital picked by a platinum customer is refused even if typed."""
    from bot.domain.bookings import BookingFacts, BookingRequest, Place, Refusal, calendar, check_booking

    hospital = Place(id=1, code="H1", name="x", city="北京", address="", kind="tertiary_hospital",
                     services=frozenset({"checkup"}))
    req = BookingRequest(service="checkup", tier="platinum",
                         requested_at=datetime.fromisoformat(WED),
                         package="checkup_platinum_male", institution=hospital)
    facts = BookingFacts(rules=services.rules, calendar=calendar())
    assert check_booking(req, facts) == Refusal.VENUE
    diamond = BookingRequest(service="checkup", tier="diamond",
                             requested_at=datetime.fromisoformat(WED),
                             package="checkup_diamond_male", institution=hospital)
    assert check_booking(diamond, facts) is None


# --- Beneficiary and package ---------------------------------------------------------------------


async def test_checkup_packages_follow_the_beneficiarys_sex(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("diamond", sex="M", family=[("parent", "李母", date(1955, 1, 1), "F")])
        mine = await walk(wx_plain, U, "预约体检", "本人")
        assert "(男性)" in mine[-1] and "(女性)" not in mine[-1] and "心脑血管" in mine[-1]
        await wx_plain.say(U, "退出")
        mum = await walk(wx_plain, U, "帮我妈妈约体检")
        assert "(女性)" in mum[-1] and "(男性)" not in mum[-1]
        await walk(wx_plain, U, "钻石健康体检套餐(女性)", "北京", "北京三甲医院", "1", "确认")
    (b,) = bookings(services)
    assert b.package == "checkup_diamond_female" and b.family_member_id is not None


async def test_a_new_family_member_is_registered_with_consent(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        customer, _ = world("gold")
        from bot.domain.identity import make_id_number
        child_id = make_id_number("310101", date(2012, 6, 1), 5, "M")
        replies = await walk(wx_plain, U, "预约洁牙", "添加家人", "子女", "李小明", child_id,
                             "北京", "北京洁牙门诊", "1")
        assert "李**" in replies[-1] and child_id not in replies[-1]
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    with Session(services.engine) as s:
        member = s.get(FamilyMember, b.family_member_id)
    assert member.customer_id == customer.id and member.relation == "child"
    assert b.consent_at is not None


async def test_a_bad_id_number_for_a_family_member_is_asked_again(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "添加家人", "配偶", "王芳")
        reply = await wx_plain.say(U, "110105198001010000")
        assert "身份证" in reply
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(FamilyMember)).scalar_one() == 0


async def test_another_customers_family_member_is_not_eligible(services, world):
    from bot.domain import booking_store

    with time_machine.travel(WED, tick=True):
        me, _ = world("gold")
        other, (theirs,) = world("gold", openid=U2,
                                 family=[("spouse", "外人", date(1980, 1, 1), "F")])
        with Session(services.engine) as s:
            assert booking_store.beneficiary(s, s.get(Customer, me.id), theirs.id) is None
            assert booking_store.beneficiary(s, s.get(Customer, other.id), theirs.id) is not None


def test_a_package_for_the_other_sex_is_refused(services):
    from bot.domain.bookings import (BookingFacts, BookingRequest, Person, Refusal, calendar,
                                     check_booking)

    facts = BookingFacts(rules=services.rules, calendar=calendar())
    mum = Person(name="李母", id_number="x", sex="F", relation="parent")
    at = datetime.fromisoformat(WED)
    for package, expected in [("checkup_diamond_male", Refusal.PACKAGE_SEX),
                              ("checkup_diamond_female", None), ("checkup_diamond_cardio", None),
                              ("checkup_platinum_female", Refusal.NO_PACKAGE)]:
        req = BookingRequest("checkup", "diamond", at, beneficiary=mum, package=package)
        assert check_booking(req, facts) == expected, package


def test_family_rules_in_the_domain(services):
    from bot.domain.bookings import (BookingFacts, BookingRequest, Person, Refusal, calendar,
                                     check_booking)

    facts = BookingFacts(rules=services.rules, calendar=calendar())
    at = datetime.fromisoformat(WED)
    cousin = Person(name="表哥", id_number="x", sex="M", relation="cousin")
    assert check_booking(BookingRequest("dental", "gold", at, beneficiary=cousin),
                         facts) == Refusal.NOT_FAMILY
    spouse = Person(name="配偶", id_number="x", sex="F", relation="spouse")
    assert check_booking(BookingRequest("dental", "gold", at, beneficiary=spouse), facts) is None
    # a service for the policyholder only
    rules = services.rules.model_copy(update={"services": tuple(
        s.model_copy(update={"family": False}) if s.code == "dental" else s
        for s in services.rules.services)})
    assert check_booking(BookingRequest("dental", "gold", at, beneficiary=spouse),
                         BookingFacts(rules=rules, calendar=calendar())) == Refusal.FAMILY_NOT_ALLOWED


# --- Entries that already answer steps -----------------------------------------------------------


async def test_an_entry_with_a_date_skips_the_date_step(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):  # 下周三 = 2 December... closed at D1, open at S1
        world("gold")
        replies = await walk(wx_plain, U, "下周三洗牙", "本人", "上海", "上海洁牙门诊")
        assert "2026年12月2日" in replies[-1] and "确认" in replies[-1]
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 12, 2)


async def test_an_entry_date_the_institution_cannot_take_is_asked_again(wx_plain, world):
    with time_machine.travel(WED, tick=True):
        world("gold")
        replies = await walk(wx_plain, U, "下周三洗牙", "本人", "北京", "北京洁牙门诊")
    assert "2026年12月2日" in replies[-1]  # says why (closed that day)
    assert "11月27日" in replies[-1]  # and offers dates


async def test_special_exam_entry_names_the_exam(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("diamond")
        await walk(wx_plain, U, "预约核磁共振", "本人", "腰痛三个月", "北京", "北京三甲医院", "1", "确认")
    (b,) = bookings(services)
    assert b.exam == "核磁共振检查"


# --- Exactly one booking per confirmation --------------------------------------------------------


async def test_confirm_twice_makes_one_booking(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊", "1")
        first = await wx_plain.say(U, "确认")
        second = await wx_plain.say(U, "确认")
    assert NUMBER.search(first) and not NUMBER.search(second)
    assert count_bookings(services) == 1


async def test_a_retried_confirmation_makes_one_booking(wx_plain, world, services):
    from bot.wechat.simulator import text_xml

    with time_machine.travel(WED, tick=True):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊", "1")
        xml = text_xml(U, "确认", msg_id=777000111)
        a = await wx_plain.deliver(xml, U)
        b = await wx_plain.deliver(xml, U)
    assert a["Content"] == b["Content"] and NUMBER.search(a["Content"])
    assert count_bookings(services) == 1


# --- Cancelling ------------------------------------------------------------------------------------


def _confirm(services, number: str, day: date, at: str, confirmed_at: datetime) -> None:
    """Staff confirmation, written directly (the staff command is other work)."""
    with Session(services.engine) as s:
        s.execute(update(Booking).where(Booking.number == number).values(
            status=BookingStatus.CONFIRMED, confirmed_date=day, confirmed_time=at,
            confirmed_at=confirmed_at, quota_year=day.year))
        s.commit()


@pytest.fixture
async def confirmed(wx_plain, world, services):
    """A booking for Thursday 3 December 2026, confirmed on Wednesday 25 November."""
    with time_machine.travel(WED, tick=True):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊", "2026-12-03", "确认")
    (b,) = bookings(services)
    _confirm(services, b.number, date(2026, 12, 3), "09:30",
             datetime.fromisoformat("2026-11-25 15:00:00+08:00"))
    return b.number


@pytest.mark.parametrize("moment,free", [
    ("2026-12-02 11:59:59+08:00", True),   # before 12:00 on the last working day before
    ("2026-12-02 12:00:00+08:00", False),  # at 12:00 the use is counted
])
async def test_cancellation_deadline(wx_plain, services, confirmed, moment, free):
    with time_machine.travel(moment, tick=False):
        reply = await wx_plain.say(U, f"取消预约 {confirmed}")
        assert confirmed in reply
        if free:
            assert "免费" in reply and "确认取消" not in reply  # a plain yes is enough
            done = await wx_plain.say(U, "确认")
            assert "不计" in done and "2026" in done  # 2026's use is given back
        else:
            assert "2026年12月2日 12:00" in reply and "确认取消" in reply
            not_yet = await wx_plain.say(U, "确认")  # a plain yes is not enough when counted
            assert "确认取消" in not_yet and "2026年12月2日 12:00" in not_yet  # asked again
            (b,) = bookings(services)
            assert b.status == BookingStatus.CONFIRMED
            done = await wx_plain.say(U, "确认取消")
            assert "计入" in done and "2026" in done  # 2026's use stays spent
    (b,) = bookings(services)
    assert confirmed in done
    assert b.status == (BookingStatus.CANCELLED if free else BookingStatus.CANCELLED_LATE)
    assert b.counted is (not free)


async def test_a_bare_cancel_keeps_a_late_booking(wx_plain, services, confirmed):
    with time_machine.travel("2026-12-02 15:00:00+08:00", tick=False):
        await wx_plain.say(U, f"取消预约 {confirmed}")
        await wx_plain.say(U, "取消")
        mine = await wx_plain.say(U, "我的预约")
    (b,) = bookings(services)
    assert b.status == BookingStatus.CONFIRMED and b.counted and b.cancelled_at is None
    assert confirmed in mine


async def test_deadline_when_the_day_before_is_a_holiday(services):
    """Service on Monday 5 October 2026 (国庆): the last working day before is Wednesday
    30 September, so free cancellation ends at 12:00 that day."""
    from types import SimpleNamespace

    from bot.domain.bookings import calendar, cancellation_terms

    b = SimpleNamespace(status="confirmed", confirmed_date=date(2026, 10, 9), preferred_date=None,
                        confirmed_time="09:00",
                        confirmed_at=datetime.fromisoformat("2026-09-20 10:00:00+08:00"))
    # 9 October (Friday): 8 October is the first working day after the holiday
    free, deadline = cancellation_terms(b, datetime.fromisoformat("2026-10-08 11:59:59+08:00"),
                                        calendar(), **TERMS)
    assert free and deadline == datetime.fromisoformat("2026-10-08 12:00:00+08:00")
    b.confirmed_date = date(2026, 10, 8)  # Thursday after the holiday: last working day 30 Sep
    free, deadline = cancellation_terms(b, datetime.fromisoformat("2026-10-01 09:00:00+08:00"),
                                        calendar(), **TERMS)
    assert not free and deadline == datetime.fromisoformat("2026-09-30 12:00:00+08:00")


def test_a_submitted_booking_cancels_free_at_any_time():
    from types import SimpleNamespace

    from bot.domain.bookings import calendar, cancellation_terms

    b = SimpleNamespace(status="submitted", confirmed_date=None, preferred_date=date(2026, 12, 3),
                        confirmed_time=None, confirmed_at=None)
    assert cancellation_terms(b, datetime.fromisoformat("2026-12-02 18:00:00+08:00"),
                              calendar(), **TERMS) == (True, None)


def test_a_late_confirmation_gives_24_hours_never_past_the_start():
    from types import SimpleNamespace

    from bot.domain.bookings import calendar, cancellation_terms

    # confirmed Wednesday 2 December 15:00 for Thursday 3 December 09:30: the deadline had passed
    b = SimpleNamespace(status="confirmed", confirmed_date=date(2026, 12, 3),
                        preferred_date=date(2026, 12, 3), confirmed_time="09:30",
                        confirmed_at=datetime.fromisoformat("2026-12-02 15:00:00+08:00"))
    free, deadline = cancellation_terms(b, datetime.fromisoformat("2026-12-03 09:00:00+08:00"),
                                        calendar(), **TERMS)
    assert free and deadline == datetime.fromisoformat("2026-12-03 09:30:00+08:00")
    # confirmed Monday 30 November 20:00 for Wednesday 2 December 14:00: free until Tue 20:00
    b.confirmed_date, b.confirmed_time = date(2026, 12, 2), "14:00"
    b.confirmed_at = datetime.fromisoformat("2026-11-30 20:00:00+08:00")
    free, deadline = cancellation_terms(b, datetime.fromisoformat("2026-12-01 19:59:59+08:00"),
                                        calendar(), **TERMS)
    assert free and deadline == datetime.fromisoformat("2026-12-01 20:00:00+08:00")
    assert not cancellation_terms(b, datetime.fromisoformat("2026-12-01 20:00:00+08:00"),
                                  calendar(), **TERMS)[0]


async def test_cancelling_another_customers_booking_is_refused(wx_plain, world, services):
    with time_machine.travel(WED, tick=True):
        world("gold")
        world("gold", openid=U2)
        await book_dental(wx_plain, U)
        (b,) = bookings(services)
        reply = await wx_plain.say(U2, f"取消预约 {b.number}")
        await wx_plain.say(U2, "确认")
    (b,) = bookings(services)
    assert b.status == BookingStatus.SUBMITTED
    assert "李" not in reply  # nothing of the other customer is shown


async def test_a_late_cancellation_keeps_the_use_counted(wx_plain, services, confirmed):
    with time_machine.travel("2026-12-02 15:00:00+08:00", tick=False):
        await walk(wx_plain, U, f"取消预约 {confirmed}", "确认取消")
        benefits = await wx_plain.say(U, "我的权益")
    assert "剩余 0/1" in benefits  # the 2026 use stays spent


def test_staff_mode_warns_about_the_lead_time_instead_of_refusing(services):
    from bot.domain.bookings import (BookingFacts, BookingRequest, Refusal, booking_warnings,
                                     calendar, check_booking)

    facts = BookingFacts(rules=services.rules, calendar=calendar())
    req = BookingRequest("dental", "gold", datetime.fromisoformat(WED), date=date(2026, 11, 26))
    assert check_booking(req, facts) == Refusal.TOO_SOON
    assert check_booking(req, facts, staff=True) is None
    assert booking_warnings(req, facts) == [Refusal.TOO_SOON]
    past = BookingRequest("dental", "gold", datetime.fromisoformat(WED), date=date(2026, 11, 24))
    assert check_booking(past, facts, staff=True) == Refusal.PAST


async def test_symptoms_at_the_department_step_get_the_advice_and_the_flow_goes_on(wx_plain, world,
                                                                                   services):
    """docs/programme.md: at a step that takes symptoms (expert outpatient) the emergency advice is
    shown and the flow goes on."""
    with time_machine.travel(WED, tick=True):
        world("platinum")
        await walk(wx_plain, U, "专家门诊", "本人")
        reply = await wx_plain.say(U, "胸口疼得厉害")
        assert "120" in reply and "急诊" in reply  # the advice, at once
        assert "医院" in reply.split("专家门诊预约不是急诊服务")[-1]  # and the next question
        assert "北京" in await wx_plain.say(U, "不限")  # the symptoms were kept: on to the city
    assert count_bookings(services) == 0


async def test_privacy_export_shows_bookings_and_family_added_in_chat(wx_plain, world, services):
    from bot.domain.privacy import export

    with time_machine.travel(WED, tick=True):
        world("gold")
        await book_dental(wx_plain)
    with Session(services.engine) as s:
        data = export(s, U)
    (b,) = bookings(services)
    assert [x["number"] for x in data["bookings"]] == [b.number]
    assert data["family_members"] == []  # none were added in this chat


async def test_the_date_step_offers_dates_without_saying_there_are_none(wx_plain, world):
    with time_machine.travel(WED, tick=True):
        world("gold")
        *_, ask_date = await walk(wx_plain, U, "预约洁牙", "本人", "北京", "北京洁牙门诊")
    assert "1. 11月27日" in ask_date  # the 2nd working day after Wednesday 25 November
    assert "没有可约的日期" not in ask_date


async def test_unbinding_erases_family_added_in_chat_unless_a_booking_uses_them(wx_plain, world,
                                                                               services):
    """Family members the policyholder added in chat are what the bot stored: erased on
    unbind, except one a booking refers to (the booking and its quota use are kept)."""
    from models import FamilyMember

    with time_machine.travel(WED, tick=True):
        customer, (imported,) = world("gold", family=[("child", "李小明", date(2010, 3, 3), "M")])
        with Session(services.engine) as s:
            s.add(FamilyMember(customer_id=customer.id, relation="spouse", name="王芳",
                               id_number="110105198203036543", added_in_chat=True))
            s.commit()
        from bot.domain.identity import make_id_number
        child_id = make_id_number("310101", date(2012, 6, 1), 5, "F")  # added and booked in chat
        await walk(wx_plain, U, "预约洁牙", "添加家人", "子女", "李小红", child_id,
                   "北京", "北京洁牙门诊", "1", "确认")
        await wx_plain.say(U, "解除绑定")
        assert "已解除绑定" in await wx_plain.say(U, "确认解除")
    with Session(services.engine) as s:
        left = {m.name for m in s.exec(sm_select(FamilyMember)).all()}
    # The imported member and the one a booking uses stay; the unused chat-added one is gone.
    assert left == {"李小明", "李小红"}
    assert len(bookings(services)) == 1
