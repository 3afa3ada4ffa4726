"""/wechat, second hardening round: de-duplication per sender, odd event shapes, Redis lost
mid-run."""
from __future__ import annotations

import logging

import pytest
from sqlmodel import Session

from bot.domain.accounts import bind
from bot.wechat.simulator import event_xml, text_xml
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


REPORT = dict(Status="send success", TotalCount="3", FilterCount="3", SentCount="3",
              ErrorCount="0")


@pytest.mark.parametrize("event,key,extra", [
    ("MASSSENDJOBFINISH", None, {**REPORT, "MsgID": "abc"}),
    ("MASSSENDJOBFINISH", None, {**REPORT, "MsgID": "9" * 80}),
    ("MASSSENDJOBFINISH", None, {**REPORT, "MsgID": "1000", "TotalCount": "many"}),
    ("MASSSENDJOBFINISH", None, {**REPORT, "MsgID": "1000", "ErrorCount": "-1"}),
    ("TEMPLATESENDJOBFINISH", None, {"MsgID": "abc", "Status": "success"}),
    ("TEMPLATESENDJOBFINISH", None, {"MsgID": "9" * 80, "Status": "success"}),
    ("subscribe", "scene42", {}),  # neither qrscene_… nor a product scan
    ("subscribe", "qrscene_", {}),
    ("subscribe", "qrscene_" + "x" * 65, {}),
    ("SCAN", "x" * 65, {"Ticket": "T"}),
    ("LOCATION", None, {"Latitude": "north", "Longitude": "116.4", "Precision": "30"}),
    ("CLICK", "K" * 129, {}),
])
async def test_events_of_odd_shapes_are_refused_without_a_traceback(wx_plain, services, caplog,
                                                                    event, key, extra):
    with caplog.at_level(logging.INFO):
        res = await wx_plain.post(event_xml(ALICE, event, key, **extra), ALICE)
    assert 400 <= res.status_code < 500, res.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    with Session(services.engine) as s:  # refused at the door: no handler ran
        from models import WechatUser
        assert s.get(WechatUser, ALICE) is None


@pytest.mark.parametrize("key", ["scanbarcode|EAN13|6901234567892", "scanimage|"])
async def test_a_follow_from_a_product_scan_is_welcomed(wx_plain, caplog, key):
    with caplog.at_level(logging.INFO):
        reply = await wx_plain.event(ALICE, "subscribe", key)
    assert "欢迎关注" in reply["Content"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_events_of_wechats_shape_still_pass(wx_plain):
    assert (await wx_plain.post(event_xml(ALICE, "MASSSENDJOBFINISH", None, MsgID="1000",
                                          **REPORT), ALICE)).text == "success"
    assert (await wx_plain.post(event_xml(ALICE, "TEMPLATESENDJOBFINISH", None, MsgID="12345",
                                          Status="success"), ALICE)).text == "success"
    assert (await wx_plain.post(event_xml(ALICE, "LOCATION", None, Latitude="39.9042",
                                          Longitude="-116.4074", Precision="30.0"),
                                ALICE)).text == "success"
    assert "欢迎关注" in (await wx_plain.event(ALICE, "subscribe", "qrscene_branch42",
                                               Ticket="gQH47joAAAAAAAAAASxodHRw"))["Content"]
