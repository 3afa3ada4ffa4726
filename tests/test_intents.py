"""What customers type, mapped to menu keys: tolerant, but not trigger-happy."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bot.conversation.intents import Universal, match, normalize, universal
from menus import INTENTS, MENU, Key, menu_json


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
