"""Identity binding through /wechat: name, ID number, phone on file, SMS code; lock-out."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import time_machine
from sqlmodel import Session

from bot.infra.texts import render
from models import WechatUser
from tests.support import factories
from tests.support.binding import Codes, walk  # noqa: F401
from tests.support import ROOT

U = "oBindUser00000000000000001"
OTHER = "oBindUser00000000000000002"


@pytest.fixture
def holder(services):
    with Session(services.engine, expire_on_commit=False) as s:
        c = factories.customer(s, name="王小明", phone="13912345678")
        s.commit()
        return c


@pytest.fixture
def codes(services):
    return Codes(services)


async def test_binding_with_sms_code(wx, services, holder, codes):
    first = await wx.say(U, "绑定")
    # PIPL: what is collected, why, how long, and the policy, before the first question.
    assert "身份证号" in first and "隐私政策" in first and "同意" in first
    assert render("binding/ask_name") in await wx.say(U, "同意")
    assert await wx.say(U, "王小明") == render("binding/ask_id_number")
    assert await wx.say(U, holder.id_number.lower()) == render("binding/ask_phone")
    ask_code = await wx.say(U, "139 1234 5678")
    assert "139****5678" in ask_code and "13912345678" not in ask_code
    code = codes.next()
    assert services.sms.sent[-1][0] == "13912345678"
    done = await wx.say(U, code)
    assert "绑定成功！王先生" in done
    with Session(services.engine) as s:
        assert s.get(WechatUser, U).customer_id == holder.id
    assert "已绑定" in await wx.say(U, "绑定")


async def test_invalid_id_number_is_reprompted_without_counting(wx_plain, holder, services):
    await wx_plain.say(U, "绑定")
    await wx_plain.say(U, "同意")  # the privacy notice comes first
    await wx_plain.say(U, "王小明")
    bad = holder.id_number[:17] + ("0" if holder.id_number[17] != "0" else "1")
    reply = await wx_plain.say(U, bad)
    assert reply == render("flow/invalid", reason=render("binding/bad_id_number"),
                           prompt=render("binding/ask_id_number"))
    with Session(services.engine) as s:
        assert s.get(WechatUser, U).bind_failures == 0


async def test_mismatch_restarts_and_five_failures_lock_for_30_minutes(http, holder, services, codes):
    from tests.conftest import WeChat
    wx = WeChat(http, "plain")
    with time_machine.travel("2026-11-25 10:00:00+08:00", tick=True) as clock:
        for attempt in range(1, 5):
            reply = await walk(wx, U, "王小明", holder.id_number, "13900000000")
            assert f"还可再试 {5 - attempt} 次" in reply
            assert reply.endswith(render("binding/ask_name"))
            assert await wx.say(U, "退出")
        locked = await walk(wx, U, "王小明", holder.id_number, "13900000000")
        assert "暂停30分钟" in locked and "10:" in locked
        # even the right answers are refused while locked
        assert "暂停中" in await wx.say(U, "绑定")
        clock.shift(31 * 60)
        await walk(wx, U, "王小明", holder.id_number, "13912345678")
        assert "绑定成功" in await wx.say(U, codes.next())


async def test_wrong_codes_count_towards_the_lock(wx_plain, holder, services, codes):
    await walk(wx_plain, U, "王小明", holder.id_number, "13912345678")
    code = codes.next()
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1):
        assert f"还可再试 {left} 次" in await wx_plain.say(U, wrong)
    assert "暂停30分钟" in await wx_plain.say(U, wrong)
    assert "没有完全理解" in await wx_plain.say(U, code)  # the flow is over
    with Session(services.engine) as s:
        assert s.get(WechatUser, U).customer_id is None


async def test_one_customer_one_wechat_account(wx_plain, holder, services, codes):
    await walk(wx_plain, U, "王小明", holder.id_number, "13912345678")
    await wx_plain.say(U, codes.next())
    reply = await walk(wx_plain, OTHER, "王小明", holder.id_number, "13912345678")
    assert reply == render("binding/bound_elsewhere")
    # after unbinding on the first account, the second may bind
    assert "确定要解除" in await wx_plain.say(U, "解除绑定")
    assert await wx_plain.say(U, "确认解除") == render("binding/unbound")
    await walk(wx_plain, OTHER, "王小明", holder.id_number, "13912345678")
    assert "绑定成功" in await wx_plain.say(OTHER, codes.next())


@pytest.mark.settings(sms_provider="none")
async def test_without_sms_codes_binding_ends_at_the_phone(wx_plain, holder):
    reply = await walk(wx_plain, U, "王小明", holder.id_number, "13912345678")
    assert "绑定成功" in reply


async def test_replies_never_show_the_full_id_number(wx_plain, holder, services, codes):
    replies = [await walk(wx_plain, U, "王小明", holder.id_number, "13912345678"),
               await wx_plain.say(U, codes.next()), await wx_plain.say(U, "绑定")]
    assert all(holder.id_number not in r and "13912345678" not in r for r in replies)


async def test_unbind_when_not_bound(wx_plain):
    assert await wx_plain.say(U, "解绑") == render("binding/not_bound")


def _cli(db_url, *args):
    env = {**os.environ, "DATABASE_URL": db_url, "WECHAT_APP_ID": "wx1",
           "WECHAT_APP_SECRET": "s", "WECHAT_TOKEN": "tok", "REDIS_URL": "",
           "SECRET_KEY": "cli-secret-key-0123456789"}
    return subprocess.run([sys.executable, "main.py", *args], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=60)


def test_staff_bind_and_unbind_cli(db_url, holder, services):
    res = _cli(db_url, "bind", U, holder.id_number)
    assert res.returncode == 0, res.stderr
    assert holder.id_number not in res.stdout and "**" in res.stdout
    with Session(services.engine) as s:
        assert s.get(WechatUser, U).customer_id == holder.id
    res = _cli(db_url, "bind", OTHER, holder.id_number)
    assert res.returncode == 1 and "unbind it first" in res.stderr
    assert _cli(db_url, "unbind", U).returncode == 0
    assert _cli(db_url, "unbind", U).returncode == 1
    res = _cli(db_url, "bind", OTHER, "110105198001011234")
    assert res.returncode == 1 and "no policyholder" in res.stderr


@pytest.fixture
def gateway(sms_gateway):
    sms_gateway.state.sent.clear()
    sms_gateway.state.fail_next = 2  # two 503s first: the provider retries
    return sms_gateway


@pytest.mark.settings(sms_provider="http", sms_gateway_token="gw-token",
                      sms_gateway_url="http://127.0.0.1:1/never-used")
async def test_code_goes_through_the_http_gateway_with_retries(http, holder, gateway, settings):
    from bot.app import create_app
    from tests.conftest import WeChat

    app = create_app(settings.model_copy(update={
        "sms_gateway_url": gateway.state.base_url + "/sms/send"}))
    try:
        import httpx
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://bot.test") as client:
            wx = WeChat(client, "plain")
            await walk(wx, U, "王小明", holder.id_number, "13912345678")
            for _ in range(300):
                if gateway.state.sent:
                    break
                time.sleep(0.01)
            [sms] = gateway.state.sent
            assert sms["phone"] == "13912345678"
            code = "".join(ch for ch in sms["text"] if ch.isdigit())[:6]
            assert "绑定成功" in await wx.say(U, code)
    finally:
        app.state.services.close()


def test_staff_cli_refuses_bad_input_and_lists_staff(db_url):
    res = _cli(db_url, "staff", "add", "oStaff1", "--name", "林专员", "--role", "boss")
    assert res.returncode != 0 and "specialist or admin" in res.stderr
    res = _cli(db_url, "staff", "add", "oStaff1", "--name", "", "--role", "admin")
    assert res.returncode != 0
    assert "no staff yet" in _cli(db_url, "staff", "list").stdout
    assert _cli(db_url, "staff", "add", "oStaff1", "--name", "林专员", "--role", "admin").returncode == 0
    assert "oStaff1\tadmin\t林专员" in _cli(db_url, "staff", "list").stdout
    assert _cli(db_url, "staff", "remove", "oStaff2").returncode == 1
    assert _cli(db_url, "staff", "remove", "oStaff1").returncode == 0
