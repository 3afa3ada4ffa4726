"""WeChat's documented sample messages (tests/fixtures), posted in all three modes."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session

from models import WechatUser
from tests.support import ROOT

FIXTURES = ROOT / "tests" / "fixtures"


def sample(name: str) -> str:
    return (FIXTURES / f"{name}.xml").read_text()


@pytest.mark.parametrize("name,expect", [
    ("text", "没有完全理解"),
    ("image", "只能看懂文字和菜单"),
    ("voice", "请您打字告诉我"),  # WeChat recognised nothing: asked kindly to type or tap
    ("location", "只能看懂文字和菜单"),
    ("link", "只能看懂文字和菜单"),
    ("event_subscribe", "欢迎关注"),
    ("event_subscribe_scene", "欢迎关注"),
    ("event_scan", "欢迎回来"),
    ("event_click", "我可以帮您办理这些事"),  # the HELP key
])
async def test_sample_gets_its_reply(wx, name, expect):
    reply = await wx.deliver(sample(name), "fromUser")
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] in ("fromUser", "FromUser")
    assert reply["FromUserName"] == "toUser"
    assert expect in reply["Content"]


@pytest.mark.parametrize("name", ["event_location", "event_view", "event_templatesendjobfinish",
                                  "event_masssendjobfinish", "event_unsubscribe"])
async def test_sample_event_is_answered_with_success(wx, name):
    res = await wx.post(sample(name))
    assert res.status_code == 200 and res.text == "success"


async def test_sample_unsubscribe_stops_following(wx_plain, services):
    await wx_plain.deliver(sample("event_subscribe"))
    await wx_plain.deliver(sample("event_unsubscribe"))
    with Session(services.engine) as s:
        assert s.get(WechatUser, "FromUser").following is False
