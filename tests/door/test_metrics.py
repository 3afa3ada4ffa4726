"""Prometheus metrics at /metrics: off unless METRICS_ENABLED (404), behind METRICS_TOKEN when
set, and counting what went through the real doors (signed /wechat requests, the outbox
against the WeChat double, the tier job). Counters live as long as the test process: each
test compares a scrape before with one after."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from bot.infra import outbox
from bot.wechat.simulator import text_xml
from tests.support import ROOT

SH = timezone(timedelta(hours=8))


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    res = await http.get("/metrics", headers=headers)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/plain")
    return samples(res.text)


async def test_metrics_are_off_by_default(http, wx_plain):
    await wx_plain.say("oMetricsOff0001", "你好")
    res = await http.get("/metrics")
    assert res.status_code == 404
    assert "vipbot" not in res.text


@pytest.mark.settings(metrics_enabled=True)
async def test_messages_retries_and_refusals_are_counted(http, wx_plain):
    before = await scrape(http)
    user = "oMetricsCount001"
    for _ in range(3):
        assert await wx_plain.say(user, "帮助")  # answered
    xml = text_xml(user, "帮助", msg_id=987654321012)
    first = await wx_plain.deliver(xml, user)
    # WeChat's retries of the same MsgId: the same reply, counted as duplicates.
    for _ in range(2):
        assert (await wx_plain.deliver(xml, user))["Content"] == first["Content"]
    bad = await http.post("/wechat", params={"signature": "0" * 40, "timestamp": str(int(time.time())),
                                             "nonce": "n1"}, content=b"<xml/>")
    assert bad.status_code == 403
    after = await scrape(http)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("vipbot_messages_total", type="text", outcome="replied") == 4
    assert delta("vipbot_messages_total", type="text", outcome="duplicate") == 2
    assert delta("vipbot_dedup_hits_total", kind="message") == 2
    assert delta("vipbot_requests_refused_total", status="403") == 1
    assert delta("vipbot_handler_seconds_count", type="text") == 4
    # Every first delivery took less than the deadline: all in the 4 s bucket.
    assert delta("vipbot_handler_seconds_bucket", type="text", le="4.0") == 4
    # Which stores answer (the test run's: Redis when REDIS_URL is set).
    state = "redis" if os.environ.get("REDIS_URL") else "database"
    assert value(after, "vipbot_store_backend", store="state", backend=state) == 1


@pytest.mark.settings(metrics_enabled=True, metrics_token="scrape-token-123")
async def test_a_token_guards_the_metrics(http):
    assert (await http.get("/metrics")).status_code == 401
    assert (await http.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert "vipbot_messages" in (await http.get(
        "/metrics", headers={"Authorization": "Bearer scrape-token-123"})).text


def _queue(services, key: str, channel: str, recipient: str, payload: dict, age: float) -> None:
    created = datetime.now(SH) - timedelta(seconds=age)
    with Session(services.engine) as s:
        outbox.enqueue(s, kind="template" if channel == "wechat" else "sms", channel=channel,
                       recipient=recipient, payload=payload, key=key, now=created)
        s.commit()


@pytest.mark.settings(metrics_enabled=True)
async def test_outbox_backlog_and_send_errors(http, services, wechat_api, sent, sms_gateway):
    empty = await scrape(http)
    assert value(empty, "vipbot_outbox_backlog", channel="wechat", status="pending") == 0
    assert value(empty, "vipbot_outbox_oldest_pending_age_seconds", channel="wechat") == 0
    _queue(services, "metrics-t1", "wechat", "oMetricsOutbox01",
           {"template": {"template_id": "tpl", "data": {}}}, age=120)
    _queue(services, "metrics-t2", "wechat", "oMetricsOutbox02",
           {"template": {"template_id": "tpl", "data": {}}}, age=30)
    queued = await scrape(http)
    assert value(queued, "vipbot_outbox_backlog", channel="wechat", status="pending") == 2
    age = value(queued, "vipbot_outbox_oldest_pending_age_seconds", channel="wechat")
    assert 120 <= age < 180  # the older row's age, not the newer one's

    wechat_api.state.fail_next.extend([45009, 45009])  # WeChat's rate limit, twice
    sms_gateway.state.fail_next = 100
    _queue(services, "metrics-s1", "sms", "13812345678", {"text": "验证码 123456"}, age=5)
    from bot.domain import notify
    from bot.infra.outbox import Dispatcher
    from bot.infra.sms import HttpSms

    gateway = HttpSms(sms_gateway.state.base_url + "/sms/send", "gw-token")
    Dispatcher(services.engine, services.settings, services.wechat, gateway,
               prepare=notify.prepare).run_once()
    after = await scrape(http)
    assert (value(after, "vipbot_wechat_api_errors_total", code="45009")
            - value(queued, "vipbot_wechat_api_errors_total", code="45009")) == 2
    assert (value(after, "vipbot_sms_errors_total", kind="failed")
            - value(queued, "vipbot_sms_errors_total", kind="failed")) == 1
    sms_gateway.state.fail_next = 0
    # Retried later: still waiting, now backed off.
    assert value(after, "vipbot_outbox_backlog", channel="wechat", status="pending") == 2
    assert value(after, "vipbot_outbox_backlog", channel="sms", status="pending") == 1


@pytest.mark.settings(metrics_enabled=True)
async def test_the_tier_job_is_timed_and_counted(http, settings):
    from scheduler import run_tiers
    from sqlmodel import Session as S

    from bot.infra.db import make_engine
    from tests.support import factories

    engine = make_engine(settings.database_url)
    with S(engine) as s:  # a customer with 150,000 of premium in force: gold
        c = factories.customer(s, name="王五", tier="mass")
        factories.policy(s, c, "PMET0001", premium="150000",
                         effective=date(2020, 1, 10))
        s.commit()
    engine.dispose()
    before = await scrape(http)
    run_tiers(settings, date(2026, 12, 3))
    after = await scrape(http)
    assert (value(after, "vipbot_tier_job_seconds_count", scope="everyone")
            - value(before, "vipbot_tier_job_seconds_count", scope="everyone")) == 1
    assert (value(after, "vipbot_tier_job_customers_total", result="upgraded")
            - value(before, "vipbot_tier_job_customers_total", result="upgraded")) == 1
    assert value(after, "vipbot_tier_job_last_finished_timestamp_seconds") > time.time() - 60


def test_several_processes_add_up(tmp_path, db_url):
    """PROMETHEUS_MULTIPROC_DIR: two processes each answer a signed message; a third one's
    /metrics shows both."""
    script = textwrap.dedent(f"""
        import asyncio, sys, httpx
        sys.path.insert(0, {str(ROOT)!r})
        from tests.conftest import WeChat, _settings
        from bot.app import create_app
        settings = _settings({db_url!r}, metrics_enabled=True, wechat_message_mode="plain",
                             wechat_api_base_url="http://127.0.0.1:9/")
        app = create_app(settings)
        async def main():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://bot.test") as http:
                if sys.argv[1] == "say":
                    assert await WeChat(http).say("oMetricsProc" + sys.argv[2], "帮助")
                else:
                    print((await http.get("/metrics")).text)
        asyncio.run(main())
        app.state.pipeline.close()
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "REDIS_URL": ""}
    (tmp_path / "prom").mkdir()
    for n in ("0001", "0002"):
        subprocess.run([sys.executable, "-c", script, "say", n], env=env, check=True, cwd=ROOT,
                       timeout=120)
    out = subprocess.run([sys.executable, "-c", script, "scrape", ""], env=env, check=True,
                         cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert value(samples(out), "vipbot_messages_total", type="text", outcome="replied") == 2


def test_the_nginx_example_never_routes_metrics_publicly():
    """The README's nginx example: the public server block (listen 443) answers /metrics
    with 404 and proxies only /wechat and /healthz; /metrics is proxied only by a server
    block that allows a private network and denies everyone else."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = [part.split("```", 1)[0] for part in readme.split("```nginx")[1:]]
    nginx = next(e for e in examples if "listen 443" in e)  # the deployment's example
    blocks = nginx.split("\nserver {")[1:]
    public = [b for b in blocks if "listen 443" in b]
    assert len(public) == 1
    assert "location = /metrics { return 404; }" in public[0]
    proxied = re.findall(r"location = (\S+) \{\s*proxy_pass", public[0])
    assert proxied == ["/wechat", "/healthz"]
    private = [b for b in blocks if "location = /metrics { proxy_pass" in b]
    assert len(private) == 1 and "deny all;" in private[0] and "listen 443" not in private[0]
    assert re.search(r"allow 10\.\d+\.\d+\.\d+/\d+;", private[0])
