"""Binding under attack and at its edges (issue 6, items 5-9): counters that are always
stored, limits per customer and per phone, nothing readable at rest, full-width input,
and every timer at its edge with a controlled clock."""
from __future__ import annotations

import time
from datetime import datetime

import pytest
import time_machine
from sqlalchemy import text
from sqlmodel import Session

from bot.conversation.stores import Record, SqlStateStore
from bot.infra.texts import render
from models import WechatUser
from tests.conftest import REDIS_URL
from tests.support.binding import Codes, walk

A = "oLimitUser0000000000000001"
B = "oLimitUser0000000000000002"
C = "oLimitUser0000000000000003"
NAME, PHONE = "王小明", "13912345678"
T0 = datetime.fromisoformat("2026-11-25T10:00:00+08:00")

# The numbers, not the code's
CODE_TTL, RESEND_AFTER, LOCK = 300, 60, 30 * 60


@pytest.fixture
def holder(services):
    from tests.support import factories

    with Session(services.engine, expire_on_commit=False) as s:
        c = factories.customer(s, name=NAME, phone=PHONE)
        s.commit()
        return c


@pytest.fixture
def codes(services):
    return Codes(services)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def _sent(services, n: int) -> int:
    for _ in range(200):
        if len(services.sms.sent) >= n:
            break
        time.sleep(0.01)
    time.sleep(0.05)
    return len(services.sms.sent)


# --- 5. A failed first transaction does not bypass the lock ----------------------------------


async def test_failed_first_transaction_still_counts_wrong_codes(wx_plain, holder, codes,
                                                                 services, monkeypatch):
    import bot.conversation.engine as engine

    real = engine.dispatch
    calls = []

    def first_fails(ctx):
        calls.append(ctx.openid)
        if len(calls) == 1:
            raise RuntimeError("injected: the new user's first transaction fails")
        return real(ctx)

    monkeypatch.setattr(engine, "dispatch", first_fails)
    assert await wx_plain.say(A, "你好") == render("error")
    await walk(wx_plain, A, NAME, holder.id_number, PHONE)
    wrong = _wrong(codes.next())
    replies = [await wx_plain.say(A, wrong) for _ in range(6)]
    for left, reply in zip((4, 3, 2, 1), replies):
        assert f"还可再试 {left} 次" in reply
    assert "暂停30分钟" in replies[4]
    assert "绑定成功" not in replies[5] and render("error") != replies[5]
    assert "暂停中" in await wx_plain.say(A, "绑定")  # the sixth and later: refused by the lock
    with Session(services.engine) as s:
        user = s.get(WechatUser, A)
        assert user.customer_id is None and user.bind_locked_until is not None


# --- 6. Limits per phone and per customer -----------------------------------------------------


async def test_codes_per_phone_per_hour_and_per_day(wx_plain, holder, services):
    with time_machine.travel(T0, tick=False) as clock:
        for hour in range(2):
            for i in range(5):  # five rounds an hour, from two WeChat accounts
                who = (A, B)[i % 2]
                assert "验证码已发送至" in await walk(wx_plain, who, NAME, holder.id_number, PHONE)
                await wx_plain.say(who, "退出")
            assert _sent(services, 5 * (hour + 1)) == 5 * (hour + 1)
            refused = await walk(wx_plain, C, NAME, holder.id_number, PHONE)
            assert refused == render("binding/sms_limit", minutes=60)
            assert _sent(services, 5 * (hour + 1) + 1) == 5 * (hour + 1)
            clock.shift(3600)
        # ten codes today: the daily limit holds after the hour has passed, until the day has
        refused = await walk(wx_plain, C, NAME, holder.id_number, PHONE)
        assert refused == render("binding/sms_limit", minutes=22 * 60)
        assert _sent(services, 11) == 10
        clock.shift(22 * 3600)
        assert "验证码已发送至" in await walk(wx_plain, C, NAME, holder.id_number, PHONE)
        assert _sent(services, 11) == 11


async def test_wrong_codes_from_several_accounts_lock_the_customer(wx_plain, holder, services, codes):
    with time_machine.travel(T0, tick=False) as clock:
        await walk(wx_plain, A, NAME, holder.id_number, PHONE)
        wrong = _wrong(codes.next())
        for left in (4, 3, 2):
            assert f"还可再试 {left} 次" in await wx_plain.say(A, wrong)
        await walk(wx_plain, B, NAME, holder.id_number, PHONE)
        wrong = _wrong(codes.next())
        assert "还可再试 1 次" in await wx_plain.say(B, wrong)  # the customer's fourth
        assert "暂停30分钟" in await wx_plain.say(B, wrong)  # the customer's fifth
        # a third account with every answer right is told how long to wait
        refused = await walk(wx_plain, C, NAME, holder.id_number, PHONE)
        until = datetime.fromisoformat("2026-11-25T02:30:00+00:00")  # 10:30 in Shanghai
        assert refused == render("binding/customer_locked", minutes=30, until=until)
        assert "10:30 后" in refused
        assert _sent(services, 3) == 2  # and no code was sent for it
        clock.shift(LOCK)
        await walk(wx_plain, C, NAME, holder.id_number, PHONE)
        assert "绑定成功" in await wx_plain.say(C, codes.next())


async def test_strangers_mistyping_do_not_lock_the_customer(wx_plain, holder, codes):
    for who in (A, B):
        for _ in range(5):
            await walk(wx_plain, who, NAME, holder.id_number, "13900000000")  # wrong phone
            await wx_plain.say(who, "退出")
        await walk(wx_plain, who, "王大明", holder.id_number, PHONE)  # wrong name
    await walk(wx_plain, C, NAME, holder.id_number, PHONE)
    assert "绑定成功" in await wx_plain.say(C, codes.next())


async def test_bound_elsewhere_counts_against_the_customer(wx_plain, holder, codes):
    await walk(wx_plain, A, NAME, holder.id_number, PHONE)
    assert "绑定成功" in await wx_plain.say(A, codes.next())
    for _ in range(5):
        assert await walk(wx_plain, B, NAME, holder.id_number, PHONE) == render("binding/bound_elsewhere")
    assert await wx_plain.say(A, "解除绑定")
    assert await wx_plain.say(A, "确认解除") == render("binding/unbound")
    refused = await walk(wx_plain, B, NAME, holder.id_number, PHONE)
    assert "暂停" in refused and "分钟" in refused


# --- 7. Nothing readable at rest ----------------------------------------------------------------


async def test_flow_state_holds_no_identity_data(wx_plain, holder, pipeline, services, codes):
    await walk(wx_plain, A, NAME, holder.id_number, PHONE)
    code = codes.next()
    with services.engine.connect() as conn:
        stored = pipeline.states.load(A, conn)
    raw = stored.dumps()
    assert stored.state == "binding:code" and stored.data["customer_id"] == holder.id
    for secret in (NAME, holder.id_number, PHONE, PHONE[-4:], holder.id_number[-6:], code):
        assert secret not in raw
    if REDIS_URL:  # the bytes Redis holds, too
        key = services.settings.redis_prefix + "state:" + A
        held = b"".join(pipeline.states.primary._r.hgetall(key).values())
        assert held and all(secret.encode() not in held
                            for secret in (NAME, holder.id_number, PHONE, code))
    with services.engine.connect() as conn:
        rows = " ".join(map(str, conn.execute(text("SELECT * FROM bind_limit")).all()))
        rows += " ".join(map(str, conn.execute(text("SELECT * FROM fsm_state")).all()))
    assert PHONE not in rows and holder.id_number not in rows and code not in rows


async def test_redis_state_expires_soon_after_the_flow_timeout(wx_plain, holder, pipeline, services):
    from bot.conversation.stores import RedisStateStore

    states = getattr(pipeline.states, "primary", pipeline.states)  # Redis, the database behind
    if not isinstance(states, RedisStateStore):
        assert not REDIS_URL  # SQLite run: the SQL flavour is covered by the purge test below
        return
    await wx_plain.say(A, "绑定")
    await wx_plain.say(A, "同意")  # the privacy notice comes first
    ttl = states._r.ttl(services.settings.redis_prefix + "state:" + A)
    timeout = services.settings.flow_timeout_minutes * 60
    assert timeout < ttl <= timeout + 600


def test_daily_job_purges_idle_sql_state(settings, engine):
    from scheduler import add_jobs, run_daily

    store = SqlStateStore(engine)
    now = time.time()
    timeout = settings.flow_timeout_minutes * 60
    with engine.begin() as conn:
        store.save("abandoned", Record("binding:code", {"customer_id": 1}, [], now - timeout - 1), conn)
        store.save("active", Record("binding:code", {"customer_id": 2}, [], now - timeout + 60), conn)
    report = run_daily(settings, datetime.now(settings.tz).date())
    assert "1 idle conversation record" in report
    with engine.connect() as conn:
        keys = {r[0] for r in conn.execute(text("SELECT key FROM fsm_state"))}
    assert keys == {"active"}
    # and the scheduler's daily job is that function
    from apscheduler.schedulers.background import BackgroundScheduler
    job = add_jobs(BackgroundScheduler(timezone=settings.tz), settings).get_job("tiers")
    assert job.func.__name__ == "daily"


# --- 8. Full-width and spaced input --------------------------------------------------------------


async def test_full_width_and_spaced_input(wx_plain, holder, services, codes):
    n = holder.id_number
    spaced = f"{n[:6]} {n[6:14]} {n[14:]}"
    full_width_phone = "".join(chr(ord(ch) + 0xFEE0) for ch in PHONE)
    await wx_plain.say(A, "绑定")
    await wx_plain.say(A, "同意")  # the privacy notice comes first
    await wx_plain.say(A, NAME)
    assert await wx_plain.say(A, spaced) == render("binding/ask_phone")
    assert "139****5678" in await wx_plain.say(A, f"{full_width_phone[:3]}　{full_width_phone[3:]}")
    code = codes.next()
    assert "绑定成功" in await wx_plain.say(A, "".join(chr(ord(ch) + 0xFEE0) for ch in code))
    with Session(services.engine) as s:
        assert s.get(WechatUser, A).bind_failures == 0


# --- 9. Timers at their edges ----------------------------------------------------------------------


@pytest.mark.parametrize("after,accepted", [(CODE_TTL, True), (CODE_TTL + 1, False)])
async def test_code_lifetime_edge(wx_plain, holder, codes, after, accepted):
    with time_machine.travel(T0, tick=False) as clock:
        await walk(wx_plain, A, NAME, holder.id_number, PHONE)
        code = codes.next()
        clock.shift(after)
        reply = await wx_plain.say(A, code)
    if accepted:
        assert "绑定成功" in reply
    else:
        assert render("binding/code_expired") in reply


@pytest.mark.parametrize("after,allowed", [(RESEND_AFTER - 1, False), (RESEND_AFTER, True)])
async def test_resend_edge(wx_plain, holder, services, codes, after, allowed):
    with time_machine.travel(T0, tick=False) as clock:
        await walk(wx_plain, A, NAME, holder.id_number, PHONE)
        codes.next()
        clock.shift(after)
        reply = await wx_plain.say(A, "重发")
        if allowed:
            assert reply.startswith(render("binding/resent", phone="139****5678"))
            assert reply.count("已发送至") == 1  # said once, not again by the prompt
            assert "绑定成功" in await wx_plain.say(A, codes.next())
        else:
            assert reply.startswith(render("binding/resend_wait", seconds=1))
            assert _sent(services, 2) == 1


@pytest.mark.parametrize("after,locked", [(LOCK - 1, True), (LOCK, False)])
async def test_lock_edge(wx_plain, holder, after, locked):
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(5):
            reply = await walk(wx_plain, A, NAME, holder.id_number, "13900000000")
            await wx_plain.say(A, "退出")
        assert "暂停30分钟" in reply and "10:30" in reply
        clock.shift(after)
        reply = await wx_plain.say(A, "绑定")
    if locked:
        assert "暂停中" in reply
    else:
        assert "隐私政策" in reply and "暂停中" not in reply  # binding starts again


# --- The reply after a wrong code -------------------------------------------------------------------


async def test_wrong_code_says_tries_left_and_offers_resend(wx_plain, holder, codes):
    await walk(wx_plain, A, NAME, holder.id_number, PHONE)
    reply = await wx_plain.say(A, _wrong(codes.next()))
    assert "还可再试 4 次" in reply and "重发" in reply
    assert "验证码已发送至" not in reply  # nothing was sent
