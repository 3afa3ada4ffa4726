"""/wechat as WeChat's servers use it: verification, the three modes, and hostile input."""
from __future__ import annotations

import asyncio
import time

import pytest
import time_machine
from sqlmodel import Session, select

from bot.wechat.simulator import WeChatSide, event_xml, signature, text_xml
from bot.infra.texts import render
from models import WechatUser
from tests.conftest import TOKEN, WeChat

HELP_HEAD = "我可以帮您办理这些事"  # the first line of the help reply
OPENID = "oUser0000000000000000000001"


async def test_url_verification_echoes_echostr(http):
    ts, nonce = str(int(time.time())), "n0nce"
    res = await http.get("/wechat", params={"signature": signature(TOKEN, ts, nonce),
                                            "timestamp": ts, "nonce": nonce, "echostr": "e123"})
    assert res.status_code == 200 and res.text == "e123"


@pytest.mark.parametrize("params,status", [
    ({"signature": "0" * 40}, 403),
    ({}, 400),
])
async def test_url_verification_refuses_bad_signature(http, params, status):
    ts, nonce = str(int(time.time())), "n0nce"
    query = {"timestamp": ts, "nonce": nonce, "echostr": "e123", **params}
    res = await http.get("/wechat", params=query)
    assert res.status_code == status and "e123" not in res.text


async def test_help_in_every_mode(wx):
    reply = await wx.deliver(text_xml(OPENID, "帮助"), OPENID)
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == OPENID
    assert reply["Content"].startswith(HELP_HEAD) and "绑定" in reply["Content"]


@pytest.mark.settings(wechat_message_mode="safe")
async def test_safe_mode_reply_is_encrypted(http):
    wx = WeChat(http, "safe")
    res = await wx.post(text_xml(OPENID, "帮助"), OPENID)
    assert b"<Encrypt>" in res.content and HELP_HEAD.encode() not in res.content
    assert wx.side.read_reply(res.content)["Content"].startswith(HELP_HEAD)


async def test_subscribe_welcomes_and_unsubscribe_stops_following(wx, services):
    reply = await wx.event(OPENID, "subscribe")
    assert "欢迎关注" in reply["Content"] and "绑定" in reply["Content"]
    assert await wx.event(OPENID, "unsubscribe") == {}
    with Session(services.engine) as s:
        user = s.get(WechatUser, OPENID)
        assert user is not None and user.following is False and user.unsubscribed_at


async def test_subscribe_with_qr_scene(wx_plain, services):
    reply = await wx_plain.event(OPENID, "subscribe", "qrscene_branch42", Ticket="TICKET")
    assert "欢迎关注" in reply["Content"]
    with Session(services.engine) as s:
        assert s.get(WechatUser, OPENID).subscribe_scene == "branch42"


@pytest.mark.parametrize("event,key", [("VIEW", "https://example.com"), ("LOCATION", None),
                                       ("TEMPLATESENDJOBFINISH", None),
                                       ("MASSSENDJOBFINISH", None)])
async def test_silent_events_get_success(wx_plain, event, key):
    res = await wx_plain.post(event_xml(OPENID, event, key, Status="success"), OPENID)
    assert res.status_code == 200 and res.text == "success"


async def test_scan_event_greets(wx_plain):
    reply = await wx_plain.event(OPENID, "SCAN", "42", Ticket="T")
    assert reply["Content"] == render("scan")


async def test_menu_click_routes_like_text(wx_plain):
    assert await wx_plain.click(OPENID, "FAQ") == await wx_plain.say(OPENID + "2", "常见问题")
    assert await wx_plain.click(OPENID, "NO_SUCH_KEY") == render("menu_outdated")


@pytest.mark.parametrize("kind,fields", [
    ("image", {"PicUrl": "http://x/y.jpg", "MediaId": "m1"}),
    ("voice", {"MediaId": "m1", "Format": "amr"}),
    ("video", {"MediaId": "m1", "ThumbMediaId": "t1"}),
    ("shortvideo", {"MediaId": "m1", "ThumbMediaId": "t1"}),
    ("location", {"Location_X": "31.2", "Location_Y": "121.5", "Scale": "15", "Label": "上海"}),
    ("link", {"Title": "t", "Description": "d", "Url": "http://x"}),
    ("file", {"Title": "a.pdf", "FileKey": "k"}),
    ("hologram", {"Data": "?"}),
])
async def test_other_message_types_get_a_polite_reply(wx_plain, kind, fields):
    reply = await wx_plain.send(OPENID, kind, **fields)
    # A voice message WeChat could not recognise is asked, kindly, to type or tap instead.
    assert ("请您打字告诉我" if kind == "voice" else "只能看懂文字和菜单") in reply["Content"]


@pytest.mark.parametrize("text", [
    "😀🎉" * 10, "长" * 2000, "'; DROP TABLE customer; --", "<script>alert(1)</script>",
    "   ", "\u202e\u200b", "ＡＢＣ１２３",
])
async def test_garbage_text_gets_a_polite_reply(wx, text):
    reply = await wx.deliver(text_xml(OPENID, text), OPENID)
    assert reply["MsgType"] == "text"
    assert "帮助" in reply["Content"]
    assert len(reply["Content"].encode()) <= 2048


# --- Refusals ---------------------------------------------------------------------------------


def _no_user_stored(services) -> bool:
    with Session(services.engine) as s:
        return s.exec(select(WechatUser)).first() is None


async def test_forged_signature_is_refused_and_nothing_runs(http, services):
    side = WeChatSide("not-the-token", mode="plain")
    params, body = side.request(text_xml(OPENID, "帮助"))
    res = await http.post("/wechat", params=params, content=body)
    assert res.status_code == 403
    assert _no_user_stored(services)


@pytest.mark.settings(wechat_message_mode="safe")
async def test_forged_msg_signature_in_safe_mode(http, services):
    wx = WeChat(http, "safe")
    params, body = wx.side.request(text_xml(OPENID, "帮助"))
    params["msg_signature"] = "f" * 40
    res = await http.post("/wechat", params=params, content=body)
    assert res.status_code == 403
    assert _no_user_stored(services)


@pytest.mark.settings(wechat_message_mode="safe")
async def test_ciphertext_for_another_app_is_refused(http, services):
    from tests.conftest import AES_KEY
    side = WeChatSide(TOKEN, "wxsomeoneelse00000", AES_KEY, "safe")
    params, body = side.request(text_xml(OPENID, "帮助"))
    res = await http.post("/wechat", params=params, content=body)
    assert res.status_code == 403
    assert _no_user_stored(services)


@pytest.mark.parametrize("skew", [-400, 400])
async def test_stale_or_future_timestamp_is_refused(wx_plain, services, skew):
    params, body = wx_plain.side.request(text_xml(OPENID, "帮助"),
                                         timestamp=int(time.time()) + skew)
    res = await wx_plain.client.post("/wechat", params=params, content=body)
    assert res.status_code == 403
    assert _no_user_stored(services)


@pytest.mark.parametrize("body,status", [
    (b"", 400),
    (b"   ", 400),
    (b"<xml><FromUserName>x", 400),
    (b"not xml at all", 400),
    (b"<html><body/></html>", 400),
    (b"<xml><ToUserName>a</ToUserName></xml>", 400),
    (b"<xml><FromUserName>u</FromUserName><MsgType>text</MsgType></xml>", 400),
    (b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
     b"<xml><ToUserName>a</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime>"
     b"<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId></xml>", 400),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
     b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
     b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
     b"<xml><Content>&lol3;</Content></xml>", 400),
    (b"\xff\xfe\x00<\x00x", 400),
    ('<?xml version="1.0" encoding="UTF-16"?><xml><Content>hi</Content></xml>'.encode("utf-16"), 400),
    (b'<!DOCTYPE xml><xml><ToUserName>a</ToUserName><FromUserName>u</FromUserName>'
     b'<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>9</MsgId></xml>', 400),
    (b'<xml><ToUserName>a</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime>'
     b'<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>9</MsgId></xml>', 400),
    (b'<xml><FromUserName>u</FromUserName><!-- <!ENTITY x "y"> --></xml>', 400),
])
async def test_malformed_and_hostile_xml(wx_plain, services, body, status):
    params, _ = wx_plain.side.request("<xml/>")
    res = await wx_plain.client.post("/wechat", params=params, content=body)
    assert res.status_code == status
    assert _no_user_stored(services)


@pytest.mark.settings(wechat_message_mode="safe")
async def test_hostile_xml_inside_safe_mode_ciphertext(http, services):
    wx = WeChat(http, "safe")
    xxe = ('<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml>'
           f"<ToUserName>a</ToUserName><FromUserName>{OPENID}</FromUserName>"
           "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content>"
           "<MsgId>1</MsgId></xml>")
    res = await wx.post(xxe, OPENID)
    assert res.status_code == 400
    assert _no_user_stored(services)


async def test_ten_megabyte_body_is_refused(wx_plain, services):
    xml = text_xml(OPENID, "x" * (10 * 1024 * 1024))
    res = await wx_plain.post(xml, OPENID)
    assert res.status_code == 413
    assert _no_user_stored(services)


async def test_chunked_body_over_the_cap_is_refused(wx_plain, services):
    params, body = wx_plain.side.request(text_xml(OPENID, "y" * 200_000))

    async def chunks():
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    res = await wx_plain.client.post("/wechat", params=params, content=chunks())
    assert res.status_code == 413


# --- Retries and replays -------------------------------------------------------------------------


@pytest.mark.survey
async def test_replayed_request_gets_the_same_reply_and_runs_once(http, services):
    wx = WeChat(http, "plain")
    await wx.say(OPENID, "预约洁牙")  # survey flow: asks for a name
    params, body = wx.side.request(text_xml(OPENID, "小王"), OPENID)
    first = await http.post("/wechat", params=params, content=body)
    again = await http.post("/wechat", params=params, content=body)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    assert wx.side.read_reply(first.content)["Content"] == render("scan")  # asks for n
    # Had the replay run, "小王" would have been refused as a number.
    assert (await wx.say(OPENID, "3")).startswith("DONE name=小王 n=3")


@pytest.mark.survey
async def test_three_concurrent_retries_run_the_handler_once(wx):
    await wx.say(OPENID, "预约洁牙")
    xml = text_xml(OPENID, "阿强", msg_id=987654321)
    replies = await asyncio.gather(*(wx.deliver(xml, OPENID) for _ in range(3)))
    assert len({r["Content"] for r in replies}) == 1
    assert replies[0]["Content"] == render("scan")
    assert (await wx.say(OPENID, "2")).startswith("DONE name=阿强 n=2")


@pytest.mark.survey
async def test_event_retries_are_deduplicated_without_msgid(wx_plain, services):
    xml = event_xml(OPENID, "CLICK", "BOOK_DENTAL", create_time=int(time.time()))
    a = await wx_plain.deliver(xml, OPENID)
    b = await wx_plain.deliver(xml, OPENID)
    assert a == b
    # one flow start, not two: the first answer is the name step
    assert (await wx_plain.say(OPENID, "小李")) == render("scan")


@pytest.mark.settings(reply_deadline_seconds=0.5)
@pytest.mark.survey
async def test_slow_handler_answers_success_then_pushes(http, services, sent):
    wx = WeChat(http, "plain")
    xml = text_xml(OPENID, "我的预约", msg_id=555)
    res = await wx.post(xml, OPENID)
    assert res.text == "success"
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.05)
    assert [m["body"] for m in sent] == [
        {"touser": OPENID, "msgtype": "text", "text": {"content": "SLOW REPLY"}}]
    retry = await wx.post(xml, OPENID)  # WeChat's retry after its 5 s
    assert retry.text == "success"
    await asyncio.sleep(0.1)
    assert len(sent) == 1


async def test_a_broken_store_gets_an_apology_not_a_500(wx_plain, pipeline, monkeypatch):
    def down(key, *_user):
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(pipeline.dedup, "claim", down)
    if hasattr(pipeline.dedup, "claim_prefetching"):  # Redis: the claim with the user's lock
        monkeypatch.setattr(pipeline.dedup, "claim_prefetching", down)

    async def adown(key, *_args):
        down(key)

    if hasattr(pipeline.dedup, "aclaim_prefetching"):  # Redis's, on the event loop
        monkeypatch.setattr(pipeline.dedup, "aclaim_prefetching", adown)
    reply = await wx_plain.deliver(text_xml(OPENID, "帮助"), OPENID)
    assert reply["Content"] == render("error")


async def test_a_retry_a_second_later_gets_the_very_same_reply(wx_plain):
    """WeChat retries after about 5 s: the retry gets the first reply byte for byte, its
    CreateTime included."""
    with time_machine.travel("2026-12-01 10:00:00+08:00", tick=False) as clock:
        xml = text_xml(OPENID, "帮助", msg_id=777000111)
        first = await wx_plain.post(xml, OPENID)
        clock.shift(5)
        retry = await wx_plain.post(xml, OPENID)
    assert retry.content == first.content
