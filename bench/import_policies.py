"""Benchmark: import N policy rows (default 1,000,000) on SQLite and PostgreSQL.

    .venv/bin/python bench/import_policies.py [--rows N] [--db sqlite|postgresql|both]
                                             [--pg-url postgresql://postgres@127.0.0.1:5432/test]
                                             [--max-seconds 900]
    .venv/bin/python bench/import_policies.py --db postgresql     # 1M rows on PostgreSQL

Generates the CSV in a temporary directory (three policies per customer on average), imports
it into a fresh database (a temporary SQLite file; a PostgreSQL database created for the run
and dropped afterwards), imports it again (nothing changes the second time), and prints
rows/s and the total time of each run, with the tier run's share. The whole run stops after
--max-seconds (default 900), dropping what it created.

    .venv/bin/python bench/import_policies.py --during [--rows 100000]

The bot's messages during an import, on SQLite: a bot server (one worker, plain mode) with
100 bound customers sitting at the date step of a booking (each message reads and writes
their flow state) answers 10 connections' messages, first alone, then while `import
policies` of N rows runs in another process; prints p50/p99/max of each, and the messages
not answered in time (WeChat's 5 s: the bot then answers "success" and replies later).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from bot.cli import upgrade_database  # noqa: E402
from bot.infra.config import load_settings  # noqa: E402
from bot.domain.identity import make_id_number  # noqa: E402
from bot.domain.importer import POLICY_COLUMNS, import_csv  # noqa: E402

STATUSES = ("in_force",) * 8 + ("lapsed", "surrendered")
LIABILITIES = ("hospitalization", "critical_illness;mild_illness", "", "disability")


def write_csv(path: Path, rows: int) -> None:
    """`rows` valid policies of rows // 3 + 1 holders."""
    holders = rows // 3 + 1
    base = date(1950, 1, 1)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(POLICY_COLUMNS) + "\n")
        for i in range(rows):
            h = i % holders
            id_number = make_id_number("110105", base + timedelta(days=h // 1000),
                                       (h % 1000) // 2, "MF"[h % 2])
            single = i % 5 == 0
            basic, single_premium = ("0", f"{(i % 90) * 1000:.2f}") if single else (
                f"{(i % 500) * 100 + 0.5:.2f}", "0")
            effective = date(2015 + i % 10, 1 + i % 12, 1 + i % 28)
            fh.write(",".join((
                f"P{i:010d}", id_number, "张三", f"138{h % 100_000_000:08d}", "安心人生两全保险",
                LIABILITIES[i % 4], "single" if single else "regular", basic, single_premium,
                "0", "0", f"{i % 3 * 100}", effective.isoformat(),
                "1" if single else str(5 + i % 20), STATUSES[i % 10],
                (effective + timedelta(days=15)).isoformat(), "1" if i % 50 == 0 else "0",
                "0")) + "\n")


def run(label: str, url: str, csv_path: Path, rows: int) -> None:
    settings = load_settings(_env_file=None, wechat_app_id="wx-bench", wechat_app_secret="s",
                             wechat_token="bench", secret_key="bench-secret-key-0123456789",
                             database_url=url, redis_url="")
    upgrade_database(settings)
    for attempt in ("first import", "re-import"):
        cpu = time.process_time()
        report = import_csv(settings, "policies", csv_path, skip_bad=False,
                            progress=sys.stderr.isatty())
        cpu = time.process_time() - cpu  # this process's share: reading, checking, COPY
        assert not report.rejected, report.render()
        print(f"{label:10} {attempt:12} {rows:>9} rows  {report.seconds:7.1f} s  "
              f"{rows / report.seconds:>9,.0f} rows/s  (CPU of the importing process "
              f"{cpu:.1f} s; load average {os.getloadavg()[0]:.1f}; inserted {report.inserted}, updated "
              f"{report.updated}, unchanged {report.unchanged}; tier changes: "
              f"{report.tier_changes})", flush=True)
        print(f"{'':10} {'':12} phases: " + ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in report.phases.items()), flush=True)


def during(rows: int, seconds: float = 10.0) -> None:
    import asyncio
    import os
    import signal
    import subprocess

    from bench.data import set_up
    from bench.loadgen import _run
    from bench.run import ENV, ROOT, SCENARIOS, _batch, build, free_port, start_server, users_of

    scenario = SCENARIOS["booking"]
    connections, per_user = 10, 10
    with tempfile.TemporaryDirectory(prefix="import-during-") as tmp:
        env = dict(ENV, DATABASE_URL=f"sqlite:///{tmp}/bench.db", REDIS_URL="",
                   WECHAT_MESSAGE_MODE="plain")
        full_env = {**os.environ, **env}
        subprocess.run([sys.executable, "main.py", "db", "upgrade"], cwd=ROOT, check=True,
                       env=full_env, stdout=subprocess.DEVNULL)
        users = [users_of("booking", "plain", c, per_user, False) for c in range(connections)]
        set_up(full_env, Path(tmp), [u for conn in users for u in conn])
        csv_path = Path(tmp) / "import.csv"
        write_csv(csv_path, rows)
        port = free_port()
        server = start_server("bot.asgi:make", env, port, None, wait=120)
        try:
            _batch(port, build(port, "plain", connections, 0, users, scenario.prepare, once=True),
                   None)

            def load_until(done) -> tuple[list[float], int, int]:
                latencies, failures, batches = [], 0, 0
                while not done() or not batches:
                    reqs = build(port, "plain", connections, 20, users, scenario.script)
                    lat, fail, _, _ = asyncio.run(_run("127.0.0.1", port, reqs,
                                                       lambda b: b.startswith(b"<xml>")))
                    latencies += lat
                    failures += len(fail)
                    batches += 1
                return sorted(latencies), failures, batches

            def show(label: str, latencies: list[float], failures: int, extra: str = "") -> None:
                n = len(latencies)
                print(f"{label:28} {n:6} messages  p50 {latencies[n // 2] * 1000:7.1f} ms  "
                      f"p99 {latencies[min(n - 1, int(n * 0.99))] * 1000:7.1f} ms  "
                      f"max {latencies[-1] * 1000:7.1f} ms  late/failed {failures}{extra}",
                      flush=True)

            stop = time.monotonic() + seconds
            show("alone", *load_until(lambda: time.monotonic() > stop)[:2])
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "main.py", "import", "policies",
                                     str(csv_path)], cwd=ROOT, env=full_env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            latencies, failures, _ = load_until(lambda: proc.poll() is not None)
            took = time.monotonic() - started
            out = proc.stdout.read()
            if proc.returncode != 0:
                raise SystemExit(f"the import failed:\n{out}")
            show(f"during a {rows:,}-row import", latencies, failures,
                 f"  (the import took {took:.1f} s)")
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None,
                    help="default 1,000,000 (100,000 with --during)")
    ap.add_argument("--during", action="store_true",
                    help="the p99 of /wechat messages during an import, on SQLite")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--max-seconds", type=int, default=900,
                    help="stop the whole run after this long (its scratch data is dropped)")
    args = ap.parse_args()
    import signal

    def too_long(*_):
        raise SystemExit(f"stopped after --max-seconds {args.max_seconds}")
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(args.max_seconds)
    if args.during:
        during(args.rows or 100_000)
        return
    args.rows = args.rows or 1_000_000

    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        csv_path = Path(tmp) / "policies.csv"
        started = time.monotonic()
        write_csv(csv_path, args.rows)
        print(f"generated {args.rows} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        if args.db in ("sqlite", "both"):
            run("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", csv_path, args.rows)
        if args.db in ("postgresql", "both"):
            name = f"vipbot_bench_{uuid.uuid4().hex[:10]}"
            admin_url = args.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                run("postgresql", admin_url.rsplit("/", 1)[0] + "/" + name, csv_path, args.rows)
            finally:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
