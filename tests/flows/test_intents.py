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
