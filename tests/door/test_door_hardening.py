"""The door against a hostile network (issue 6, items 1-4): the account's message mode is
a setting, a signed (timestamp, nonce) cannot carry another body, signed but malformed XML
is refused before any handler, and slow or idle clients cannot hold the server."""
from __future__ import annotations

import logging
import resource
import socket
import time
from urllib.parse import urlencode

import httpx
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from bot.app import server_options
from bot.infra.config import SettingsError, load_settings
from bot.wechat.simulator import WeChatSide, cdata, text_xml
from models import WechatUser
from tests.conftest import AES_KEY, APP_ID, TOKEN, WeChat, _serve

OPENID = "oHarden00000000000000000001"
HELP_HEAD = "我可以帮您办理这些事"  # the first line of the help reply


def _no_user_stored(services) -> bool:
    with Session(services.engine) as s:
        return s.exec(select(WechatUser)).first() is None


# --- 1. The message mode is the account's setting -------------------------------------------


@pytest.mark.parametrize("mode", ["compatible", "safe"])
async def test_encrypted_modes_refuse_plain_requests(http, services, mode):
    """A plain request's signature covers token, timestamp and nonce, not the body: in
    compatible and safe mode it could carry anything, so it is refused."""
    plain = WeChat(http, "plain")
    res = await plain.post(text_xml(OPENID, "帮助"), OPENID)
    assert 400 <= res.status_code < 500
    assert _no_user_stored(services)
    # encrypt_type=aes without msg_signature, or with a body that carries no ciphertext
    params, body = WeChatSide(TOKEN, APP_ID, AES_KEY, mode).request(text_xml(OPENID, "帮助"))
    no_sig = {k: v for k, v in params.items() if k != "msg_signature"}
    assert (await http.post("/wechat", params=no_sig, content=body)).status_code == 400
    res = await http.post("/wechat", params=params, content=text_xml(OPENID, "帮助").encode())
    assert 400 <= res.status_code < 500
    assert _no_user_stored(services)
    # the genuine request of the mode is answered
    assert (await WeChat(http, mode).say(OPENID, "帮助")).startswith(HELP_HEAD)


@pytest.mark.settings(wechat_message_mode="compatible")
async def test_compatible_mode_trusts_only_the_ciphertext(http):
    side = WeChatSide(TOKEN, APP_ID, AES_KEY, "compatible")
    params, body = side.request(text_xml(OPENID, "帮助"))
    forged = body.decode().replace(cdata("帮助"), cdata("绑定"), 1).encode()  # the plaintext copy
    res = await http.post("/wechat", params=params, content=forged)
    assert res.status_code == 200
    assert side.read_reply(res.content)["Content"].startswith(HELP_HEAD)


def test_message_mode_setting_defaults_and_errors():
    base = dict(wechat_app_id="wx1", wechat_app_secret="s", wechat_token="tok",
                secret_key="a-secret-key-0123456789")
    assert load_settings(_env_file=None, **base).wechat_message_mode == "plain"
    with_key = load_settings(_env_file=None, **base, wechat_encoding_aes_key=AES_KEY)
    assert with_key.wechat_message_mode == "safe"
    assert load_settings(_env_file=None, **base, wechat_encoding_aes_key=AES_KEY,
                         wechat_message_mode="Plain").wechat_message_mode == "plain"
    for mode in ("compatible", "safe", "aes"):
        with pytest.raises(SettingsError) as err:
            load_settings(_env_file=None, **base, wechat_message_mode=mode)
        assert "WECHAT_MESSAGE_MODE" in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=None, **{k: v for k, v in base.items() if k != "secret_key"})
    assert "SECRET_KEY" in str(err.value)


def test_chat_follows_the_mode_setting(monkeypatch):
    import bot.wechat.chat
    from bot.cli import app

    seen = []
    monkeypatch.setattr(bot.wechat.chat, "run_chat", lambda s, url, openid, mode, **_: seen.append(mode))
    env = {"WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET": "s", "WECHAT_TOKEN": "tok",
           "SECRET_KEY": "a-secret-key-0123456789", "WECHAT_ENCODING_AES_KEY": AES_KEY}
    for mode, args in (("safe", []), ("compatible", []), ("plain", ["--mode", "plain"])):
        res = CliRunner().invoke(app, ["chat", *args], env={
            **env, "WECHAT_MESSAGE_MODE": "compatible" if mode == "compatible" else ""})
        assert res.exit_code == 0, res.output
    assert seen == ["safe", "compatible", "plain"]


# --- 2. A signed (timestamp, nonce) carries one body -----------------------------------------


async def test_same_timestamp_and_nonce_with_another_body_is_refused(wx_plain, services):
    params, body = wx_plain.side.request(text_xml(OPENID, "帮助"), OPENID)
    first = await wx_plain.client.post("/wechat", params=params, content=body)
    assert first.status_code == 200
    retry = await wx_plain.client.post("/wechat", params=params, content=body)
    assert retry.status_code == 200  # WeChat's retry: the first delivery's reply
    read = wx_plain.side.read_reply
    assert read(retry.content)["Content"] == read(first.content)["Content"]
    assert read(first.content)["Content"].startswith(HELP_HEAD)
    forged = text_xml(OPENID, "绑定").encode()  # the captured signature, another message
    res = await wx_plain.client.post("/wechat", params=params, content=forged)
    assert res.status_code == 403
    assert "绑定" not in res.text


async def test_a_refused_replay_takes_nothing_from_the_message_it_carried(wx_plain):
    """The forged body's message, refused under the captured signature, is not remembered
    as handled: sent for real (its own signature), it gets its own answer."""
    params, body = wx_plain.side.request(text_xml(OPENID, "帮助"), OPENID)
    assert (await wx_plain.client.post("/wechat", params=params, content=body)).status_code == 200
    forged = text_xml(OPENID, "帮助", msg_id=990077)
    res = await wx_plain.client.post("/wechat", params=params, content=forged.encode())
    assert res.status_code == 403
    reply = await wx_plain.deliver(forged, OPENID)
    assert reply["Content"].startswith(HELP_HEAD)


# --- 3. Signed but malformed XML ------------------------------------------------------------


def _xml(inner: str) -> str:
    return f"<xml>{inner}</xml>"


HEAD = ("<ToUserName><![CDATA[gh_vip]]></ToUserName><CreateTime>1700000000</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType>")
GOOD_FROM = f"<FromUserName>{OPENID}</FromUserName>"


@pytest.mark.parametrize("xml", [
    _xml(HEAD + GOOD_FROM + "<FromUserName>oOther</FromUserName><Content>帮助</Content><MsgId>1</MsgId>"),
    _xml(HEAD + GOOD_FROM + "<Content>帮助</Content><Content>绑定</Content><MsgId>2</MsgId>"),
    _xml(HEAD + GOOD_FROM + "<Content><b>帮助</b></Content><MsgId>3</MsgId>"),
    _xml(HEAD + GOOD_FROM + '<Content lang="zh">帮助</Content><MsgId>4</MsgId>'),
    _xml(HEAD + f'<FromUserName kind="x">{OPENID}</FromUserName><Content>帮助</Content><MsgId>5</MsgId>'),
    _xml(HEAD + GOOD_FROM + "<Content>帮助</Content><MsgId>abc</MsgId>"),
    _xml(HEAD + GOOD_FROM + "<Content>帮助</Content><MsgId>0</MsgId>"),
    _xml(HEAD + GOOD_FROM + "<Content>帮助</Content><MsgId>-7</MsgId>"),
    _xml(HEAD + GOOD_FROM + "<Content>帮助</Content><MsgId>" + "9" * 21 + "</MsgId>"),
    _xml(HEAD + GOOD_FROM + "<Content>帮助</Content><MsgId>" + "1" * 200 + "</MsgId>"),
    _xml(HEAD + GOOD_FROM + "<Content>帮助</Content><MsgId></MsgId>"),
    _xml(HEAD.replace("1700000000", "soon") + GOOD_FROM + "<Content>帮助</Content><MsgId>6</MsgId>"),
    _xml(HEAD + f"<FromUserName>{'o' * 65}</FromUserName><Content>帮助</Content><MsgId>7</MsgId>"),
    _xml(HEAD + "<FromUserName>o../../etc</FromUserName><Content>帮助</Content><MsgId>8</MsgId>"),
    _xml(HEAD + "<FromUserName>o用户</FromUserName><Content>帮助</Content><MsgId>9</MsgId>"),
    _xml(HEAD + "<FromUserName><a>o1</a></FromUserName><Content>帮助</Content><MsgId>10</MsgId>"),
    f'<xml id="1">{HEAD}{GOOD_FROM}<Content>帮助</Content><MsgId>11</MsgId></xml>',
    f"<root>{HEAD}{GOOD_FROM}<Content>帮助</Content><MsgId>12</MsgId></root>",
    _xml(HEAD + GOOD_FROM + "<MsgType>event</MsgType><Event>CLICK</Event>"),
])
@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_signed_but_malformed_xml_is_refused(wx, services, xml, caplog):
    with caplog.at_level(logging.WARNING):
        res = await wx.post(xml.replace("1700000000", str(int(time.time()))), OPENID)
    assert 400 <= res.status_code < 500, res.text
    assert _no_user_stored(services)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_largest_msg_id_fits_the_dedup_key(wx_plain):
    biggest = int("9" * 20)  # 20 digits: WeChat's ids are 64-bit
    reply = await wx_plain.deliver(text_xml(OPENID, "帮助", msg_id=biggest), OPENID)
    assert reply["Content"].startswith(HELP_HEAD)
    again = await wx_plain.deliver(text_xml(OPENID, "帮助", msg_id=biggest), OPENID)
    assert again == reply


# --- 4. Slow, broken and idle clients, on the real server -----------------------------------


@pytest.fixture
def live(app, settings):
    """The app served by uvicorn on a loopback port, with `serve`'s options."""
    server, thread = _serve(app, **{**server_options(settings), "log_level": "warning"})
    assert server.started
    yield int(app.state.base_url.rsplit(":", 1)[1])
    server.should_exit = True
    thread.join(10)


def _signed_head(side: WeChatSide, declared: int) -> bytes:
    params, _ = side.request("<xml/>")
    return (f"POST /wechat?{urlencode(params)} HTTP/1.1\r\nHost: bot\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {declared}\r\n\r\n").encode()


def _read_all(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    sock.settimeout(deadline)
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


@pytest.mark.settings(body_timeout_seconds=1)
def test_body_that_never_arrives_gets_408(live):
    side = WeChatSide(TOKEN)
    with socket.create_connection(("127.0.0.1", live)) as sock:
        started = time.monotonic()
        sock.sendall(_signed_head(side, 100) + b"<xml>")
        answer = _read_all(sock, 5)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert elapsed < 3


@pytest.mark.settings(keep_alive_seconds=1)
def test_idle_keep_alive_connection_is_closed(live):
    with socket.create_connection(("127.0.0.1", live)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nConnection: keep-alive\r\n\r\n")
        sock.settimeout(3)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        rest = _read_all(sock, 5)  # returns when the server closes the connection
        assert rest == b"" and time.monotonic() - started < 3


def test_client_gone_mid_body_is_one_log_line(live, services, caplog):
    side = WeChatSide(TOKEN)
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", live)) as sock:
            sock.sendall(_signed_head(side, 300) + b"<xml><ToUserName>")
            time.sleep(0.2)
        for _ in range(100):
            if any("disconnected" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.02)
        time.sleep(0.2)
    lines = [r for r in caplog.records if r.name.startswith(("bot", "uvicorn"))]
    assert [r.getMessage() for r in lines if "disconnected" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not lines[0].exc_info
    assert _no_user_stored(services)


def test_two_thousand_idle_connections_do_not_stop_a_message(live):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * 2000 + 500  # both ends live in this process
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, "raise ulimit -n"
    idle = []
    started = time.monotonic()
    try:
        for _ in range(2000):
            idle.append(socket.create_connection(("127.0.0.1", live), timeout=5))
        side = WeChatSide(TOKEN)
        params, body = side.request(text_xml(OPENID, "帮助"), OPENID)
        with httpx.Client(base_url=f"http://127.0.0.1:{live}", timeout=10) as client:
            assert client.get("/healthz").text == "ok"
            res = client.post("/wechat", params=params, content=body)
        assert res.status_code == 200
        assert side.read_reply(res.content)["Content"].startswith(HELP_HEAD)
        assert time.monotonic() - started < 30
    finally:
        for s in idle:
            s.close()
