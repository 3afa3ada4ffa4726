"""The simulator's doors over HTTP: on only in the demo or against the loopback double,
every message signed (and encrypted) as WeChat's servers do, bad input answered clearly."""
from __future__ import annotations

import re

import httpx
import pytest

from bot.app import create_app
from bot.demo import load_demo
from bot.wechat.simulator_web import enabled, reply_parts
from menus import MENU

GOLD = "o_demo_gold"


@pytest.fixture
def demo(settings):
    load_demo(settings)
    return settings


@pytest.fixture
async def client(app, demo):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bot.test") as c:
        yield c


async def send(client, **message) -> httpx.Response:
    return await client.post("/simulator/send", json=message)


def text_of(reply: dict) -> str:
    return "".join(p.get("text") or p.get("tap") or p.get("link") or ""
                   for p in reply["reply"]["parts"])


# --- On and off -----------------------------------------------------------------------------


@pytest.mark.parametrize("url, on", [
    ("http://127.0.0.1:8000/wechat-double", True), ("http://127.5.0.9:9/", True),
    ("http://localhost:8000/wechat-double", True), ("http://[::1]:8000/", True),
    ("https://api.weixin.qq.com", False), ("http://10.0.0.1:8000/", False),
    ("http://128.0.0.1:8000/", False), ("http://localhost.example.com/", False)])
def test_on_only_when_the_api_is_a_double_on_this_machine(settings, url, on):
    assert enabled(settings.model_copy(update={"wechat_api_base_url": url,
                                               "wechat_double": False})) is on


async def served(settings, **changes):
    """The app on `settings` changed (the settings fixture points WeChat's API at the
    test's loopback double)."""
    app = create_app(settings.model_copy(update=changes))
    return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://bot.test")


async def test_against_wechat_itself_there_is_no_simulator(settings):
    app, http = await served(settings, wechat_api_base_url="https://api.weixin.qq.com",
                             wechat_double=False)
    async with http:
        for path in ("/simulator", "/simulator/inbox?openid=o_demo_gold",
                     "/simulator/static/simulator.js"):
            assert (await http.get(path)).status_code == 404, path
        res = await http.post("/simulator/send", json={"openid": GOLD, "kind": "text",
                                                       "content": "我的等级"})
        assert res.status_code == 404
    app.state.pipeline.close()


async def test_the_demo_has_the_simulator(settings):
    app, http = await served(settings, wechat_api_base_url="https://api.weixin.qq.com",
                             wechat_double=True)
    async with http:
        assert (await http.get("/simulator")).status_code == 200
    app.state.pipeline.close()


# --- The page ---------------------------------------------------------------------------------


async def test_the_page_has_the_menu_menu_push_sends_and_no_inline_script(client):
    res = await client.get(f"/simulator?openid={GOLD}")
    assert res.status_code == 200
    html = res.text
    for top, entries in MENU:
        assert f">{top}</button>" in html
        for name, key in entries:
            assert f'data-key="{key}">{name}</button>' in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/simulator/static/' in attrs and not body.strip()
                           for attrs, body in scripts)
    assert "style=" not in html and "<style" not in html
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert res.headers["cache-control"] == "no-store"
    assert "吴*（黄金）" in html and "吴芳" not in html  # names masked
    js = await client.get("/simulator/static/simulator.js")
    assert js.status_code == 200 and "innerHTML" not in js.text


async def test_a_new_follower_gets_a_fresh_openid(client):
    first = (await client.get("/simulator")).text
    second = (await client.get("/simulator?openid=new")).text
    ids = [re.search(r'data-openid="([^"]+)" data-new="1"', t).group(1) for t in (first, second)]
    assert ids[0] != ids[1] and all(i.startswith("o_sim_") for i in ids)


# --- Speaking as a customer -------------------------------------------------------------------


async def test_each_message_is_signed_and_encrypted_as_the_account_expects(client, mode):
    """The door takes only what WeChat's servers would send (in safe mode only AES)."""
    res = await send(client, openid=GOLD, kind="text", content="我的等级")
    assert res.status_code == 200
    assert "黄金" in text_of(res.json())


async def test_voice_is_its_recognition(client):
    res = await send(client, openid=GOLD, kind="voice", content="我的等级")
    assert "黄金" in text_of(res.json())


async def test_a_tap_sends_the_lines_id_as_wechat_does(client):
    """A tap is a text message with the tapped line's bizmsgmenuid: its text does not
    matter (随便 would not be understood as typed)."""
    first = (await send(client, openid=GOLD, kind="click", key="BOOK_DENTAL")).json()
    taps = [p for p in first["reply"]["parts"] if "tap" in p]
    me = next(p for p in taps if p["menu_id"] == "self")
    assert me["content"].startswith("本人")
    res = await send(client, openid=GOLD, kind="tap", content="随便", menu_id="self")
    assert "城市" in text_of(res.json())


async def test_a_new_follower_is_welcomed(client):
    res = await send(client, openid="o_sim_newcomer01", kind="subscribe")
    assert res.status_code == 200 and text_of(res.json())


@pytest.mark.parametrize("message, status", [
    ({"openid": GOLD, "kind": "text", "content": "好" * 600}, 200),
    ({"openid": GOLD, "kind": "text", "content": "好" * 601}, 400),
    ({"openid": GOLD, "kind": "text", "content": "  "}, 400),
    ({"openid": GOLD, "kind": "sing", "content": "la"}, 400),
    ({"openid": "o<script>", "kind": "text", "content": "hi"}, 400),
    ({"openid": GOLD, "kind": "click", "key": ""}, 400),
    ({"openid": GOLD, "kind": "click", "key": "K" * 129}, 400),
    (["not", "an", "object"], 400)])
async def test_bad_input_is_answered_clearly(client, message, status):
    res = await client.post("/simulator/send", json=message)
    assert res.status_code == status
    if status == 400:
        assert res.json()["error"]


async def test_only_the_page_itself_may_speak(client):
    message = {"openid": GOLD, "kind": "text", "content": "我的等级"}
    res = await client.post("/simulator/send", json=message,
                            headers={"Origin": "http://evil.example"})
    assert res.status_code == 403
    res = await client.post("/simulator/send", json=message, headers={"Origin": "http://bot.test"})
    assert res.status_code == 200 and "黄金" in text_of(res.json())


async def test_only_json_is_taken(client):
    res = await client.post("/simulator/send", content="openid=o_demo_gold&kind=text",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status_code == 415
    res = await client.post("/simulator/send", content="{not json",
                            headers={"Content-Type": "application/json"})
    assert res.status_code == 400


# --- What the bot pushed ----------------------------------------------------------------------


async def test_the_inbox_shows_only_what_reached_this_user(client, wechat_api, sent):
    sent += [
        {"api": "custom", "at": 1.0, "body": {"touser": GOLD, "msgtype": "text",
                                              "text": {"content": "您好<script>x</script>"}}},
        {"api": "custom", "at": 2.0, "body": {"touser": "o_demo_pearl", "msgtype": "text",
                                              "text": {"content": "别人的"}}},
        {"api": "template", "at": 3.0, "body": {
            "touser": GOLD, "template_id": "demo-booking-confirmed",
            "data": {"character_string1": {"value": "YY2612030001"},
                     "time3": {"value": "2026年12月7日 10:30"}}}},
        {"api": "mass", "at": 4.0, "reached": [GOLD, "o_demo_mass"],
         "body": {"filter": {"is_to_all": False, "tag_id": 100}, "msgtype": "text",
                  "text": {"content": "群发"}}},
        {"api": "mass", "at": 5.0, "reached": ["o_demo_mass"],
         "body": {"filter": {"is_to_all": False, "tag_id": 101}, "msgtype": "text",
                  "text": {"content": "不是给你的"}}}]
    got = (await client.get(f"/simulator/inbox?openid={GOLD}")).json()
    assert [m["seq"] for m in got["messages"]] == [0, 2, 3] and got["next"] == 5
    assert got["messages"][0]["parts"] == [{"text": "您好<script>x</script>"}]
    card = got["messages"][1]
    assert card["title"] == "预约成功通知"
    assert card["fields"] == [{"label": "预约编号", "value": "YY2612030001"},
                              {"label": "预约时间", "value": "2026年12月7日 10:30"}]
    assert got["messages"][2]["kind"] == "mass"
    later = (await client.get(f"/simulator/inbox?openid={GOLD}&after=3")).json()
    assert [m["seq"] for m in later["messages"]] == [3]


# --- Reading a reply ----------------------------------------------------------------------


def test_only_links_are_markup_in_a_reply():
    parts = reply_parts('请选择：\n<a href="weixin://bizmsgmenu?msgmenucontent=%E6%9C%AC%E4%BA%BA'
                        '&msgmenuid=self">1. 本人</a>\n<script>alert(1)</script>'
                        '<a href="javascript:alert(1)">点我</a><a href="https://x.cn/p">隐私</a>')
    assert parts == [{"text": "请选择：\n"},
                     {"tap": "1. 本人", "content": "本人", "menu_id": "self"},
                     {"text": "\n<script>alert(1)</script>"}, {"text": "点我"},
                     {"link": "隐私", "href": "https://x.cn/p"}]
