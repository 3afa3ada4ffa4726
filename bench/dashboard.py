"""`bench/dashboard.py`: how long /admin/dashboard (and the nudge's preview) take to render on
PostgreSQL with 1,000,000 customers (60% bound and following), 200,000 bookings this year
(every service, tier, city and status), 100,000 outbox rows over 14 days and 5,000 unanswered
questions. The issue's target: under 1 s.

The data is generated inside PostgreSQL (INSERT … SELECT generate_series) in a fresh
database that is dropped afterwards; the pages are rendered through the app (HTTP over
ASGI, an admin signed in). Bounded: every statement has a 120 s timeout and the whole run
stops after --budget seconds.

    .venv/bin/python bench/dashboard.py [--customers 1000000] [--bookings 200000] [--runs 5]

DATABASE_URL (a PostgreSQL server; default postgresql://postgres@127.0.0.1:5432/test) says
where to create the database.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fill(conn, customers: int, bookings: int, year: int) -> None:
    from sqlalchemy import text

    conn.execute(text("SET statement_timeout = '120s'"))
    conn.execute(text("""
        INSERT INTO customer (id, id_number, name, phone, sex, birth_date, tier, contribution,
                              needs_recompute)
        SELECT g, lpad(g::text, 18, '0'), '客户' || g, '139' || lpad(g::text, 8, '0'),
               CASE WHEN g % 2 = 0 THEN 'F' ELSE 'M' END, date '1960-01-01' + (g % 15000),
               (ARRAY['diamond','platinum','gold','pearl','mass'])[1 + (g % 20) / 4 % 5],
               0, false
        FROM generate_series(1, :n) g"""), {"n": customers})
    conn.execute(text("SELECT setval('customer_id_seq', :n)"), {"n": customers})
    conn.execute(text("""
        INSERT INTO wechat_user (openid, following, customer_id, bind_failures, cs_used)
        SELECT 'o_bench_' || g, g % 10 <> 0, g, 0, 0
        FROM generate_series(1, :n) g WHERE g % 5 < 3"""), {"n": customers})
    conn.execute(text("""
        INSERT INTO institution (id, code, name, city, address, kind, services, phone,
                                 closed_weekdays, closed_dates)
        SELECT g, 'B' || g, '机构' || g, (ARRAY['北京','上海','广州','深圳','成都'])[1 + g % 5],
               '地址', 'commercial', 'dental;checkup;expert_outpatient;special_exam', '', '', ''
        FROM generate_series(1, 50) g"""))
    conn.execute(text("""
        INSERT INTO booking (number, request_key, customer_id, tier, service, institution_id,
                             preferred_date, quota_year, status, counted, created_at,
                             updated_at, version)
        SELECT 'YB' || lpad(g::text, 10, '0'), 'bench-' || g, 1 + (g * 7919) % :customers,
               (ARRAY['diamond','platinum','gold','pearl'])[1 + g % 4],
               (ARRAY['dental','checkup','expert_outpatient','special_exam'])[1 + g % 4],
               1 + g % 50, make_date(:year, 1 + g % 12, 1 + g % 28), :year,
               (ARRAY['submitted','confirmed','completed','completed','no_show',
                      'cancelled','cancelled_late'])[1 + g % 7],
               g % 7 <> 5, now(), now(), 1
        FROM generate_series(1, :n) g"""), {"n": bookings, "customers": customers, "year": year})
    conn.execute(text("""
        INSERT INTO notification (kind, channel, recipient, payload, dedupe_key, status, tries,
                                  next_attempt_at, created_at)
        SELECT 'booking_confirmed', 'wechat', 'o_bench_' || g, '{}', 'bench:' || g,
               (ARRAY['sent','sent','sent','sent','dead','pending'])[1 + g % 6], 1 + g % 3, 0,
               now() - make_interval(secs => g % (14 * 86400))
        FROM generate_series(1, 100000) g"""))
    conn.execute(text("""
        INSERT INTO unanswered_question (text, tier, asked_at)
        SELECT '问题' || (g % 300), 'gold', now() - make_interval(secs => g % 86400)
        FROM generate_series(1, 5000) g"""))


def figures_timed(engine, settings, year: int) -> None:
    """Each figure's statement(s) alone, once warm."""
    from datetime import datetime

    from sqlmodel import Session

    from bot.domain import dashboard as figures
    from bot.domain.rules import load_rules

    rules, tz = load_rules(settings.rules_file), settings.tz
    today = datetime.now(tz).date()
    calls = {
        "bookings_by_month": lambda s: figures.bookings_by_month(s, year),
        "tier_counts": lambda s: figures.tier_counts(s),
        "rates": lambda s: figures.rates(s, year),
        "quota_use": lambda s: figures.quota_use(s, rules, year),
        "unused_benefits": lambda s: figures.unused_benefits(s, rules, year),
        "nudge_preview": lambda s: figures.nudge_preview(s, rules, year),
        "unanswered_this_month": lambda s: figures.unanswered_this_month(s, today, tz),
        "outbox_health": lambda s: figures.outbox_health(s, today, tz),
    }
    with Session(engine) as session:
        for name, call in calls.items():
            call(session)
            t0 = time.perf_counter()
            call(session)
            print(f"  {name}: {(time.perf_counter() - t0) * 1000:.0f} ms")


async def render(app, runs: int) -> dict[str, list[float]]:
    import httpx

    from bot.demo import DEMO_ADMIN_LOGIN, DEMO_ADMIN_PASSWORD

    timings: dict[str, list[float]] = {"/admin/dashboard": [], "/admin/dashboard/nudge": []}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bench", timeout=120) as http:
        form = await http.get("/admin/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        res = await http.post("/admin/login", data={"login": DEMO_ADMIN_LOGIN, "csrf": csrf,
                                                    "password": DEMO_ADMIN_PASSWORD, "next": ""})
        assert res.status_code == 303, res.text
        for path in timings:
            await http.get(path)  # warm: the first render compiles the templates
            for _ in range(runs):
                t0 = time.perf_counter()
                res = await http.get(path)
                timings[path].append(time.perf_counter() - t0)
                assert res.status_code == 200, res.status_code
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--bookings", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the database (to EXPLAIN)")
    ap.add_argument("--budget", type=float, default=900.0, help="seconds for the whole run")
    args = ap.parse_args()
    import signal

    signal.signal(signal.SIGALRM, lambda *_: sys.exit("bench/dashboard.py: over its budget"))
    signal.alarm(int(args.budget))

    from datetime import datetime
    from zoneinfo import ZoneInfo

    from sqlalchemy import create_engine, text
    from sqlmodel import Session

    from bot.app import create_app
    from bot.cli import upgrade_database
    from bot.demo import load_demo_staff
    from bot.infra.config import load_settings

    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if not base.startswith("postgresql"):
        sys.exit("bench/dashboard.py runs on PostgreSQL: set DATABASE_URL=postgresql://…")
    base = base.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"vipbot_bench_dash_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        settings = load_settings(
            _env_file=None, wechat_app_id="wxbench0000000003", wechat_app_secret="bench",
            wechat_token="benchtoken", secret_key="bench-secret-key-0123456789",
            database_url=url, redis_url="", admin_enabled=True, in_process_jobs=False,
            wechat_api_base_url="http://127.0.0.1:9/")
        upgrade_database(settings)
        engine = create_engine(url)
        year = datetime.now(ZoneInfo(settings.timezone)).year
        t0 = time.perf_counter()
        with engine.begin() as conn:
            fill(conn, args.customers, args.bookings, year)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # as autovacuum leaves a live database
        with Session(engine) as session:
            load_demo_staff(session, datetime.now(ZoneInfo(settings.timezone)))
            session.commit()
        print(f"data: {args.customers:,} customers, {args.bookings:,} bookings, 100,000 "
              f"outbox rows, 5,000 questions in {time.perf_counter() - t0:.0f} s")
        figures_timed(engine, settings, year)
        engine.dispose()
        app = create_app(settings)
        try:
            timings = asyncio.run(render(app, args.runs))
        finally:
            app.state.pipeline.close()
        for path, values in timings.items():
            print(f"{path}: median {statistics.median(values) * 1000:.0f} ms, "
                  f"max {max(values) * 1000:.0f} ms over {len(values)} renders")
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
