"""我的等级 and 我的权益 through /wechat, for bound customers of every tier."""
from __future__ import annotations

from datetime import date

import pytest
import time_machine
from sqlmodel import Session

from bot.infra.privacy import mask_policy_no
from bot.infra.texts import render
from bot.domain.accounts import bind
from tests.support import factories
from tests.support.booking import U as BOOKER, walk, world  # noqa: F401

U = "oTierUser0000000000000001"


@pytest.fixture
def bound(services):
    def make(tier="gold", **policies):
        with Session(services.engine, expire_on_commit=False) as s:
            c = factories.customer(s, name="李四", tier=tier)
            for no, kw in policies.items():
                factories.policy(s, c, no, **kw)
            bind(s, U, c, services.now())
            s.commit()
            return c
    return make


async def test_unbound_user_is_led_into_binding(wx_plain):
    reply = await wx_plain.say(U, "我的等级")
    assert reply.startswith(render("binding/needed"))
    assert reply.endswith("回复「同意」继续绑定，回复「退出」放弃。")  # the privacy notice first
    assert render("binding/ask_name") in await wx_plain.say(U, "同意")
    assert await wx_plain.say(U, "李四") == render("binding/ask_id_number")


async def test_my_tier_explains_each_policy(wx, bound):
    with time_machine.travel("2026-11-25 10:00:00+08:00", tick=True):
        bound("gold",
              P1000000001={"premium": "80000", "effective": date(2020, 3, 1)},
              P1000000002={"single": "250000", "mode": "single", "years": 1,
                           "effective": date(2025, 6, 1)},
              P1000000003={"premium": "5000", "pledged": True},
              P1000000004={"premium": "9000", "status": "lapsed"},
              P1000000005={"premium": "7000", "effective": date(2026, 11, 20),
                           "cooling_off_end": date(2026, 12, 5)})
        reply = await wx.say(U, "我的 等级")
    assert reply.startswith("李先生，您目前是【黄金客户】")
    assert "105,000.00 元" in reply  # 80,000 + 10% of 250,000
    product = "（安盛终身寿险）"  # the factory's product name, shown beside each policy
    assert f"{mask_policy_no('P1000000001')}{product}：计入 80,000.00 元" in reply
    assert f"{mask_policy_no('P1000000002')}{product}：计入 25,000.00 元（计至2029年5月31日）" in reply
    assert f"{mask_policy_no('P1000000003')}{product}：保单质押中" in reply
    assert f"{mask_policy_no('P1000000004')}{product}：保单已失效" in reply
    assert "犹豫期内，2026年12月6日起计入" in reply  # cooling-off ends 5 Dec: counts from the 6th
    assert "趸交保费 250,000.00 元 × 10% = 25,000.00 元" in reply  # docs/programme.md: 10% of single premium
    assert "层级标准：铂金 ≥ 30万；黄金 ≥ 10万；明珠 ≥ 3万" in reply
    assert "距铂金还差 195,000.00 元" in reply
    assert "P1000000001" not in reply


async def test_slow_down_protects_the_held_tier_until_the_review(wx_plain, bound):
    with time_machine.travel("2026-03-10 10:00:00+08:00", tick=True):
        bound("platinum", P2000000001={"premium": "120000", "effective": date(2020, 1, 5)})
        reply = await wx_plain.say(U, "等级")
    assert "【铂金客户】" in reply
    assert "保留到2026年6月30日复核" in reply and "对应黄金" in reply


async def test_top_tier(wx_plain, bound):
    bound("diamond", P3000000001={"premium": "1000000", "effective": date(2024, 1, 5)})
    reply = await wx_plain.click(U, "MY_TIER")
    assert "【钻石客户】" in reply and "最高层级" in reply


async def test_benefits_of_a_platinum_customer(wx, bound):
    with time_machine.travel("2026-06-10 10:00:00+08:00", tick=True):  # the window stays in 2026
        bound("platinum", P4000000001={"premium": "300000", "effective": date(2024, 1, 5)})
        reply = await wx.say(U, "我的权益")
    assert "【铂金客户】" in reply and "绿色通道" in reply
    assert "洁牙（高端洁牙套餐）：今年剩余 1/1 次，可由配偶、父母、子女使用" in reply
    assert "健康顾问：不限次数" in reply
    assert "特种检查" in reply.split("升级到钻石还可享受")[1]


async def test_benefits_of_a_mass_customer(wx_plain, bound):
    bound("mass", P5000000001={"premium": "1000", "effective": date(2024, 1, 5)})
    reply = await wx_plain.say(U, "权益")
    assert "【大众客户】" in reply and "标准流程" in reply
    assert "客户服务节" in reply and "洁牙" not in reply.split("升级到明珠")[0]


async def test_demo_customers_hold_one_tier_each(wx_plain, settings):
    from bot.demo import load_demo

    assert "demo data loaded" in load_demo(settings)
    for tier, name in [("diamond", "钻石"), ("platinum", "铂金"), ("gold", "黄金"),
                       ("pearl", "明珠"), ("mass", "大众")]:
        reply = await wx_plain.say(f"o_demo_{tier}", "我的等级")
        assert f"【{name}客户】" in reply, reply
    assert "already has customers" in load_demo(settings, if_empty=True)


# Every key of menus.PERSONAL, typed or clicked, leads an unbound user into binding (the
# router's one guard); 解除绑定, which is not personal, answers for itself.
@pytest.mark.parametrize("said", ["我的等级", "我的权益", "预约洁牙", "预约体检", "专家门诊",
                                  "特种检查", "健康顾问", "理赔探视", "我的预约", "取消预约",
                                  "确认"])
async def test_every_personal_key_leads_an_unbound_user_into_binding(wx_plain, said):
    reply = await wx_plain.say(U, said)
    assert reply.startswith(render("binding/needed")), reply


async def test_unbinding_an_unbound_user_says_there_is_nothing_to_unbind(wx_plain):
    assert await wx_plain.say(U, "解除绑定") == render("binding/not_bound")


# --- 我的权益 and next year's quota (the booking's own count and check) ----------------------

SUNDAY_6_DEC = "2026-12-06 10:00:00+08:00"  # the 90-day window reaches into 2027


async def _book_checkup(wx, who: str, package: str, day: str) -> str:
    *_, done = await walk(wx, BOOKER, "预约体检", who, package, "北京", "北京商业体检中心", day,
                          "确认")
    return done


async def test_benefits_say_next_year_is_spent_when_the_booking_says_so(wx_plain, world):
    """DOMAIN: a use counts in the service date's year, one a year shared with the family.
    Dad's checkup on 3 January 2027 and one's own on 18 December 2026 spend both years: 我的权益
    shows 2027's use and does not promise a 2027 date that 预约体检 refuses."""
    with time_machine.travel(SUNDAY_6_DEC, tick=True):
        world("platinum", family=[("parent", "李大山", date(1950, 2, 3), "M")])
        before = await wx_plain.say(BOOKER, "我的权益")
        assert "健康体检" in before and "今年剩余 1/1 次；2027年已用 0 次，还可用 1 次" in before
        assert "2027年的才可以预约" not in before
        assert "预约" in await _book_checkup(wx_plain, "李大山", "铂金健康体检套餐(男性)",
                                            "2027-01-03")
        dad_only = await wx_plain.say(BOOKER, "我的权益")
        assert "健康体检（铂金健康体检套餐(男性) / 铂金健康体检套餐(女性)）：今年剩余 1/1 次；" \
               "2027年已用 1 次，已用完" in dad_only
        assert "2027年的才可以预约" not in dad_only and "都已用完" not in dad_only
        assert "预约" in await _book_checkup(wx_plain, "本人", "铂金健康体检套餐(男性)",
                                            "2026-12-18")
        benefits = await wx_plain.say(BOOKER, "我的权益")
        refused = await wx_plain.say(BOOKER, "预约体检")
    assert "2026年、2027年" in refused and "用完" in refused  # the booking's word
    assert "今年剩余 0/1 次（今年已用完）；2027年已用 1 次，已用完" in benefits
    assert "2026年、2027年的「预约体检」次数都已用完。" in benefits
    assert "2027年的才可以预约" not in benefits
    assert "「预约体检」" not in benefits.split("次数都已用完")[-1]  # not offered to book


async def test_benefits_say_next_year_is_bookable_when_only_this_year_is_spent(wx_plain, world):
    with time_machine.travel(SUNDAY_6_DEC, tick=True):
        world("platinum")
        await _book_checkup(wx_plain, "本人", "铂金健康体检套餐(男性)", "2026-12-18")
        benefits = await wx_plain.say(BOOKER, "我的权益")
    assert "今年剩余 0/1 次（今年已用完）；2027年已用 0 次，还可用 1 次" in benefits
    assert "2026年的「预约体检」次数已用完，服务日期在2027年的才可以预约。" in benefits


async def test_benefits_in_summer_show_only_this_year(wx_plain, world):
    """In June the 90-day window stays in 2026: nothing of 2027 is shown or promised."""
    with time_machine.travel("2026-06-10 10:00:00+08:00", tick=True):
        world("platinum")
        await _book_checkup(wx_plain, "本人", "铂金健康体检套餐(男性)", "2026-06-20")
        benefits = await wx_plain.say(BOOKER, "我的权益")
    assert "今年剩余 0/1 次（今年已用完），" in benefits and "2027" not in benefits
    assert "2026年的「预约体检」次数已用完。" in benefits
