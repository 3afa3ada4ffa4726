"""What customers type, mapped to menu keys: tolerant, but not trigger-happy."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bot.conversation.intents import Universal, is_question, normalize
from menus import INTENTS, MENU, VOCABULARY, Key, menu_json

match, universal = VOCABULARY.match, VOCABULARY.universal


@pytest.mark.parametrize("text,key", [
    ("我的等级", Key.MY_TIER), ("我 的 等 级 ！", Key.MY_TIER), ("ＶＩＰ等级", Key.MY_TIER),
    ("我得等级", Key.MY_TIER), ("请问我是什么等级？", Key.MY_TIER),
    ("我想洗牙", Key.BOOK_DENTAL), ("预约 洁牙", Key.BOOK_DENTAL),
    ("取消预约", Key.CANCEL_BOOKING), ("解除绑定", Key.UNBIND), ("绑定", Key.BIND),
    ("Help", Key.HELP), ("帮助", Key.HELP), ("转人工", Key.HUMAN),
])
def test_match(text, key):
    assert match(text) == key


@pytest.mark.parametrize("text,key", [
    # A cancel word decides, whatever service the sentence names (DOMAIN, issue 14).
    ("取消体检", Key.CANCEL_BOOKING), ("体检取消", Key.CANCEL_BOOKING),
    ("把体检取消了", Key.CANCEL_BOOKING), ("取消12月18号的体检", Key.CANCEL_BOOKING),
    ("我不想洗牙了", Key.CANCEL_BOOKING), ("洗牙不去了", Key.CANCEL_BOOKING),
    ("洗牙不要了", Key.CANCEL_BOOKING), ("退掉洁牙", Key.CANCEL_BOOKING),
    ("撤销体检", Key.CANCEL_BOOKING), ("帮我取消", Key.CANCEL_BOOKING),
    # ... unless the sentence is about something else, or tells what happened.
    ("取消绑定", Key.UNBIND), ("帮我取消绑定", Key.UNBIND), ("退掉保单", None),
    ("取消关注", None), ("我的预约已取消", Key.MY_BOOKINGS), ("不想说了", None),
    # A change of date; a booking declined; a declined booking inside a sentence.
    ("改期", Key.RESCHEDULE), ("我想改个日子", Key.RESCHEDULE), ("体检往后推一周", Key.RESCHEDULE),
    ("改天再说", None), ("不想约体检", Key.NO_BOOKING), ("不用预约了", Key.NO_BOOKING),
    ("不用预约直接去洗牙", None),
    # A date alone, and one with more around it.
    ("12月18日", Key.DAY_SAID), ("1月3号", Key.DAY_SAID), ("下周三", Key.DAY_SAID),
    ("明天见", None), ("我想洗牙", Key.BOOK_DENTAL),
])
def test_what_decides_a_sentence(text, key):
    assert match(text) == key


@pytest.mark.parametrize("text,service", [("取消我的体检", "checkup"), ("我不想洗牙了", "dental"),
                                          ("取消预约", None), ("12月18日", None)])
def test_the_service_a_sentence_names(text, service):
    assert VOCABULARY.service_named(text) == service


@pytest.mark.parametrize("text", ["this is a test", "随便说点什么", "'; DROP TABLE customer; --",
                                  "", "   ", "😀", "1234567890", "x" * 500])
def test_no_match(text):
    assert match(text) is None


@pytest.mark.parametrize("text,cmd", [("退出", Universal.EXIT), ("取消", Universal.EXIT),
                                      (" 返回 ", Universal.BACK), ("更多。", Universal.MORE),
                                      ("帮助", Key.HELP), ("人工", Key.HUMAN),
                                      ("取消预约", None), ("我要退出登录", None)])
def test_universal_commands_are_exact(text, cmd):
    assert universal(text) == cmd


def test_bu_ban_le_is_exit():  # DOMAIN, "Universal commands": 退出 / 取消 (also 算了, 不办了)
    assert universal("不办了") == Universal.EXIT == universal("算了")


@given(st.text(max_size=200))
def test_never_crashes(text):
    normalize(text)
    match(text)
    universal(text)


def test_menu_and_intents_share_one_set_of_keys():
    menu_keys = {k for _, entries in MENU for _, k in entries}
    assert menu_keys <= set(INTENTS)
    assert len(MENU) <= 3 and all(len(entries) <= 5 for _, entries in MENU)
    clicks = [b["key"] for top in menu_json()["button"] for b in top["sub_button"]]
    assert all(Key(k) for k in clicks)


@pytest.mark.parametrize("text", [
    "专家门诊挂号费谁出", "洁牙疼不疼", "怎么查洁牙机构", "洗牙要钱吗", "体检在哪做", "一年几次",
    "这些服务收费不？", "CT能预约不", "是不是要提前约", "有没有陪诊", "洗牙？", "能约嘛", "体检呢",
    "多少钱", "为啥要身份证",
])
def test_questions_are_questions(text):
    assert is_question(text)


@pytest.mark.parametrize("text", [
    "预约洁牙", "我要洗牙", "帮我约体检", "我想约洁牙", "取消预约", "确认取消", "确认解除", "1",
    "北京", "12月4号", "不", "不要", "不不不", "好的", "张三", "心内科",
    "随便哪天", "哪天都行", "哪家都可以",  # a question word used as "any" asks nothing
])
def test_commands_and_answers_are_not_questions(text):
    assert not is_question(text)
