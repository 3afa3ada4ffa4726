"""/wechat, second hardening round: de-duplication per sender, odd event shapes, Redis lost
mid-run."""
from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time

import httpx
import pytest
from sqlmodel import Session

from bot.app import create_app
from bot.domain.accounts import bind
from bot.infra.texts import render
from bot.wechat.simulator import event_xml, text_xml
from tests.support import factories
from tests.conftest import WeChat, _free_port

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


# --- Redis lost while running ------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on a free loopback port, to stop and start again."""

    def __init__(self, tmp_path) -> None:
        self.port, self.dir, self.proc = _free_port(), tmp_path, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server",
                                      "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no",
                                      "--dir", str(self.dir)], stdout=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.kill()  # gone at once, its port closed, as a crashed Redis
        self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


HELP_HEAD = "我可以帮您办理这些事"  # the first line of the help reply


async def test_redis_lost_mid_run_falls_back_to_the_database(settings, own_redis, caplog):
    app = create_app(settings.model_copy(update={"redis_url": own_redis.url}))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bot.test") as http:
            wx = WeChat(http, "plain")
            assert (await wx.say(ALICE, "帮助")).startswith(HELP_HEAD)
            assert (await http.get("/readyz")).status_code == 200

            own_redis.stop()
            with caplog.at_level(logging.INFO):
                # Every message is answered, none with a 500 nor the apology; a flow keeps
                # its state (in the database now) from one message to the next.
                for n in range(3):
                    assert (await wx.say(BOB, "帮助")).startswith(HELP_HEAD)
                assert render("binding/privacy", url=settings.privacy_policy_url) in \
                    await wx.say(ALICE, "绑定")
                assert render("binding/ask_name") in await wx.say(ALICE, "同意")
                # A retry is still de-duplicated: the same reply, the handler once.
                xml = text_xml(BOB, "帮助", msg_id=987654321)
                first = await wx.post(xml, BOB)
                again = await wx.post(xml, BOB)
                assert first.status_code == again.status_code == 200
                assert again.content == first.content
                ready = await http.get("/readyz")
                assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]
            down = [r for r in caplog.records if "unreachable" in r.getMessage()
                    and r.name == "bot.conversation.stores"]
            assert len(down) == 1  # logged once, not once per message
            assert not [r for r in caplog.records if r.exc_info]

            caplog.clear()
            own_redis.start()
            await asyncio.sleep(2.1)  # the stores try Redis again every two seconds
            with caplog.at_level(logging.INFO):
                assert (await wx.say(BOB, "帮助")).startswith(HELP_HEAD)
                assert (await wx.say(BOB, "帮助")).startswith(HELP_HEAD)
            assert (await http.get("/readyz")).status_code == 200
            assert len([r for r in caplog.records if "answers again" in r.getMessage()]) == 1
            assert app.state.pipeline.dedup.failover.down is False
    finally:
        app.state.pipeline.close()


# --- A late reply survives a crash right after the handler's commit ----------------------------


@pytest.mark.settings(reply_deadline_seconds=0.5)
@pytest.mark.survey
async def test_a_late_reply_is_queued_with_the_handlers_commit(http, services, pipeline,
                                                              monkeypatch, sent):
    """The handler (the survey router's 我的预约: slower than the deadline) commits; the
    process dies right after (the test patches the seam, `_finish`, to die there). Its reply
    is in the outbox all the same, and goes out."""
    from models import Notification

    def crash(*_args, **_kw):
        raise SystemExit("killed right after the handler's commit")

    monkeypatch.setattr(pipeline, "_finish", crash)
    wx = WeChat(http, "plain")
    res = await wx.post(text_xml(ALICE, "我的预约", msg_id=31337), ALICE)
    assert res.text == "success"  # WeChat was answered at the deadline
    for _ in range(100):  # the handler finishes in the background, then "crashes"
        with Session(services.engine) as s:
            from sqlmodel import select
            row = s.exec(select(Notification).where(Notification.recipient == ALICE)).first()
        if row is not None:
            break
        await asyncio.sleep(0.05)
    assert row is not None and row.kind == "late_reply"
    services.dispatcher.drain()
    assert [m["body"]["text"]["content"] for m in sent if m["api"] == "custom"] == ["SLOW REPLY"]
