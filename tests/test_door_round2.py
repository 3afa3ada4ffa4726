"""/wechat, second hardening round: de-duplication per sender, odd event shapes, Redis lost
mid-run."""
from __future__ import annotations

import logging

from sqlmodel import Session

from bot.domain.accounts import bind
from bot.wechat.simulator import text_xml
from tests import factories

ALICE = "oAlice000000000000000000001"
BOB = "oBob00000000000000000000002"


async def test_the_same_msgid_from_two_senders_gets_two_replies(wx_plain, services):
    """A MsgId is unique per sender only: a second follower's message that happens to reuse
    it is that follower's own message, answered with their own tier."""
    with Session(services.engine, expire_on_commit=False) as s:
        gold = factories.customer(s, name="李四", tier="gold")
        diamond = factories.customer(s, name="王芳", sex="F", tier="diamond")
        bind(s, ALICE, gold, services.now())
        bind(s, BOB, diamond, services.now())
        s.commit()
    first = await wx_plain.deliver(text_xml(ALICE, "我的等级", msg_id=424242), ALICE)
    second = await wx_plain.deliver(text_xml(BOB, "我的等级", msg_id=424242), BOB)
    assert "【黄金客户】" in first["Content"]
    assert "【钻石客户】" in second["Content"] and "黄金" not in second["Content"].split("\n")[0]
    assert second["ToUserName"] == BOB
    # WeChat's retry of the first is still the first's reply, once.
    again = await wx_plain.deliver(text_xml(ALICE, "我的等级", msg_id=424242), ALICE)
    assert again == first
