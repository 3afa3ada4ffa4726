"""What the customer typed, read for what it says (issue 14 §1): a choice step takes a tap
or number, then an exact label or keyword, then the step's own parser (a typed date is a
date), and a near match only after asking back. Through /wechat with a fixed clock:
Wednesday 2 December 2026, 10:00 Asia/Shanghai. docs/programme.md: the earliest bookable date is
the 2nd working day after the request, so 12月4日…12月8日 are the five dates offered at an
institution open every day; the window is 90 days (to 2 March 2027)."""
from __future__ import annotations

from datetime import date

import pytest
import time_machine
from sqlmodel import Session

from models import Booking
from tests.support.booking import INSTITUTIONS, U, bookings, walk, world  # noqa: F401 (fixture)

NOW = "2026-12-02 10:00:00+08:00"
TO_DATES = ("预约洁牙", "本人", "上海", "上海洁牙门诊")  # S1 is open every day


async def at_date_step(wx) -> str:
    *_, ask = await walk(wx, U, *TO_DATES)
    assert "1. 12月4日" in ask and "5. 12月8日" in ask, ask
    return ask


# --- The date step: a typed date is the date typed ------------------------------------------------


@pytest.mark.parametrize("typed,day", [
    ("12月15号", date(2026, 12, 15)),
    ("12月16号", date(2026, 12, 16)),
    ("12月24号", date(2026, 12, 24)),
    ("12月5日", date(2026, 12, 5)),  # inside the offered list, typed rather than numbered
    ("12月6号", date(2026, 12, 6)),
    ("2026-12-07", date(2026, 12, 7)),
    ("8号", date(2026, 12, 8)),
    ("5号", date(2026, 12, 5)),
    ("10号", date(2026, 12, 10)),
    ("下周三", date(2026, 12, 9)),
    ("2026-12-20", date(2026, 12, 20)),
    ("元旦", date(2027, 1, 1)),
])
async def test_a_typed_date_is_booked_as_typed(wx_plain, world, services, typed, day):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await at_date_step(wx_plain)
        summary = await wx_plain.say(U, typed)
        assert f"{day.year}年{day.month}月{day.day}日" in summary, summary
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.preferred_date == day and b.quota_year == day.year


@pytest.mark.parametrize("typed,why", [
    ("12月3号", "2026年12月4日"),  # inside the lead time: the earliest date is said
    ("2027-03-15", "90"),  # beyond the 90-day window
    ("12月1日", "过去"),  # yesterday
])
async def test_a_typed_date_the_rules_refuse_gets_the_reason(wx_plain, world, services, typed,
                                                             why):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await at_date_step(wx_plain)
        reply = await wx_plain.say(U, typed)
        assert why in reply and "请核对预约信息" not in reply, reply
        confirm = await wx_plain.say(U, "确认")  # nothing to confirm: still at the date step
        assert "请核对预约信息" not in confirm
    assert bookings(services) == []


async def test_a_typed_date_in_a_spent_year_is_refused_not_moved(wx_plain, world, services):
    """With 2026's use spent the list starts 1月1日; 12月18日 is refused for that reason and
    never becomes 2027年1月1日 (which would spend 2027's use)."""
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES, "1", "确认")  # 4 December: 2026's use
        *_, ask = await walk(wx_plain, U, *TO_DATES)
        assert "1. 1月1日" in ask
        assert "2026年的洁牙" in ask.split("1. 1月1日")[0]  # said before the list
        reply = await wx_plain.say(U, "12月18日")
        assert "2026" in reply and "用完" in reply and "请核对预约信息" not in reply, reply
        await wx_plain.say(U, "确认")
    assert [b.preferred_date for b in bookings(services)] == [date(2026, 12, 4)]


async def test_a_summary_in_another_year_says_which_years_use_it_spends(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await at_date_step(wx_plain)
        summary = await wx_plain.say(U, "2027-01-06")
        this_year = await walk(wx_plain, U, "返回", "12月7日")
    assert "将使用2027年的洁牙" in summary
    assert "将使用" not in this_year[-1] and "2026年12月7日" in this_year[-1]


# --- Every choice step kind: tap, number, exact text, near text (asked back), garbage -------------

SPOUSE = ("spouse", "王芳", date(1982, 3, 4), "F")

# kind: (tier, family, messages to reach the step, option code, a keyword/exact text,
#        near text, the label the bot must ask back about, something in the next prompt)
KINDS = {
    "beneficiary": ("gold", [SPOUSE], ["预约洁牙"], "new", "添加家人", "添加家里人",
                    "添加家人（配偶、父母、子女）", "请选择这位家人和您的关系"),
    "relation": ("gold", [], ["预约洁牙", "添加家人"], "child", "子女", "孩子们", "子女",
                 "请输入家人的姓名"),
    "city": ("gold", [], ["预约洁牙", "本人"], "北京", "北京", "北京城区", "北京",
             "请选择北京的服务机构"),
    "institution": ("gold", [], ["预约洁牙", "本人", "北京"], "D1", "北京洁牙门诊", "北京洁牙",
                    "北京洁牙门诊", "请选择服务日期"),
    "package": ("diamond", [], ["预约体检", "本人"], "checkup_diamond_cardio",
                "钻石特色套餐(心脑血管套餐)", "心脑血管套餐", "钻石特色套餐(心脑血管套餐)",
                "请选择就近的城市"),
    "exam": ("diamond", [], ["特种检查", "本人"], "CT检查", "CT检查", "CT检", "CT检查", None),
}


def _number_of(ask: str, label: str) -> str:
    """The number the bot put before `label` in its list."""
    import re as _re

    found = _re.search(r">(\d+)\. " + _re.escape(label) + "<", ask)
    assert found, (label, ask)
    return found.group(1)


def _next_marker(kind: str, reply: str) -> None:
    marker = KINDS[kind][7]
    if marker is None:  # the exam step leads to the symptoms question
        assert "症状" in reply, reply
    else:
        assert marker in reply, reply


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ["tap", "number", "exact", "near_yes", "near_no", "garbage"])
async def test_each_choice_step_kind(wx_plain, world, kind, how):
    tier, family, reach, code, exact, near, asked, _ = KINDS[kind]
    with time_machine.travel(NOW, tick=False):
        world(tier, family=family)
        *_, ask = await walk(wx_plain, U, *reach)
        label = {"new": "添加家人（配偶、父母、子女）", "child": "子女", "D1": "北京洁牙门诊",
                 "checkup_diamond_cardio": "钻石特色套餐(心脑血管套餐)"}.get(code, code)
        if how == "tap":
            reply = (await wx_plain.send(U, "text", Content="随便", bizmsgmenuid=code))["Content"]
            _next_marker(kind, reply)
        elif how == "number":
            _next_marker(kind, await wx_plain.say(U, _number_of(ask, label)))
        elif how == "exact":
            _next_marker(kind, await wx_plain.say(U, exact))
        elif how == "near_yes":
            asked_back = await wx_plain.say(U, near)
            assert f"您是指『{asked}』吗" in asked_back, asked_back
            assert "1. " not in asked_back  # a short question, not the whole list
            _next_marker(kind, await wx_plain.say(U, "是"))
        elif how == "near_no":
            await wx_plain.say(U, near)
            again = await wx_plain.say(U, "否")
            assert f"{_number_of(ask, label)}. {label}" in again  # the options again
            assert "您是指" not in again
            # and the step still takes an answer
            _next_marker(kind, await wx_plain.say(U, exact))
        else:
            reply = await wx_plain.say(U, "火星文abc")
            assert "「火星文abc」没能对上您的选择" in reply and f"{label}</a>" in reply, reply
            assert "您是指" not in reply


@pytest.mark.parametrize("how", ["tap", "number", "exact", "garbage"])
async def test_the_date_step_by_tap_number_label_and_garbage(wx_plain, world, services, how):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await at_date_step(wx_plain)
        if how == "tap":
            reply = (await wx_plain.send(U, "text", Content="x", bizmsgmenuid="2026-12-06"))["Content"]
        elif how == "number":
            reply = await wx_plain.say(U, "3")
        elif how == "exact":
            reply = await wx_plain.say(U, "12月6日 周日")
        else:
            reply = await wx_plain.say(U, "随便哪天")
            assert "没能看懂「随便哪天」这个日期" in reply and "1. 12月4日" in reply
            assert "请核对预约信息" not in reply
            return
        assert "2026年12月6日" in reply and "请核对预约信息" in reply
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.preferred_date == date(2026, 12, 6)


# --- A tap is what the bot offered (issue 15 #1) -----------------------------------------------------


async def test_a_tap_on_a_line_never_offered_is_read_as_typed_text(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        _, (theirs,) = world("gold", openid="oOtherCustomer00000000001", family=[SPOUSE])
        world("gold")
        await wx_plain.say(U, "预约洁牙")
        # Another customer's family member as the tapped id, 本人 as the text: 本人 it is.
        reply = (await wx_plain.send(U, "text", Content="本人",
                                     bizmsgmenuid=f"fm:{theirs.id}"))["Content"]
        assert "请选择就近的城市" in reply
        # An id offered at an earlier step is not an option now: the text (上海) decides.
        reply = (await wx_plain.send(U, "text", Content="上海", bizmsgmenuid="self"))["Content"]
        assert "请选择上海的服务机构" in reply
        await wx_plain.say(U, "上海洁牙门诊")
        # A date never offered as a tap id, with an offered date's number as text.
        summary = (await wx_plain.send(U, "text", Content="1",
                                       bizmsgmenuid="2026-12-25"))["Content"]
        assert "2026年12月4日" in summary and "12月25日" not in summary
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    assert b.family_member_id is None and b.preferred_date == date(2026, 12, 4)


async def test_a_tapped_staff_command_that_was_never_offered_is_not_run(wx_plain, world,
                                                                        services):
    from datetime import datetime, timezone

    from models import Staff

    staff = "oTypedStaff00000000000001"
    with Session(services.engine) as s:
        s.add(Staff(openid=staff, name="王专员", role="specialist",
                    created_at=datetime.now(timezone.utc)))
        s.commit()
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES, "1", "确认")
        (b,) = bookings(services)
        forged = f"#取消 {b.number} 点这里查看附件"
        reply = (await wx_plain.send(staff, "text", Content=forged,
                                     bizmsgmenuid="x"))["Content"]
        assert "没有执行" in reply
        assert bookings(services)[0].status == "submitted"
        typed = await wx_plain.say(staff, f"#取消 {b.number} 机构停诊")  # typed: it runs
    assert bookings(services)[0].status == "cancelled" and b.number in typed


async def test_a_command_riding_on_an_offered_tap_id_is_the_option_not_the_command(
        wx_plain, world, services):
    """A forged link may reuse an id the bot did offer (self): the tap is that option, and
    the command in its text is not run, even for a staff member who is also a customer."""
    from datetime import datetime, timezone

    from models import Staff

    staff = "oTypedStaff00000000000003"
    with Session(services.engine) as s:
        s.add(Staff(openid=staff, name="王专员", role="specialist",
                    created_at=datetime.now(timezone.utc)))
        s.commit()
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, *TO_DATES, "1", "确认")
        (b,) = bookings(services)
        world("gold", openid=staff, family=[SPOUSE])
        await wx_plain.say(staff, "预约洁牙")
        reply = (await wx_plain.send(staff, "text", Content=f"#取消 {b.number} 附件",
                                     bizmsgmenuid="self"))["Content"]
        assert "请选择就近的城市" in reply, reply
        # Options offered two replies ago are not "offered in the last reply": at the name
        # step after the relation step, a tap reusing 子女's id is a tap never offered.
        await walk(wx_plain, staff, "退出", "预约洁牙", "添加家人", "子女")
        stale = (await wx_plain.send(staff, "text", Content=f"#取消 {b.number} 附件",
                                     bizmsgmenuid="child"))["Content"]
        assert "没有执行" in stale, stale
    assert [x.status for x in bookings(services)] == ["submitted"]


# --- A package, person or institution the rules refuse is explained, not swapped ----------------


async def test_the_other_sexs_package_typed_is_explained_not_swapped(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("diamond", sex="F", family=[("spouse", "王强", date(1979, 1, 2), "M")])
        *_, ask = await walk(wx_plain, U, "预约体检", "2")  # for her husband
        assert "钻石健康体检套餐(男性)" in ask and "钻石健康体检套餐(女性)" not in ask
        reply = await wx_plain.say(U, "钻石健康体检套餐(女性)")
        assert "钻石健康体检套餐(女性)只适用于女性" in reply and "丈夫" in reply, reply
        assert "请选择就近的城市" not in reply  # still at the package step
        assert "钻石健康体检套餐(男性)" in reply.split("只适用于女性")[1]  # what fits is named
        other_tier = await wx_plain.say(U, "铂金健康体检套餐(男性)")
        assert "不在您层级" in other_tier and "请选择就近的城市" not in other_tier
        await walk(wx_plain, U, "钻石健康体检套餐(男性)", "北京", "北京三甲医院", "1", "确认")
    (b,) = bookings(services)
    assert b.package == "checkup_diamond_male"


async def test_an_institution_the_rules_refuse_is_explained(wx_plain, world, services):
    """DOMAIN: 铂金 checkups at commercial centres only; a 三甲 hospital typed is refused
    with the reason, not replaced by the commercial centre."""
    with time_machine.travel(NOW, tick=False):
        world("platinum")
        *_, ask = await walk(wx_plain, U, "预约体检", "本人", "北京")
        assert "北京三甲医院" not in ask
        reply = await wx_plain.say(U, "北京三甲医院")
        assert "商业体检机构" in reply and "请选择服务日期" not in reply, reply
        no_dental = await walk(wx_plain, U, "北京洁牙门诊")  # gives no checkups
        assert "不提供健康体检" in no_dental[0]
    assert bookings(services) == []


async def test_an_institution_in_another_city_the_rules_allow_is_taken(wx_plain, world, services):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "北京", "上海洁牙门诊", "1", "确认")
    (b,) = bookings(services)
    with Session(services.engine) as s:
        from models import Institution
        assert s.get(Institution, b.institution_id).code == "S1"


# --- A new family member: nothing readable at rest; the name on file; relation words -------------


def _id(birth: date, sex: str, seq: int = 7) -> str:
    from bot.domain.identity import make_id_number

    return make_id_number("310101", birth, seq, sex)


def raw_state(services, settings) -> str:
    """Everything the conversation stores hold at rest: the fsm_state rows, and with Redis
    every value under this run's prefix."""
    from sqlalchemy import text

    from tests.conftest import REDIS_URL

    with services.engine.connect() as c:
        rows = [r[0] for r in c.execute(text("SELECT value FROM fsm_state"))]
    if REDIS_URL:
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(settings.redis_prefix + "*"):
            kind = r.type(key)
            if kind == b"hash":
                rows += [v.decode(errors="replace") for v in r.hvals(key)]
            elif kind == b"string":
                rows.append((r.get(key) or b"").decode(errors="replace"))
        assert any(settings.redis_prefix.encode() in k for k in r.scan_iter(
            settings.redis_prefix + "*")), "the state did not reach Redis"
    return "\n".join(rows)


async def test_a_new_members_name_and_id_number_are_not_readable_in_the_state(
        wx_plain, world, services, settings):
    child = _id(date(2012, 6, 1), "M")
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "添加家人", "子女", "李小明")
        at_rest = raw_state(services, settings)
        assert at_rest and "李小明" not in at_rest and "小明" not in at_rest
        ask_city = await wx_plain.say(U, child)
        assert "请选择就近的城市" in ask_city
        at_rest = raw_state(services, settings)
        assert child not in at_rest and child[:14] not in at_rest and "小明" not in at_rest
        summary = await walk(wx_plain, U, "上海", "上海洁牙门诊", "1")
        assert "李**" in summary[-1]
        await wx_plain.say(U, "确认")
    (b,) = bookings(services)
    from models import FamilyMember

    with Session(services.engine) as s:
        member = s.get(FamilyMember, b.family_member_id)
    assert (member.name, member.id_number, member.relation) == ("李小明", child, "child")


async def test_a_known_persons_id_number_needs_their_name(wx_plain, world, services):
    """Issue 15 #9: an ID number on file (a policyholder's, or anyone's family member's) is
    registered only under the name on file."""
    with time_machine.travel(NOW, tick=False):
        other, (their_child,) = world("gold", openid="oOtherCustomer00000000002",
                                      family=[("child", "赵小红", date(2011, 2, 3), "F")])
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "添加家人", "配偶", "张冒名")
        refused = await wx_plain.say(U, other.id_number)
        assert "另一个姓名" in refused and "请输入家人的姓名" in refused, refused
        assert other.name not in refused  # nothing of the person on file is shown
        await walk(wx_plain, U, "返回", "返回", "子女", "李冒名")
        assert "另一个姓名" in await wx_plain.say(U, their_child.id_number)
        await wx_plain.say(U, "赵小红")
        assert "请选择就近的城市" in await wx_plain.say(U, their_child.id_number)
    assert bookings(services) == []


@pytest.mark.parametrize("word,relation,birth,sex", [
    ("爸", "parent", date(1950, 1, 1), "M"), ("妈", "parent", date(1952, 1, 1), "F"),
    ("父亲", "parent", date(1950, 1, 1), "M"), ("母亲", "parent", date(1952, 1, 1), "F"),
    ("老公", "spouse", date(1979, 1, 1), "M"), ("老婆", "spouse", date(1982, 1, 1), "F"),
    ("丈夫", "spouse", date(1979, 1, 1), "M"), ("妻子", "spouse", date(1982, 1, 1), "F"),
    ("爱人", "spouse", date(1982, 1, 1), "F"), ("儿子", "child", date(2010, 1, 1), "M"),
    ("女儿", "child", date(2012, 1, 1), "F"), ("孩子", "child", date(2012, 1, 1), "F"),
])
async def test_everyday_relation_words_at_the_relation_step(wx_plain, world, services, word,
                                                            relation, birth, sex):
    with time_machine.travel(NOW, tick=False):
        world("gold")  # born 17 May 1980
        await walk(wx_plain, U, "预约洁牙", "添加家人")
        assert "请输入家人的姓名" in await wx_plain.say(U, word)
        await walk(wx_plain, U, "李家人", _id(birth, sex), "上海", "上海洁牙门诊", "1", "确认")
    (b,) = bookings(services)
    from models import FamilyMember

    with Session(services.engine) as s:
        assert s.get(FamilyMember, b.family_member_id).relation == relation


async def test_a_relative_who_is_not_immediate_family_is_explained(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "添加家人")
        reply = await wx_plain.say(U, "我哥哥")
        assert "配偶、父母、子女" in reply and "哥哥" in reply
        assert "请输入家人的姓名" not in reply
        assert "请输入家人的姓名" in await wx_plain.say(U, "父母")


async def test_a_relation_word_at_the_beneficiary_step_names_the_member(wx_plain, world,
                                                                        services):
    with time_machine.travel(NOW, tick=False):
        _, (husband,) = world("gold", sex="F", family=[("spouse", "王强", date(1979, 1, 2), "M")])
        assert "请选择就近的城市" in (await walk(wx_plain, U, "预约洁牙", "老公"))[-1]
        await walk(wx_plain, U, "上海", "上海洁牙门诊", "1", "确认")
        # no mother on file: 我妈 adds one, the relation already known
        assert "请输入家人的姓名" in (await walk(wx_plain, U, "预约体检", "退出", "预约洁牙",
                                               "我妈"))[-1]
        asked = (await walk(wx_plain, U, "王某", _id(date(1950, 1, 1), "M")))[-1]
        assert "男性" in asked and "母亲" in asked  # 我妈 said a woman
        await wx_plain.say(U, "退出")
    (b,) = bookings(services)
    assert b.family_member_id == husband.id


async def test_a_family_members_full_name_at_the_beneficiary_step_names_them(wx_plain, world,
                                                                             services):
    with time_machine.travel(NOW, tick=False):
        _, (mum, dad) = world("gold", family=[("parent", "赵桂兰", date(1955, 1, 1), "F"),
                                              ("parent", "李建国", date(1953, 1, 1), "M")])
        ask = (await walk(wx_plain, U, "预约洁牙"))[-1]
        assert "赵桂兰" not in ask  # the list shows names masked
        assert "请选择就近的城市" in await wx_plain.say(U, "李建国")
        await walk(wx_plain, U, "上海", "上海洁牙门诊", "1", "确认")
    (b,) = bookings(services)
    assert b.family_member_id == dad.id


@pytest.mark.parametrize("relation,birth", [("parent", date(1990, 1, 1)),
                                            ("child", date(1970, 1, 1)),
                                            ("parent", date(1980, 5, 17)),  # same day: odd too
                                            ("child", date(1980, 5, 17))])
async def test_a_parent_younger_or_a_child_older_is_questioned(wx_plain, world, services,
                                                               settings, relation, birth):
    word = {"parent": "父母", "child": "子女"}[relation]
    odd = _id(birth, "F")
    with time_machine.travel(NOW, tick=False):
        world("gold")  # born 17 May 1980
        await walk(wx_plain, U, "预约洁牙", "添加家人", word, "李家人")
        asked = await wx_plain.say(U, odd)
        assert ("比您年轻" if relation == "parent" else "比您年长") in asked, asked
        assert "请选择就近的城市" not in asked
        assert odd not in raw_state(services, settings)  # the questioned number is sealed too
        again = await wx_plain.say(U, "否")
        assert "身份证" in again and "请选择就近的城市" not in again
        await wx_plain.say(U, odd)
        assert "请选择就近的城市" in await wx_plain.say(U, "是")  # confirmed as it is
        await walk(wx_plain, U, "上海", "上海洁牙门诊", "1", "确认")
    (b,) = bookings(services)
    assert b.family_member_id is not None


@pytest.mark.parametrize("relation,birth", [("parent", date(1980, 5, 16)),
                                            ("child", date(1980, 5, 18))])
async def test_a_parent_older_or_a_child_younger_by_a_day_is_not_questioned(wx_plain, world,
                                                                            relation, birth):
    word = {"parent": "父母", "child": "子女"}[relation]
    with time_machine.travel(NOW, tick=False):
        world("gold")  # born 17 May 1980
        *_, reply = await walk(wx_plain, U, "预约洁牙", "添加家人", word, "李家人",
                               _id(birth, "M"))
    assert "请选择就近的城市" in reply


# --- Used-up services, 我的预约, consent, 特种检查 ----------------------------------------------------


async def test_a_used_up_service_is_never_offered_as_bookable_without_saying_so(wx_plain, world):
    with time_machine.travel("2026-06-10 10:00:00+08:00", tick=False):
        world("gold")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "1", "确认")
        refused = await wx_plain.say(U, "预约体检")  # gold has no checkup: says what it can book
        benefits = await wx_plain.say(U, "我的权益")
    assert "您可以预约" in refused and "洁牙（今年次数已用完）" in refused
    assert "剩余0次" not in refused
    assert "剩余 0/1" in benefits and "今年已用完" in benefits
    assert "「预约洁牙」即可预约" not in benefits and "次数已用完" in benefits


async def test_my_bookings_lists_upcoming_soonest_first_and_shows_attendance(wx_plain, world,
                                                                             services):
    from sqlalchemy import update

    with time_machine.travel(NOW, tick=False):
        world("platinum")
        await walk(wx_plain, U, "预约洁牙", "本人", "上海", "上海洁牙门诊", "12月20日", "确认")
        await walk(wx_plain, U, "预约体检", "本人", "北京", "北京商业体检中心", "12月10日", "确认")
    later, sooner = bookings(services)
    with Session(services.engine) as s:
        s.execute(update(Booking).where(Booking.id == sooner.id).values(
            status="confirmed", confirmed_date=date(2026, 12, 10), confirmed_time="09:30"))
        s.commit()
    with time_machine.travel("2026-12-09 18:00:00+08:00", tick=False):
        before = await wx_plain.say(U, "我的预约")
        assert before.index(sooner.number) < before.index(later.number)  # 10th before 20th
        assert "确认按时到场" not in before
        await wx_plain.say(U, "确认")  # the answer to the day-before reminder
        after = await wx_plain.say(U, "我的预约")
    first, second = after.split(f"· {later.number}")
    assert sooner.number in first and "12月9日 18:00确认按时到场" in first  # Shanghai time
    assert "确认按时到场" not in second


async def test_the_consent_step_re_asks_briefly(wx_plain, services):
    from bot.infra.texts import render

    notice = await wx_plain.say(U, "绑定")
    assert "隐私政策" in notice
    again = await wx_plain.say(U, "嗯嗯我看看")
    assert "同意" in again and "隐私政策" not in again and len(again) < len(notice) / 2
    # A question answered by the FAQ is followed by the short re-ask, not the notice again.
    asked = await wx_plain.say(U, "客服电话多少")
    assert "95359" in asked and "隐私政策" not in asked
    assert "请回复「同意」继续绑定" in asked
    assert "姓名" in await wx_plain.say(U, "同意")


async def test_special_exam_asks_the_symptoms_and_staff_see_them_escaped(wx_plain, world,
                                                                         services):
    from datetime import datetime, timezone

    from models import Staff

    staff = "oTypedStaff00000000000002"
    with Session(services.engine) as s:
        s.add(Staff(openid=staff, name="王专员", role="specialist",
                    created_at=datetime.now(timezone.utc)))
        s.commit()
    note = '胃痛两个月<a href="http://x.test">医生建议</a>做胃肠镜'
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        ask = (await walk(wx_plain, U, "特种检查", "本人", "胃肠镜检查"))[-1]
        assert "症状" in ask and "医生" in ask
        summary = (await walk(wx_plain, U, note, "北京", "北京三甲医院", "1"))[-1]
        assert "胃痛两个月" in summary
        await wx_plain.say(U, "确认")
        queue = await wx_plain.say(staff, "#预约")
    (b,) = bookings(services)
    assert b.visit_note == note and b.exam == "胃肠镜检查"
    assert "胃痛两个月&lt;a href" in queue and "<a href" not in queue


async def test_an_emergency_at_the_symptoms_step_gets_the_advice_and_goes_on(wx_plain, world):
    with time_machine.travel(NOW, tick=False):
        world("diamond")
        await walk(wx_plain, U, "特种检查", "本人", "CT检查")
        reply = await wx_plain.say(U, "胸口疼得厉害")
    assert "120" in reply and "请选择就近的城市" in reply


@pytest.mark.parametrize("typed", ["核磁共振", "胃肠镜"])
async def test_an_exams_own_name_at_the_exam_step_is_the_answer(wx_plain, world, services, typed):
    """核磁共振 and 胃肠镜 also start the service from outside; at the exam step they answer it
    (the flow goes on, the beneficiary chosen is kept)."""
    with time_machine.travel(NOW, tick=False):
        world("diamond", family=[SPOUSE])
        await walk(wx_plain, U, "特种检查", "2")
        assert "症状" in await wx_plain.say(U, typed)
        await walk(wx_plain, U, "胃痛", "北京", "北京三甲医院", "1", "确认")
    (b,) = bookings(services)
    assert b.exam.startswith(typed) and b.family_member_id is not None


@pytest.mark.parametrize("word,sex,questioned", [("老公", "F", True), ("老公", "M", False),
                                                 ("妈", "M", True), ("妈", "F", False),
                                                 ("配偶", "F", False)])
async def test_an_id_number_of_the_other_sex_than_the_word_said_is_questioned(
        wx_plain, world, services, word, sex, questioned):
    birth = {"老公": date(1979, 1, 1), "妈": date(1950, 1, 1), "配偶": date(1982, 1, 1)}[word]
    with time_machine.travel(NOW, tick=False):
        world("gold")
        *_, reply = await walk(wx_plain, U, "预约洁牙", "添加家人", word, "李家人",
                               _id(birth, sex))
        if questioned:
            assert ("男性" if sex == "M" else "女性") in reply and "请选择就近的城市" not in reply
            reply = await wx_plain.say(U, "是")
        assert "请选择就近的城市" in reply, reply
