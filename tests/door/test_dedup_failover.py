"""WeChat's retries across a Redis outage: a message is handled once, whether its first
delivery and its retry were claimed in Redis and then in the database (Redis stopped in
between), or in the database and then in Redis (Redis back in between). Real Redis servers
of the test's own, stopped as a crash stops them; the database of the run (SQLite or
PostgreSQL)."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from bot.app import create_app
from bot.infra.texts import render
from bot.wechat.simulator import text_xml
from tests.conftest import WeChat

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")

USER = "oDedupFailover01"


class _Redis:
    def __init__(self, tmp_path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir, self.proc = tmp_path, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind",
                                      "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--dir", str(self.dir)], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    server = _Redis(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


async def _with_app(settings, redis_server, body):
    app = create_app(settings.model_copy(update={"redis_url": redis_server.url}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bot.test") as http:
            await body(app, WeChat(http, "plain"))
    finally:
        app.state.pipeline.close()


async def test_a_retry_after_redis_stopped_is_not_handled_again(settings, redis_server):
    """绑定 then 同意 (the binding flow asks for the name) on Redis; Redis dies; WeChat
    retries 同意. Handled again from the database (where this flow has no state), it would
    get another answer; it gets the first one."""
    async def body(app, wx):
        assert render("binding/privacy", url=settings.privacy_policy_url) in \
            await wx.say(USER, "绑定")
        xml = text_xml(USER, "同意", msg_id=55500011)
        first = await wx.post(xml, USER)
        assert render("binding/ask_name") in wx.side.read_reply(first.content)["Content"]
        redis_server.stop()
        retry = await wx.post(xml, USER)
        assert retry.status_code == 200
        assert retry.content == first.content  # the first reply, byte for byte
        assert app.state.pipeline.dedup.failover.down  # answered by the database
        # A new message is handled (from the database, where the flow is not known).
        assert await wx.say(USER, "帮助")

    await _with_app(settings, redis_server, body)


async def test_a_retry_after_redis_came_back_is_not_handled_again(settings, redis_server):
    """Redis dies; 绑定 then 同意 are handled on the database; Redis comes back; WeChat
    retries 同意. Handled again on Redis (where this flow has no state), it would get
    another answer; it gets the first one."""
    async def body(app, wx):
        assert await wx.say(USER, "帮助")
        redis_server.stop()
        assert render("binding/privacy", url=settings.privacy_policy_url) in \
            await wx.say(USER, "绑定")
        xml = text_xml(USER, "同意", msg_id=55500022)
        first = await wx.post(xml, USER)
        assert render("binding/ask_name") in wx.side.read_reply(first.content)["Content"]
        assert app.state.pipeline.dedup.failover.down
        redis_server.start()
        await asyncio.sleep(2.1)  # the stores try Redis again every two seconds
        assert await wx.say(USER, "帮助")  # a new message: Redis is used again
        assert not app.state.pipeline.dedup.failover.down
        retry = await wx.post(xml, USER)
        assert retry.status_code == 200
        assert retry.content == first.content

    await _with_app(settings, redis_server, body)


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"),
                    reason="PostgreSQL's connections")
async def test_postgresql_dropping_every_connection_costs_one_apology_then_recovers(app, wx_plain,
                                                                                   settings):
    """As a PostgreSQL restart does: every pooled connection is cut (there is no ping on
    checkout). The next message gets the apology, never a 500; the ones after are answered."""
    import psycopg

    for n in range(5):  # the pool holds connections now
        assert await wx_plain.say(f"{USER}{n}", "帮助")
    url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            ).fetchone()[0]
    assert cut >= 1
    replies = [await wx_plain.say(USER, "帮助") for _ in range(4)]
    assert replies[0] in (render("error"), replies[-1])  # at most the one apology
    assert replies[1:] == [replies[-1]] * 3 and replies[-1] != render("error")
