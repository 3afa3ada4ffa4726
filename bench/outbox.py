"""`make bench-outbox`: queue 100,000 day-before reminders (template messages) in the outbox
and drain them with the production dispatcher against the WeChat double, served by uvicorn
in its own process on loopback and answering every send after an artificial 20 ms.

Reports messages per second (the drain only) and the dispatcher process's peak memory
(resource.getrusage). Defaults: SQLite in a temporary directory (DATABASE_URL overrides),
OUTBOX_CONCURRENCY=32, OUTBOX_BATCH_SIZE=500, no rate limit to speak of.

    .venv/bin/python bench/outbox.py [--messages 100000] [--delay 0.02]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APP_ID, SECRET = "wxbench0000000002", "bench-outbox-secret"


def double_app():
    """The uvicorn factory of the double process (bench.outbox:double_app)."""
    from bot.wechat.double import create_double

    app = create_double(APP_ID, SECRET)
    app.state.delay = float(os.environ.get("BENCH_DOUBLE_DELAY", "0.02"))
    app.state.keep_sent = False

    @app.middleware("http")
    async def forget(request, call_next):  # 100,000 bodies need not stay in memory
        res = await call_next(request)
        if len(app.state.sent) > 1000:
            app.state.sent.clear()
            app.state.client_msgs.clear()
        return res

    return app


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--delay", type=float, default=0.02, help="the double's answer time (s)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()

    port = _port()
    env = {**os.environ, "BENCH_DOUBLE_DELAY": str(args.delay), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.outbox:double_app", "--factory", "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
         "--loop", "uvloop", "--http", "httptools"], cwd=ROOT, env=env)
    tmp = tempfile.TemporaryDirectory(prefix="bench-outbox-")
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        run(args, port, tmp.name)
    finally:
        server.terminate()
        server.wait(10)
        tmp.cleanup()


def run(args, port: int, tmp: str) -> None:
    from sqlalchemy import insert

    from bot.cli import upgrade_database
    from bot.domain import notify
    from bot.domain.rules import load_rules
    from bot.infra.config import load_settings
    from bot.infra.outbox import OUTBOX, client_msg_id
    from bot.infra.services import Services

    url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
    settings = load_settings(
        _env_file=None, wechat_app_id=APP_ID, wechat_app_secret=SECRET,
        wechat_token="benchtoken", secret_key="bench-secret-key-0123456789",
        database_url=url, wechat_api_base_url=f"http://127.0.0.1:{port}",
        outbox_concurrency=args.concurrency, outbox_batch_size=args.batch,
        outbox_rate_per_second=100_000, sms_provider="log", in_process_jobs=False,
        wechat_io_workers=4)
    upgrade_database(settings)
    services = Services(settings, load_rules(settings.rules_file))
    notify.configure(settings, services.rules)
    services.outbox_prepare = notify.prepare

    now = datetime.now(timezone(timedelta(hours=8)))
    when = (now + timedelta(days=1)).replace(hour=9, minute=30, tzinfo=None)
    t0 = time.perf_counter()
    with services.engine.begin() as conn:
        conn.execute(OUTBOX.delete())
        chunk = []
        for i in range(args.messages):
            number = f"YY{now:%y%m%d}{i:06d}"
            body = notify.template_body("reminder", {
                "number": number, "service": "洁牙", "when": when, "place": "北京洁牙门诊",
                "note": "回复“确认”确认到场，或“取消预约”"}, number=number)
            key = f"reminder:{i}:{when.date()}"
            chunk.append(dict(kind="reminder", channel="wechat", recipient=f"oBench{i:022d}",
                              payload=json.dumps({"template": body}, ensure_ascii=False),
                              dedupe_key=key, status="pending", tries=0,
                              next_attempt_at=time.time(), client_msg_id=client_msg_id(key),
                              created_at=now))
            if len(chunk) == 5000:
                conn.execute(insert(OUTBOX), chunk)
                chunk = []
        if chunk:
            conn.execute(insert(OUTBOX), chunk)
    queued = time.perf_counter() - t0
    print(f"queued {args.messages:,} reminders in {queued:.1f} s")

    d = services.dispatcher
    services.wechat.access_token  # fetch the token before the clock starts
    t1 = time.perf_counter()
    done = d.drain()
    elapsed = time.perf_counter() - t1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024
    sent = done.get("sent", 0)
    print(f"drained: {dict(done)} in {elapsed:.1f} s -> {sent / elapsed:,.0f} messages/s "
          f"(double answering in {args.delay * 1000:.0f} ms, concurrency {args.concurrency}, "
          f"batch {args.batch}, {services.engine.dialect.name})")
    print(f"peak memory (dispatcher process, ru_maxrss): {peak_mb:,.0f} MB; "
          f"dispatcher CPU {usage.ru_utime + usage.ru_stime:.0f} s over the whole run")
    services.close()
    if sent != args.messages:
        sys.exit(f"only {sent} of {args.messages} sent")


if __name__ == "__main__":
    main()
