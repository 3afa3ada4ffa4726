"""Outbound calls: every one has connect and read timeouts (the token fetch included), and
WeChat calls and SMS run on separate bounded lanes. Against a WeChat API that accepts
connections and never answers, the binding code still goes out at once."""
from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest
from sqlmodel import Session

from bot.app import create_app
from bot.domain.rules import load_rules
from bot.infra.services import Services
from tests.support import factories
from tests.conftest import WeChat
from tests.support.binding import walk

U = "oOutboundUser000000000001"


@pytest.fixture
def black_hole():
    """A loopback server that accepts every connection and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    srv.settimeout(0.1)
    held, stop = [], threading.Event()

    def run():
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    srv.close()


def test_a_silent_wechat_api_times_out(settings, black_hole):
    s = settings.model_copy(update={"wechat_api_base_url": black_hole,
                                    "outbound_connect_timeout": 0.5,
                                    "outbound_read_timeout": 0.5})
    svc = Services(s, load_rules(s.rules_file))
    out = {}

    def call():
        started = time.monotonic()
        try:
            svc.wechat.message.send_text(U, "hello")
        except Exception as exc:  # noqa: BLE001 - examined below
            out["error"] = exc
        out["seconds"] = time.monotonic() - started
    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(10)
    try:
        assert not t.is_alive(), "the token fetch never timed out"
        assert out["seconds"] < 3 and "Timeout" in str(out["error"])
    finally:
        if not t.is_alive():
            svc.close()


@pytest.mark.settings(sms_provider="http", sms_gateway_token="gw-token",
                      sms_gateway_url="http://127.0.0.1:1/never-used")
async def test_a_wedged_wechat_api_does_not_hold_up_sms(settings, black_hole, sms_gateway,
                                                        caplog):
    sms_gateway.state.sent.clear()
    sms_gateway.state.fail_next = 0
    s = settings.model_copy(update={
        "wechat_api_base_url": black_hole, "sms_gateway_url": sms_gateway.state.base_url + "/sms/send",
        "outbound_read_timeout": 1.0, "wechat_io_workers": 2, "outbound_queue_size": 4})
    app = create_app(s)
    services = app.state.services
    with Session(services.engine, expire_on_commit=False) as session:
        holder = factories.customer(session, name="王小明", phone="13912345678")
        session.commit()
    try:
        # Many pushes to WeChat, which accepts the connections and never answers.
        for _ in range(20):
            services.submit(lambda: services.wechat.message.send_text(U, "推送"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bot.test") as client:
            wx = WeChat(client, "plain")
            await walk(wx, U, "王小明", holder.id_number, "13912345678")
            asked = time.monotonic()
            while not sms_gateway.state.sent and time.monotonic() - asked < 5:
                time.sleep(0.02)
            assert sms_gateway.state.sent, "the binding code never went out"
            assert time.monotonic() - asked < 1.0
            [sms] = sms_gateway.state.sent
            assert sms["phone"] == "13912345678"
        assert any("wechat-io lane full" in r.getMessage() for r in caplog.records
                   if r.levelno >= logging.ERROR)
    finally:
        services.close()
