"""The staff console's sign-in (issue 16): password sign-in, the session cookie, sign-out,
the lock-out per login and per address, CSRF, and the security headers."""
from __future__ import annotations

import pytest

from tests.support.console import ADMIN_LOGIN, PASSWORD, SPEC_LOGIN, add_staff, csrf_of, sign_in
from tests.support.staff import ADMIN, SPEC

pytestmark = pytest.mark.settings(admin_enabled=True)


@pytest.fixture
def staff(services):
    add_staff(services.engine, SPEC, "王专员", "specialist", SPEC_LOGIN)
    add_staff(services.engine, ADMIN, "赵主管", "admin", ADMIN_LOGIN)


async def test_sign_in_then_the_queue_then_sign_out(http, staff):
    first = await http.get("/admin/bookings", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/admin/login")
    res = await sign_in(http, SPEC_LOGIN)
    assert res.status_code == 303 and res.headers["location"] == "/admin/bookings"
    cookie = res.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    page = await http.get("/admin/bookings")
    assert page.status_code == 200 and "王专员" in page.text
    out = await http.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    again = await http.get("/admin/bookings", follow_redirects=False)
    assert again.status_code == 303


import logging
import re
from datetime import timedelta

import time_machine
from sqlmodel import Session, select

from bot.domain import staff_login
from models import Staff, StaffAudit, StaffSession
from tests.support.console import post
from tests.support import ROOT

T0 = "2026-11-25 10:00:00+08:00"
WRONG = "登录名或密码不正确"


async def test_a_wrong_password_an_unknown_login_and_the_right_one(http, staff, caplog):
    caplog.set_level(logging.WARNING)
    wrong = await sign_in(http, SPEC_LOGIN, "not the password")
    assert wrong.status_code == 401 and WRONG in wrong.text
    assert "vip_admin=" not in wrong.headers.get("set-cookie", "")
    nobody = await sign_in(http, "nobody", PASSWORD)
    assert nobody.status_code == 401 and WRONG in nobody.text
    assert "not the password" not in caplog.text and PASSWORD not in caplog.text
    assert "console sign-in refused for login 'wangzy'" in caplog.text
    assert (await sign_in(http, SPEC_LOGIN.upper())).status_code == 303  # names: any case


async def test_the_lock_out_per_login_at_both_sides_of_its_edge(http, staff, services):
    limit = services.settings.admin_login_max_failures  # 5 by default
    with time_machine.travel(T0, tick=False):
        for _ in range(limit - 1):
            assert (await sign_in(http, SPEC_LOGIN, "wrong-password")).status_code == 401
        # One failure short of the limit: the right password still signs in.
        assert (await sign_in(http, SPEC_LOGIN)).status_code == 303
        await http.post("/admin/logout", data={"csrf": csrf_of(
            (await http.get("/admin/bookings")).text)})
        http.cookies.clear()
        # The limit-th failure within the window locks the login …
        for _ in range(limit):
            assert (await sign_in(http, ADMIN_LOGIN, "wrong-password")).status_code == 401
        locked = await sign_in(http, ADMIN_LOGIN)
        # … and a locked login gets exactly the wrong-password answer, right password or not.
        assert locked.status_code == 401 and WRONG in locked.text
        assert "锁定" in locked.text and "vip_admin=" not in locked.headers.get("set-cookie", "")
    minutes = services.settings.admin_login_lock_minutes
    with time_machine.travel(datetime_of(T0) + timedelta(minutes=minutes) - timedelta(seconds=5),
                             tick=False):
        assert (await sign_in(http, ADMIN_LOGIN)).status_code == 401
    with time_machine.travel(datetime_of(T0) + timedelta(minutes=minutes, seconds=1), tick=False):
        assert (await sign_in(http, ADMIN_LOGIN)).status_code == 303


async def test_the_lock_out_per_address_covers_every_login(http, staff, services):
    limit = services.settings.admin_login_max_failures
    with time_machine.travel(T0, tick=False):
        for n in range(limit):  # one guess each at many names, from one address
            assert (await sign_in(http, f"guess{n}", "wrong-password")).status_code == 401
        assert (await sign_in(http, SPEC_LOGIN)).status_code == 401


def datetime_of(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


async def test_a_session_ends_after_30_idle_minutes_and_12_hours_at_most(http, staff, services):
    start = datetime_of(T0)
    with time_machine.travel(start, tick=False):
        await sign_in(http, SPEC_LOGIN)
    with time_machine.travel(start + timedelta(minutes=29), tick=False):
        assert (await http.get("/admin/bookings")).status_code == 200  # the idle clock restarts
    with time_machine.travel(start + timedelta(minutes=29 + 31), tick=False):
        assert (await http.get("/admin/bookings", follow_redirects=False)).status_code == 303
    http.cookies.clear()
    with time_machine.travel(start, tick=False):
        await sign_in(http, SPEC_LOGIN)
    for n in range(1, 36):  # busy all day (every 20 minutes until 11:40): never idle
        with time_machine.travel(start + timedelta(minutes=20 * n), tick=False):
            assert (await http.get("/admin/calendar")).status_code == 200
    with time_machine.travel(start + timedelta(hours=12, minutes=1), tick=False):
        assert (await http.get("/admin/calendar", follow_redirects=False)).status_code == 303


async def test_sign_out_and_a_password_change_end_the_session_on_the_server(http, staff, services):
    await sign_in(http, SPEC_LOGIN)
    cookie = http.cookies.get("vip_admin")
    page = await http.get("/admin/bookings")
    await http.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    http.cookies.set("vip_admin", cookie, path="/admin")  # a copy of the old cookie
    assert (await http.get("/admin/bookings", follow_redirects=False)).status_code == 303
    http.cookies.clear()
    await sign_in(http, SPEC_LOGIN)
    assert (await http.get("/admin/bookings")).status_code == 200
    with Session(services.engine) as s:  # `staff passwd` (or an admin's reset)
        member = s.get(Staff, SPEC)
        staff_login.set_password(s, "cli", member, "a new password 7", services.now())
        s.commit()
    assert (await http.get("/admin/bookings", follow_redirects=False)).status_code == 303
    assert (await sign_in(http, SPEC_LOGIN, PASSWORD)).status_code == 401
    assert (await sign_in(http, SPEC_LOGIN, "a new password 7")).status_code == 303


async def test_an_admin_resets_a_password_and_removes_a_colleague(http, staff, services):
    other = __import__("httpx").AsyncClient(transport=http._transport, base_url="http://bot.test")
    async with other:
        await sign_in(other, SPEC_LOGIN)
        assert (await other.get("/admin/bookings")).status_code == 200
        await sign_in(http, ADMIN_LOGIN)
        reset = await post(http, "/admin/staff", f"/admin/staff/{SPEC}/password", {})
        assert reset.status_code == 200 and "临时密码" in reset.text
        temporary = re.search(r"临时密码（只显示这一次）：<strong>(\w+)</strong>", reset.text)[1]
        assert (await other.get("/admin/bookings", follow_redirects=False)).status_code == 303
        assert (await sign_in(other, SPEC_LOGIN, temporary)).status_code == 303
        gone = await post(http, "/admin/staff", f"/admin/staff/{SPEC}/remove", {})
        assert gone.status_code == 200 and "已停用" in gone.text
        assert (await other.get("/admin/bookings", follow_redirects=False)).status_code == 303
        invite = await post(http, "/admin/staff", "/admin/staff/invite",
                            {"name": "钱专员", "role": "specialist"})
        assert re.search(r"#注册 [A-Z2-9]{10}", invite.text)
    with Session(services.engine) as s:
        assert s.get(Staff, SPEC) is None
        actions = [a.action for a in s.exec(select(StaffAudit)).all()]
    assert {"staff_passwd", "staff_remove", "invite"} <= set(actions)


@pytest.mark.settings(admin_enabled=True, public_base_url="https://bot.example.com")
async def test_cookies_are_secure_on_https(app, staff):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://bot.example.com") as client:
        form = await client.get("/admin/login")
        assert "Secure" in form.headers["set-cookie"]
        res = await sign_in(client, SPEC_LOGIN)
    assert res.status_code == 303 and "Secure" in res.headers["set-cookie"]


async def test_sign_in_redirects_only_inside_the_console(http, staff):
    form = await http.get("/admin/login")
    for target, expected in (("/admin/messages", "/admin/messages"),
                             ("https://evil.example/", "/admin/bookings"),
                             ("//evil.example/admin/", "/admin/bookings")):
        http.cookies.delete("vip_admin")
        form = await http.get("/admin/login")
        res = await http.post("/admin/login", data={"login": SPEC_LOGIN, "password": PASSWORD,
                                                    "csrf": csrf_of(form.text), "next": target})
        assert res.headers["location"] == expected


def _cli(db_url, *args, stdin: str = ""):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": db_url, "WECHAT_APP_ID": "wx1",
           "WECHAT_APP_SECRET": "s", "WECHAT_TOKEN": "tok", "REDIS_URL": "",
           "SECRET_KEY": "test-secret-key-0123456789abcdef"}
    return subprocess.run([sys.executable, "main.py", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=60,
                          cwd=str(ROOT))


async def test_staff_add_with_a_login_and_passwd_then_sign_in(http, db_url, services):
    pw = "cli password 99\n"
    res = _cli(db_url, "staff", "add", "oCliAdmin000000000000001", "--name", "Li Lei",
               "--role", "admin", "--password", stdin=pw + pw)
    assert res.returncode == 0, res.stderr
    assert "console login lilei" in res.stdout  # the default, from the name
    taken = _cli(db_url, "staff", "add", "oCliSpec0000000000000001", "--name", "孙专员",
                 "--role", "specialist", "--login", "LiLei")
    assert taken.returncode == 1 and "taken" in taken.stderr
    named = _cli(db_url, "staff", "add", "oCliSpec0000000000000001", "--name", "孙专员",
                 "--role", "specialist", "--login", "sun.zy")
    assert named.returncode == 0 and "console login sun.zy" in named.stdout
    assert "sun.zy" in _cli(db_url, "staff", "list").stdout
    assert (await sign_in(http, "lilei", "cli password 99")).status_code == 303
    assert (await http.get("/admin/staff")).status_code == 200
    new = "another pass 11\n"
    assert _cli(db_url, "staff", "passwd", "oCliAdmin000000000000001",
                stdin=new + new).returncode == 0
    assert (await http.get("/admin/staff", follow_redirects=False)).status_code == 303
    assert (await sign_in(http, "lilei", "another pass 11")).status_code == 303


async def test_the_demo_admin_signs_in_with_the_printed_login(http, settings):
    from bot.demo import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD, load_demo

    report = load_demo(settings)
    assert f"{DEMO_ADMIN_LOGIN} / {DEMO_ADMIN_PASSWORD} (admin)" in report
    assert (await sign_in(http, DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD)).status_code == 303
    assert (await http.get("/admin/broadcasts")).status_code == 200


def test_env_example_turns_the_console_on():
    from pathlib import Path

    text = (ROOT / ".env.example").read_text()
    assert "\nADMIN_ENABLED=true\n" in text


@pytest.mark.settings(admin_enabled=True, public_base_url="http://bot.test")
async def test_a_one_time_link_from_wechat_signs_in_once_within_5_minutes(http, wx_plain, staff,
                                                                          services):
    from models import StaffSigninLink

    def link_in(reply: str) -> str:
        found = re.search(r"http://bot\.test(/admin/login/link\?t=[\w-]+)", reply)
        assert found, reply
        return found.group(1)

    async def use(path: str):
        form = await http.get(path)
        assert form.status_code == 200 and "一次性链接" in form.text
        token = path.split("t=", 1)[1]
        return await http.post("/admin/login/link", data={"t": token,
                                                          "csrf": csrf_of(form.text)})

    start = datetime_of(T0)
    with time_machine.travel(start, tick=False):
        reply = await wx_plain.say(SPEC, "#登录")
        assert "5分钟内有效" in reply
        first = link_in(reply)
        second = link_in(await wx_plain.say(SPEC, "#登录"))
    with Session(services.engine) as s:  # only HMACs are kept
        hashes = [r.token_hash for r in s.exec(select(StaffSigninLink)).all()]
    assert len(hashes) == 2 and not any(first.split("t=")[1] in h for h in hashes)
    with time_machine.travel(start + timedelta(minutes=4, seconds=59), tick=False):
        ok = await use(first)
        assert ok.status_code == 303 and ok.headers["location"] == "/admin/bookings"
        assert "王专员" in (await http.get("/admin/bookings")).text
        http.cookies.clear()
        again = await use(first)  # one use
        assert again.status_code == 401 and "已使用或已过期" in again.text
    with time_machine.travel(start + timedelta(minutes=5, seconds=1), tick=False):
        late = await use(second)
        assert late.status_code == 401
        assert (await use("/admin/login/link?t=made-up-token")).status_code == 401
    # Customers and strangers never get one: #登录 is ordinary text for them.
    assert "登录链接" not in await wx_plain.say("oStaffNobody0000000000001", "#登录")
