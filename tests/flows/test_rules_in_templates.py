"""What the customer reads follows rules.toml (issue 18 §4): each test changes one rule in a
copy of the repository's rules.toml and asks through the signed /wechat door; the same
question with the file as shipped gives what docs/programme.md states (every figure there is
a default of rules.toml). The templates write none of these facts themselves."""
from __future__ import annotations

from tests.support.booking import INSTITUTIONS, U, world  # noqa: F401  (fixture)
from tests.support.rules import change, changed, settings  # noqa: F401  (fixtures)


async def test_as_shipped_the_customer_reads_what_the_programme_states(wx_plain, world):
    world("platinum")
    assert "每年7月和8月" in await wx_plain.say(U, "客户服务节是什么时候")  # July and August
    hotline = await wx_plain.say(U, "客服电话是多少")
    assert "95359。" in hotline and "95359-8-1" in hotline
    assert "中午12点前取消" in await wx_plain.say(U, "取消预约有什么规定")  # 12:00 cut-off
    assert "仅限钻石客户" in await wx_plain.say(U, "特种检查谁可以用")  # 钻石 only
    expert = await wx_plain.say(U, "专家门诊谁能约")
    assert "适用于钻石和铂金客户" in expert and "钻石客户可以指定专家" in expert
    assert "至少提前2个工作日" in await wx_plain.say(U, "提前几天预约")  # the 2nd working day
    places = await wx_plain.say(U, "北京有哪些体检机构")
    assert "北京商业体检中心（商业机构）" in places and "北京三甲医院（三甲医院）" in places


@change(("months = [7, 8]", "months = [9, 10]"))
async def test_the_festival_months(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "客户服务节是什么时候")
    assert "每年9月和10月" in reply and "7月" not in reply, reply


@change(('hotline = "95359"', 'hotline = "95511"'),
        ('service_line = "95359-8-1"', 'service_line = "95511-3"'))
async def test_the_hotlines(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "客服电话是多少")
    assert "95511。" in reply and "95511-3" in reply and "95359" not in reply, reply


@change(('cancel_cutoff = "12:00"', 'cancel_cutoff = "15:00"'))
async def test_the_cancellation_cut_off(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "取消预约有什么规定")
    assert "15:00前取消" in reply and "12点" not in reply, reply


@change(('tiers = ["diamond"]\nquota = 1', 'tiers = ["diamond", "platinum"]\nquota = 1'))
async def test_who_has_a_service(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "特种检查谁可以用")
    assert "仅限钻石和铂金客户" in reply, reply


@change(('name = "钻石"', 'name = "黑钻"'))
async def test_a_tier_name(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "专家门诊谁能约")
    assert "适用于黑钻和铂金客户" in reply and "黑钻客户可以指定专家" in reply, reply
    assert "钻石" not in reply


@change(("lead_workdays = 2", "lead_workdays = 3"))
async def test_the_lead_time(wx_plain, world):
    world("platinum")
    reply = await wx_plain.say(U, "提前几天预约")
    assert "至少提前3个工作日" in reply and "第3个工作日" in reply, reply
    assert "最早周五" not in reply  # the example holds for 2 working days only


@change(('commercial = "商业机构"', 'commercial = "民营机构"'))
async def test_the_institution_kind_names(wx_plain, world):
    world("platinum")
    places = await wx_plain.say(U, "北京有哪些体检机构")
    assert "北京商业体检中心（民营机构）" in places and "商业机构" not in places, places
    await wx_plain.say(U, "预约体检")
    await wx_plain.say(U, "本人")
    ask = await wx_plain.say(U, "北京")  # the institution step's options
    assert "（民营机构；北京某路1号）" in ask, ask
