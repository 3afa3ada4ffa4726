"""Property-based tests (hypothesis) of /wechat and of the text router: whatever arrives, the
bot answers with a 2xx or a 4xx, never a 500, and nothing it logs is an error or a
traceback. Bounded in time: a fixed number of examples each, a deadline per example."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import date, datetime, timedelta, timezone
from itertools import count

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlmodel import Session

from bot.domain.accounts import bind
from bot.wechat.simulator import WeChatSide, cdata, event_xml, signature, text_xml
from tests.support import factories
from tests.conftest import AES_KEY, APP_ID, TOKEN

SH = timezone(timedelta(hours=8))
ERROR = "系统开了个小差"  # bot/templates/error.j2
BOUNDED = dict(max_examples=60, deadline=5000, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])
_ids = count(int(time.time() * 1000) * 1000 + 777)

# Characters XML 1.0 can carry (WeChat never sends others).
XML_CHAR = st.characters(blacklist_categories=("Cs",),
                         blacklist_characters="".join(map(chr, [*range(0, 9), 11, 12,
                                                                *range(14, 32), 0xFFFE, 0xFFFF])))
FIELDS = ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event",
          "EventKey", "Encrypt", "PicUrl", "MediaId", "Format", "Recognition", "Location_X",
          "Ticket", "Latitude", "ScanCodeInfo", "xml", "a"]
MSG_TYPES = ["text", "event", "image", "voice", "video", "location", "link", "shortvideo",
             "device_text", "TEXT", "", "x" * 40]


def _value():
    return st.one_of(st.text(XML_CHAR, max_size=60), st.integers(-2**70, 2**70).map(str),
                     st.sampled_from(["oUser0001", "subscribe", "CLICK", "qrscene_1", "1",
                                      "", " ", "&amp;", "<b>x</b>", "]]>", "&#0;", "&lt;"]))


def _element(name_st=st.sampled_from(FIELDS)):
    def render(parts):
        name, value, wrap, attr = parts
        body = cdata(value) if wrap else value  # raw text may break the XML: that is the point
        attrs = ' a="1"' if attr else ""
        return f"<{name}{attrs}>{body}</{name}>"
    return st.tuples(name_st, _value(), st.booleans(), st.integers(0, 9).map(lambda n: n == 0)
                     ).map(render)


@st.composite
def xmlish(draw):
    """Bodies shaped like WeChat's: mostly `<xml>` with known and unknown fields, some
    nested, duplicated, truncated or with declarations."""
    children = draw(st.lists(_element(), max_size=9))
    if draw(st.booleans()):
        children.append(f"<MsgType>{cdata(draw(st.sampled_from(MSG_TYPES)))}</MsgType>")
        children.append(f"<FromUserName>{cdata('oProp' + draw(st.text('abc09_-', max_size=12)))}"
                        "</FromUserName>")
        children.append(f"<CreateTime>{int(time.time())}</CreateTime>")
    if draw(st.integers(0, 4)) == 0:
        children.append(f"<ScanCodeInfo>{''.join(draw(st.lists(_element(), max_size=3)))}"
                        "</ScanCodeInfo>")
    body = "<xml>" + "".join(draw(st.permutations(children))) + "</xml>"
    cut = draw(st.integers(0, 12))
    if cut == 0:
        body = body[:draw(st.integers(0, len(body)))]
    elif cut == 1:
        body = '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e "x">]>' + body
    elif cut == 2:
        body = draw(st.text(XML_CHAR, max_size=200))
    return body


@pytest.fixture
def errors(caplog):
    """Log records at ERROR or with a traceback, since the last call."""
    caplog.set_level(logging.WARNING)

    def take() -> list[str]:
        bad = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
               if r.levelno >= logging.ERROR or r.exc_info]
        caplog.clear()
        return bad
    return take


class Client:
    """httpx on the app's ASGI door, driven from a loop of its own (hypothesis calls the
    check synchronously)."""

    def __init__(self, app) -> None:
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url="http://bot.test")

    def post(self, params: dict, body: bytes) -> httpx.Response:
        return self.loop.run_until_complete(self.http.post(
            "/wechat", params=params, content=body, headers={"Content-Type": "text/xml"}))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def client(app):
    c = Client(app)
    yield c
    c.close()


def _post(client, params: dict, body: bytes):
    return client.post(params, body)


def test_any_body_signed_or_not_gets_an_answer_never_a_500(client, errors):
    side = WeChatSide(TOKEN, APP_ID, AES_KEY, "plain")

    @hsettings(**BOUNDED)
    @given(body=st.one_of(xmlish(), st.binary(max_size=400)), signed=st.booleans())
    def check(body, signed):
        raw = body.encode() if isinstance(body, str) else body
        params, _ = side.request("", openid="oPropAny0001")
        if not signed:
            params["signature"] = secrets.token_hex(20)
        res = _post(client, params, raw)
        assert res.status_code in (200, 400, 403, 413), (res.status_code, res.text)
        if not signed:
            assert res.status_code in (400, 403)
        assert errors() == []

    check()


@pytest.mark.settings(wechat_message_mode="safe")
def test_any_ciphertext_in_safe_mode_is_refused_cleanly(client, errors):
    """An `Encrypt` that is not WeChat's (random text, base64 of random bytes), correctly
    signed with msg_signature: a 4xx, never a 500."""
    import base64

    @hsettings(**BOUNDED)
    @given(encrypt=st.one_of(st.text(XML_CHAR, min_size=1, max_size=200),
                             st.binary(min_size=1, max_size=300).map(
                                 lambda b: base64.b64encode(b).decode())))
    def check(encrypt):
        ts, nonce = str(int(time.time())), secrets.token_hex(5)
        params = {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                  "encrypt_type": "aes", "msg_signature": signature(TOKEN, ts, nonce, encrypt)}
        body = f"<xml><ToUserName>{cdata('gh_x')}</ToUserName><Encrypt>{cdata(encrypt)}</Encrypt></xml>"
        res = _post(client, params, body.encode())
        assert res.status_code in (400, 403), (res.status_code, res.text)
        assert errors() == []

    check()


def _bound_customer(services, openid: str) -> None:
    with Session(services.engine) as s:
        c = factories.customer(s, name="赵六", tier="gold")
        for k in range(3):
            factories.policy(s, c, f"PPROP{k}{openid[-6:]}", premium="50000",
                             effective=date(2020 + k, 3, 10))
        bind(s, openid, c, datetime.now(SH))
        s.commit()


WORDS = ["绑定", "我的等级", "预约洁牙", "预约体检", "取消预约", "我的预约", "返回", "退出", "取消",
         "帮助", "人工", "更多", "1", "2", "3", "是", "否", "明天", "下周一", "2027-01-05",
         "本人", "北京", "张三", "110105198005170011", "13812345678", "123456", "常见问题",
         "住院怎么报销", "#注册", "＃帮助"]


def test_any_text_from_any_customer_is_answered(client, services, errors):
    """Sequences of typed text (words the router knows, mixed with anything at all) from an
    unbound follower and from a bound gold customer, through flows and out of them: every
    message gets a 200 and a reply that is not the apology, and nothing is logged as an
    error."""
    side = WeChatSide(TOKEN, APP_ID, AES_KEY, "plain")
    bound = "oPropBound000001"
    _bound_customer(services, bound)
    texts = st.one_of(st.sampled_from(WORDS), st.text(XML_CHAR, min_size=1, max_size=80),
                      st.text(st.sampled_from("0123456789 -./年月日号点"), min_size=1, max_size=12))

    @hsettings(**BOUNDED)
    @given(who=st.sampled_from([bound, "oPropFollower001"]),
           said=st.lists(texts, min_size=1, max_size=6))
    def check(who, said):
        for content in said:
            params, body = side.request(text_xml(who, content, msg_id=next(_ids)), openid=who)
            res = _post(client, params, body)
            if not content.strip():
                # An empty Content is not a text message WeChat sends: a 400 is fine.
                assert res.status_code in (200, 400), res.text
                continue
            assert res.status_code == 200, (content, res.status_code, res.text)
            reply = side.read_reply(res.content)
            assert ERROR not in (reply.get("Content") or ""), (content, reply)
        # Leave any flow, so the next example starts from the menu as often as not.
        params, body = side.request(text_xml(who, "退出", msg_id=next(_ids)), openid=who)
        assert _post(client, params, body).status_code == 200
        assert errors() == []

    check()


def test_any_event_key_gets_an_answer(client, errors):
    side = WeChatSide(TOKEN, APP_ID, AES_KEY, "plain")

    @hsettings(**BOUNDED)
    @given(event=st.sampled_from(["CLICK", "VIEW", "subscribe", "unsubscribe", "SCAN",
                                  "LOCATION", "TEMPLATESENDJOBFINISH", "kf_close_session",
                                  "whatever"]),
           key=st.one_of(st.none(), st.text(XML_CHAR, max_size=130)))
    def check(event, key):
        who = "oPropEvent0001"
        params, body = side.request(event_xml(who, event, key), openid=who)
        res = _post(client, params, body)
        assert res.status_code in (200, 400), (event, key, res.status_code, res.text)
        if res.status_code == 200:
            assert ERROR not in (side.read_reply(res.content).get("Content") or "")
        assert errors() == []

    check()
