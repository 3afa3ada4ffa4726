"""Two workers behind one load balancer: WeChat's retry may reach the other worker while the
first is still handling the message. It still runs once, and both answer the same."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.app import build_pipeline, create_app
from bot.conversation.stores import SqlDedupStore
from bot.wechat.simulator import text_xml
from bot.infra.texts import render
from tests.conftest import REDIS_URL, USE_PG, WeChat
from tests.support.survey import survey_router

U = "oWorkerUser00000000000001"
pytestmark = pytest.mark.settings(wechat_message_mode="safe")


@pytest.fixture
async def two_workers(settings):
    workers = []
    for _ in range(2):
        pipe = build_pipeline(settings, survey_router())
        if not (USE_PG or REDIS_URL):  # embedded default: share dedup through the SQLite file
            pipe.dedup = SqlDedupStore(pipe.engine, settings.dedup_ttl_seconds)
        workers.append(pipe)
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, pipeline=s)),
                                 base_url="http://bot.test") for s in workers]
    yield [WeChat(c, "safe") for c in clients]
    for c, s in zip(clients, workers):
        await c.aclose()
        s.close()


async def test_retry_on_another_worker_runs_once(two_workers):
    a, b = two_workers
    await a.say(U, "预约洁牙")  # survey flow: asks for a name
    xml = text_xml(U, "小王", msg_id=4242424242)
    replies = await asyncio.gather(a.deliver(xml, U), b.deliver(xml, U), a.deliver(xml, U),
                                   b.deliver(xml, U))
    assert {r["Content"] for r in replies} == {render("scan")}
    assert (await b.say(U, "3")).startswith("DONE name=小王 n=3")


async def test_one_users_messages_on_two_workers_do_not_interleave(two_workers):
    a, b = two_workers
    await a.say(U, "预约洁牙")
    replies = await asyncio.gather(a.say(U, "甲"), b.say(U, "乙"))
    # exactly one became the name; the other was read as the next step's (invalid) answer
    assert sorted(replies) == sorted([render("scan"), render(
        "flow/invalid", reason=render("nothing_to_exit"), prompt=render("scan"))])
    assert (await a.say(U, "4")).startswith("DONE name=")
