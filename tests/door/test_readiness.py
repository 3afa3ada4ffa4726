"""`GET /readyz` beside `/healthz`: database, migrations at head, Redis when configured; and
the connection pool from settings (a message waiting too long for a connection gets the
apology, in time)."""
from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import text

from bot.app import create_app
from bot.infra.config import load_settings
from bot.infra.health import migration_heads
from bot.infra.texts import render
from tests.conftest import REDIS_URL, USE_PG

U = "oReadyUser000000000000001"


async def get(app, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bot.test") as client:
        return await client.get(path)


async def test_ready(app):
    res = await get(app, "/readyz")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == body["checks"]["migrations"] == "ok"
    assert body["checks"]["redis"] == ("ok" if REDIS_URL else "not configured")


async def test_redis_down_is_not_ready_though_healthz_says_ok(settings):
    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    try:
        assert (await get(app, "/healthz")).status_code == 200
        res = await get(app, "/readyz")
        assert res.status_code == 503
        body = res.json()
        assert body["failed"] == ["redis"] and "unreachable" in body["checks"]["redis"]
        assert body["checks"]["database"] == "ok"
    finally:
        app.state.pipeline.close()


async def test_migrations_behind_head_is_not_ready(app, services):
    with services.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        res = await get(app, "/readyz")
        assert res.status_code == 503
        assert res.json()["failed"] == ["migrations"]
        assert "db upgrade" in res.json()["checks"]["migrations"]
    finally:
        [head] = migration_heads()
        with services.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})


# --- Connection pools ------------------------------------------------------------------------


def test_two_workers_with_the_defaults_leave_postgresql_room():
    s = load_settings(_env_file=None, wechat_app_id="wx1", wechat_app_secret="s",
                      secret_key="readiness-secret-key-0123456789",
                      wechat_token="tok")
    per_process = s.db_pool_size + s.db_max_overflow
    # two workers and the scheduler, against a stock PostgreSQL (100 connections, 3 reserved
    # for superusers), with room for CLI runs and psql
    assert 3 * per_process <= 60 < 97
    assert s.db_pool_timeout < s.reply_deadline_seconds


@pytest.mark.settings(db_pool_size=2, db_max_overflow=0, db_pool_timeout=1.0)
async def test_an_exhausted_pool_waits_briefly_then_apologises(app, services, wx_plain):
    assert await wx_plain.say(U, "帮助") != render("error")
    held = services.engine.pool.size()
    assert held == (2 if USE_PG else 1)  # the pool follows DB_POOL_SIZE (SQLite: one)
    conns = [services.engine.connect() for _ in range(held)]
    try:
        started = time.monotonic()
        reply = await wx_plain.say(U, "帮助")
        waited = time.monotonic() - started
    finally:
        for c in conns:
            c.close()
    assert reply == render("error")
    assert 0.9 <= waited < services.settings.reply_deadline_seconds
    assert await wx_plain.say(U, "帮助") != render("error")  # and back to normal
