"""Conversations a VIP customer can trust, through /wechat with the production router:
emergencies first in any state, entitlements on every door, plain questions answered from
the FAQ, voice, flows that listen, and a human hand-over that keeps its promises.

Expected wording comes from the handbook and docs/programme.md (hotlines 95359 and 95359-8-1,
which tier gives which service, 120 and the emergency department), not from the
templates under test."""
from __future__ import annotations

import time

import pytest
import time_machine
from sqlmodel import Session, select

from bot.domain.accounts import bind
from models import LeftMessage
from tests.support import factories
from tests.conftest import WeChat

U = "oTrustUser000000000000001"

# Emergencies (docs/programme.md: "call 120 / go to A&E" at once; expert outpatient is no
# emergency care) and messages that must not set it off.
EMERGENCIES = [
    "急诊", "胸痛", "胸口疼得厉害", "喘不上气", "呼吸困难", "昏迷", "晕倒了", "大出血", "中风",
    "抽搐", "救命", "120", "心脏病发作了怎么办", "我爸突然晕倒了怎么办", "救命啊！！", "快打120",
    "我妈中风了", "孩子抽搐了", "喘不过气来", "吐血了", "被车撞了", "心梗", "他昏过去了",
    "一直在流血止不住", "胸口好闷好痛", "我想自杀", "不想活了", "过敏性休克", "脑梗了",
    "高烧抽搐", "１２０",
]
NOT_EMERGENCIES = [
    "120万保额", "急诊科的专家能约吗", "我想约体检", "我的等级", "预约洁牙", "保单号P120001",
    "13812012345", "谢谢", "客服电话多少", "我去年中风了现在想约个专家", "体检套餐有哪些",
    "洁牙要提前几天", "怎么升级到钻石", "你好", "1200元",
]


def advice(reply: str) -> bool:
    return "120" in reply and "急诊" in reply and "95359" in reply and "专家门诊" in reply


@pytest.fixture
def customer(services):
    def make(tier: str, openid: str = U, premium: str = "50000"):
        with Session(services.engine, expire_on_commit=False) as s:
            c = factories.customer(s, name="吴敏", sex="F", tier=tier)
            factories.policy(s, c, f"P{openid[-6:]}", premium=premium)
            bind(s, openid, c, services.now())
            s.commit()
            return c
    return make


# --- Safety first -----------------------------------------------------------------------------


async def test_emergency_phrasings_get_the_advice_at_once(wx_plain):
    hits = [t for t in EMERGENCIES if advice(await wx_plain.say(U, t))]
    false_alarms = [t for t in NOT_EMERGENCIES if advice(await wx_plain.say(U + "n", t))]
    print(f"emergency recall {len(hits)}/{len(EMERGENCIES)}, "
          f"false alarms {len(false_alarms)}/{len(NOT_EMERGENCIES)}")
    assert len(EMERGENCIES) >= 30 and len(NOT_EMERGENCIES) >= 15
    assert hits == EMERGENCIES  # erring on the side of safety: every one
    assert false_alarms == []


async def test_emergency_inside_a_free_text_step_and_the_flow_waits(wx_plain):
    await wx_plain.say(U, "绑定")  # an unbound user: the name step takes any text
    await wx_plain.say(U, "同意")  # the privacy notice comes first
    assert advice(await wx_plain.say(U, "胸口疼得厉害"))
    # The flow waited where it was: a name is still taken.
    assert "身份证" in await wx_plain.say(U, "吴敏")


@pytest.mark.parametrize("text", ["快叫120", "帮我打120", "呼叫 120", "120！", "我妈晕了，快拨120"])
async def test_a_call_for_120_gets_the_advice(wx_plain, text):
    assert advice(await wx_plain.say(U, text))


@pytest.mark.parametrize("text", ["我的保单号是120开头的吗", "客服电话是不是120", "120是什么号码",
                                  "我家门牌号是120"])
async def test_120_in_a_question_about_numbers_is_not_an_emergency(wx_plain, text):
    assert not advice(await wx_plain.say(U, text))


async def test_120_inside_an_id_number_is_not_an_emergency(wx_plain):
    await wx_plain.say(U, "绑定")
    await wx_plain.say(U, "同意")  # the privacy notice comes first
    await wx_plain.say(U, "吴敏")
    reply = await wx_plain.say(U, "110105198012010120")
    assert not advice(reply)


# --- Entitlements on every door -----------------------------------------------------------------


async def test_mass_customer_is_refused_the_health_advisor_with_the_reason(wx_plain, customer):
    customer("mass")
    reply = await wx_plain.say(U, "健康顾问")
    assert "95359-8-1" not in reply
    assert "健康顾问" in reply and "明珠" in reply and "大众" in reply  # who has it; what they are


async def test_pearl_customer_gets_the_health_advisor(wx_plain, customer):
    customer("pearl")
    reply = await wx_plain.say(U, "健康顾问")
    assert "95359-8-1" in reply and "心理咨询" in reply  # mental health is excluded


async def test_unbound_user_asking_for_a_tier_service_is_led_into_binding(wx_plain):
    reply = await wx_plain.say(U, "健康顾问")
    assert "95359-8-1" not in reply and "姓名" in reply


@pytest.mark.parametrize("tier,offers,never", [
    ("mass", [], ["预约洁牙", "健康顾问"]),
    ("pearl", ["健康顾问"], ["预约洁牙", "预约体检"]),
])
async def test_my_benefits_offers_only_what_the_tier_has(wx_plain, customer, tier, offers, never):
    customer(tier)
    reply = await wx_plain.say(U, "我的权益")
    # What the next tier adds is listed on a line of its own.
    body = "\n".join(line for line in reply.splitlines() if not line.startswith("升级到"))
    for word in offers:
        assert f"「{word}」" in body
    for word in never:
        assert f"「{word}」" not in body


async def test_help_lists_only_what_this_user_can_do(wx_plain, customer):
    unbound = await wx_plain.say(U + "u", "帮助")
    assert "绑定" in unbound and "我的等级" not in unbound
    customer("mass")
    mass = await wx_plain.say(U, "帮助")
    assert "我的等级" in mass and "健康顾问" not in mass and "预约洁牙" not in mass


async def test_welcome_does_not_promise_bookings_to_a_stranger(wx_plain):
    reply = await wx_plain.event(U, "subscribe")
    assert "欢迎关注" in reply["Content"]
    assert "预约洁牙" not in reply["Content"] and "绑定" in reply["Content"]


# --- Answers to plain questions ------------------------------------------------------------------


@pytest.mark.parametrize("question,fact", [
    ("家人可以用吗", "配偶"),
    ("什么时候降级", "6月30日"),
    ("服务热线是多少", "95359"),
    ("客户服务节是什么", "7月"),
    ("怎么升级到钻石", "100"),  # 钻石 at 1,000,000 contribution (100万)
    ("什么是保费贡献值", "10%"),
])
async def test_plain_questions_get_real_answers(wx_plain, question, fact):
    reply = await wx_plain.say(U, question)
    assert "没有完全理解" not in reply
    assert fact in reply


@pytest.mark.parametrize("words,not_this", [("谢谢", "抱歉"), ("再见", "您是不是"),
                                            ("你是机器人吗", "没有完全理解")])
async def test_small_talk_gets_one_warm_line(wx_plain, words, not_this):
    reply = await wx_plain.say(U, words)
    assert not_this not in reply and "\n" not in reply.strip()


async def test_a_question_about_another_tier_answers_about_that_tier(wx_plain, customer):
    customer("gold")
    reply = await wx_plain.say(U, "钻石客户有什么权益")
    assert "特种检查" in reply  # only 钻石 has the special examination


async def test_a_vague_question_offers_three_numbered_choices(wx_plain):
    reply = await wx_plain.say(U, "那个服务的事情怎么弄")
    assert "您是不是想问" in reply and "1." in reply and "weixin://bizmsgmenu" in reply
    assert "没有完全理解" in reply
    answer = await wx_plain.say(U, "1")
    assert answer and "您是不是想问" not in answer


# --- Voice ----------------------------------------------------------------------------------------


async def test_recognised_voice_is_read_as_text(wx_plain):
    reply = await wx_plain.send(U, "voice", MediaId="m1", Format="amr", Recognition="救命")
    assert advice(reply["Content"])


async def test_recognised_voice_at_a_step_echoes_what_was_heard(wx_plain):
    await wx_plain.say(U, "绑定")
    await wx_plain.say(U, "同意")  # the privacy notice comes first
    reply = await wx_plain.send(U, "voice", MediaId="m1", Format="amr", Recognition="吴敏")
    assert "我听到的是：「吴敏」" in reply["Content"] and "身份证" in reply["Content"]


async def test_voice_without_recognition_is_asked_to_type(wx_plain):
    reply = await wx_plain.send(U, "voice", MediaId="m1", Format="amr")
    assert "打字" in reply["Content"] and "菜单" in reply["Content"]


# --- Flows that listen ----------------------------------------------------------------------------


async def test_a_command_at_a_free_text_step_is_not_taken_as_a_name(wx_plain):
    await wx_plain.say(U, "我的等级")  # unbound: binding starts with the privacy notice
    assert "姓名" in await wx_plain.say(U, "同意")  # now the name step takes any text
    reply = await wx_plain.say(U, "我的权益")
    assert "要先退出" in reply and "我的权益" in reply
    back = await wx_plain.say(U, "否")
    assert "继续" in back and "姓名" in back
    await wx_plain.say(U, "我的权益")
    assert "姓名" in await wx_plain.say(U, "是")  # left binding; 我的权益 leads into binding again


# --- Human hand-over -------------------------------------------------------------------------------


async def test_hand_over_in_hours_is_announced_and_lasts(http, sent):
    wx = WeChat(http, "plain")
    with time_machine.travel("2026-12-01 10:00:00+08:00", tick=True):
        res = await wx.post(_text("人工"), U)
        assert b"transfer_customer_service" in res.content
        for _ in range(100):
            if sent:
                break
            time.sleep(0.01)
        assert "转接人工客服" in sent[-1]["body"]["text"]["content"]
        res = await wx.post(_text("我的保单能退吗"), U)  # the actual question goes to the agents
        assert b"transfer_customer_service" in res.content
        closed = await wx.event(U, "kf_close_session", KfAccount="kf1@test")
        assert "结束" in closed["Content"]
        res = await wx.post(_text("我的保单能退吗"), U)
        assert b"transfer_customer_service" not in res.content


async def test_hand_over_ends_after_the_waiting_limit(http):
    wx = WeChat(http, "plain")
    with time_machine.travel("2026-12-01 10:00:00+08:00", tick=False) as clock:
        await wx.post(_text("人工"), U)
        clock.shift(29 * 60 + 59)
        assert b"transfer_customer_service" in (await wx.post(_text("还在吗"), U)).content
        clock.shift(2)
        res = await wx.post(_text("还在吗"), U)
        assert b"transfer_customer_service" not in res.content


async def test_exit_leaves_the_hand_over(http):
    wx = WeChat(http, "plain")
    with time_machine.travel("2026-12-01 10:00:00+08:00", tick=True):
        await wx.post(_text("人工"), U)
        assert "结束" in await wx.say(U, "退出")
        assert b"transfer_customer_service" not in (await wx.post(_text("帮助"), U)).content


async def test_a_message_left_after_hours_is_stored_and_acknowledged(http, services):
    wx = WeChat(http, "plain")
    with time_machine.travel("2026-12-01 22:30:00+08:00", tick=True):
        closed = await wx.say(U, "人工")
        assert "95359" in closed and "留言" in closed
        ack = await wx.say(U, "请帮我查一下上个月的理赔进度")
        assert "收到您的留言" in ack
    with Session(services.engine) as s:
        [msg] = s.exec(select(LeftMessage)).all()
        assert msg.openid == U and msg.text == "请帮我查一下上个月的理赔进度" and msg.closed_at is None


def _text(content: str) -> str:
    from bot.wechat.simulator import text_xml

    return text_xml(U, content)


# --- 理赔住院探视 (明珠 and up, with a policy that has hospitalisation, critical illness, mild
# illness or disability liability) ------------------------------------------------------------


async def test_hospital_visit_request_reaches_staff(wx_plain, customer, services):
    from models import HospitalVisit

    customer("pearl")  # the factory's policy carries hospitalisation liability
    with time_machine.travel("2026-12-02 10:00:00+08:00", tick=True):
        first = await wx_plain.say(U, "住院探视")
        assert "医院名称" in first
        await wx_plain.say(U, "上海瑞金医院")
        await wx_plain.say(U, "心内科 12床")
        done = await wx_plain.say(U, "昨天")
    assert "95359" in done  # report the claim on the hotline if not done yet
    with Session(services.engine) as s:
        [visit] = s.exec(select(HospitalVisit)).all()
        assert (visit.hospital, visit.ward, str(visit.admission_date)) == \
            ("上海瑞金医院", "心内科 12床", "2026-12-01")


async def test_hospital_visit_is_not_for_mass_customers(wx_plain, customer):
    customer("mass")
    reply = await wx_plain.say(U, "住院探视")
    assert "理赔住院探视" in reply and "明珠" in reply and "医院名称" not in reply


async def test_hospital_visit_needs_a_policy_with_the_liability(wx_plain, services):
    with Session(services.engine, expire_on_commit=False) as s:
        c = factories.customer(s, name="吴敏", sex="F", tier="gold")
        factories.policy(s, c, "PNOLIAB001", premium="120000", liabilities="")
        bind(s, U, c, services.now())
        s.commit()
    reply = await wx_plain.say(U, "住院探视")
    assert "住院、重大疾病、轻症或伤残责任" in reply and "医院名称" not in reply


async def test_an_admission_date_in_the_future_is_asked_again(wx_plain, customer):
    customer("pearl")
    with time_machine.travel("2026-12-02 10:00:00+08:00", tick=True):
        await wx_plain.say(U, "住院探视")
        await wx_plain.say(U, "上海瑞金医院")
        await wx_plain.say(U, "心内科")
        reply = await wx_plain.say(U, "12月25日")
    assert "没能看懂这个日期" in reply


# --- Privacy (PIPL) -------------------------------------------------------------------------------


async def test_binding_asks_consent_before_any_question(wx_plain):
    first = await wx_plain.say(U, "绑定")
    assert "身份证号" in first and "隐私政策" in first and "https://" in first
    assert "姓名" not in first.split("隐私政策")[0].split("收集")[0]  # no question yet
    assert "同意" in await wx_plain.say(U, "嗯嗯我看看")  # neither yes nor no: asked again
    assert "不绑定也没关系" in await wx_plain.say(U, "不同意")
    await wx_plain.say(U, "绑定")
    assert "姓名" in await wx_plain.say(U, "同意")


async def test_unbinding_understands_no_and_erases_chat_data(wx_plain, customer, services):
    customer("gold")
    with Session(services.engine) as s:
        s.add(LeftMessage(openid=U, text="请回电话", created_at=services.now()))
        s.commit()
    assert "确认解除" in await wx_plain.say(U, "解除绑定")
    assert "保留绑定" in await wx_plain.say(U, "否")
    assert "黄金" in await wx_plain.say(U, "我的等级")  # still bound
    await wx_plain.say(U, "解除绑定")
    assert "结束解除绑定" in await wx_plain.say(U, "取消")  # a bare 取消 only leaves the flow
    assert "黄金" in await wx_plain.say(U, "我的等级")
    await wx_plain.say(U, "解除绑定")
    for bare_yes in ("确认", "是", "好的"):  # destroying takes its distinct phrase only
        assert "确认解除" in await wx_plain.say(U, bare_yes)
    assert "黄金" in await wx_plain.say(U, "我的等级")  # still bound (我的等级 leaves the flow)
    await wx_plain.say(U, "解除绑定")
    done = await wx_plain.say(U, "确认解除")
    assert "已解除绑定" in done and "删除" in done
    with Session(services.engine) as s:
        assert s.exec(select(LeftMessage).where(LeftMessage.openid == U)).all() == []
