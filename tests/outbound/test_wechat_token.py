"""WeChat's access token against the loopback double: stable_token in WeChat's format, shared
by workers, and bounded retries when WeChat keeps answering 40001 (wechatpy's auto_retry
made hundreds of token fetches, then a RecursionError)."""
from __future__ import annotations

import logging
import threading

import httpx
import pytest

from bot.domain.rules import load_rules
from bot.infra import tokens
from bot.infra.services import Services
from bot.infra.wechat_api import WeChatApiError
from tests.conftest import APP_ID, APP_SECRET


@pytest.fixture
def worker(settings):
    """A worker's services (each call makes another, sharing the database and Redis)."""
    made = []

    def make(**overrides):
        s = settings.model_copy(update=overrides) if overrides else settings
        svc = Services(s, load_rules(s.rules_file))
        made.append(svc)
        return svc
    yield make
    for svc in made:
        svc.close()


def forced(double) -> int:
    return sum(f["force"] for f in double.state.token_fetches)


def in_thread(fn, timeout: float = 30):
    """Run fn in a thread: (result or exception); fails the test instead of hanging."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the call did not finish"
    return out


def test_the_double_serves_stable_token_in_wechats_format(double):
    url = double.state.base_url + "/cgi-bin/stable_token"
    body = {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET,
            "force_refresh": False}
    first = httpx.post(url, json=body).json()
    assert set(first) == {"access_token", "expires_in"} and first["expires_in"] > 7000
    assert httpx.post(url, json=body).json()["access_token"] == first["access_token"]
    double.state.force_interval = 0
    new = httpx.post(url, json={**body, "force_refresh": True}).json()["access_token"]
    assert new != first["access_token"] and first["access_token"] not in double.state.tokens
    assert httpx.post(url, json={**body, "secret": "wrong"}).json()["errcode"] == 40125
    double.state.force_interval = 30
    assert httpx.post(url, json={**body, "force_refresh": True}).json()["errcode"] == 45011


def test_a_rejected_token_is_refreshed_once_and_retried_once(double, worker):
    svc = worker()
    double.state.reject_all = True
    out = in_thread(lambda: svc.wechat.message.send_text("oUser1", "你好"))
    err = out.get("error")
    assert isinstance(err, WeChatApiError) and err.errcode == 40001, out
    fetches = [f["force"] for f in double.state.token_fetches]
    assert fetches == [False, True]  # one plain fetch, one forced refresh, no more

    # WeChat still refuses: no second forced refresh within 30 s, across workers too
    for other in (svc, worker()):
        out = in_thread(lambda: other.wechat.message.send_text("oUser1", "你好"))
        assert isinstance(out.get("error"), WeChatApiError)
        assert "at most one per 30 s" in str(out["error"])
    assert forced(double) == 1


def test_after_a_refresh_the_call_goes_through(double, worker):
    svc = worker()
    svc.wechat.message.send_text("oUser1", "one")
    double.state.force_interval = 0
    double.state.fail_next.append(42001)  # expired: refresh, retry, delivered
    svc.wechat.message.send_text("oUser1", "two")
    assert [m["body"]["text"]["content"] for m in double.state.sent] == ["one", "two"]
    assert forced(double) == 1


def test_workers_share_the_token_and_refresh_it_once(double, worker):
    a, b = worker(), worker()
    a.wechat.message.send_text("oUser1", "a")
    b.wechat.message.send_text("oUser1", "b")
    assert len(double.state.token_fetches) == 1  # b used the token a fetched

    double.state.revoke(double.state.issued[-1])  # WeChat now refuses the shared token
    double.state.force_interval = 0
    start = threading.Barrier(2)

    def send(svc, text):
        start.wait()
        svc.wechat.message.send_text("oUser1", text)
    threads = [threading.Thread(target=send, args=(svc, t)) for svc, t in ((a, "a2"), (b, "b2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(m["body"]["text"]["content"] for m in double.state.sent) == ["a", "a2", "b",
                                                                              "b2"]
    assert forced(double) == 1  # one worker refreshed, the other used its token


def test_forced_refreshes_stop_at_the_daily_cap(double, worker, monkeypatch, caplog):
    monkeypatch.setattr(tokens, "FORCE_INTERVAL", 0.0)
    double.state.force_interval = 0
    svc = worker(wechat_force_refresh_daily_cap=2)
    double.state.reject_all = True
    with caplog.at_level(logging.INFO):
        for _ in range(4):
            with pytest.raises(WeChatApiError):
                svc.wechat.message.send_text("oUser1", "x")
    assert forced(double) == 2
    assert sum("reached the daily cap of 2" in r.getMessage() for r in caplog.records) == 1
