"""Where one message's time goes, in process: the bot's ASGI app (no network, no uvicorn)
answers N signed messages of one `bench/run.py` scenario, `--concurrency` at a time, over
httpx's ASGI transport. It counts, per message, the SQL statements and transactions the
driver sends (psycopg or sqlite3) and the Redis round trips, and with `--profile` writes a
cProfile of the measured messages.

    .venv/bin/python bench/profile_message.py --store postgresql --scenario my_tier
    .venv/bin/python bench/profile_message.py --store sqlite --scenario booking --profile /tmp/p

A scratch PostgreSQL database (and a Redis prefix of its own) is made and dropped, as in
`bench/run.py`. Bounded: `--messages` per scenario (default 2,000).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import itertools
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import set_up  # noqa: E402
from bench.run import ENV, PG_ADMIN, REDIS, SCENARIOS, scratch_postgres  # noqa: E402

COUNTS: collections.Counter = collections.Counter()
SQL: collections.Counter = collections.Counter()


def _count_drivers() -> None:
    """Count what crosses to PostgreSQL and Redis (or reaches sqlite3): one per statement
    sent, one per Redis packet (a pipeline is one)."""
    import psycopg
    import redis.connection

    def wrap(cls, name, label, with_sql=False):
        orig = getattr(cls, name)

        def counted(self, *a, **kw):
            COUNTS[label] += 1
            if with_sql and a:
                q = a[0]
                q = q.decode() if isinstance(q, bytes) else str(q)
                SQL[" ".join(q.split())[:90]] += 1
            return orig(self, *a, **kw)

        setattr(cls, name, counted)

    wrap(psycopg.Cursor, "execute", "sql", True)
    wrap(psycopg.Cursor, "executemany", "sql", True)
    wrap(psycopg.Connection, "commit", "commit")
    wrap(psycopg.Connection, "rollback", "rollback")
    wrap(redis.connection.Connection, "send_packed_command", "redis")
    import redis.asyncio.connection

    wrap(redis.asyncio.connection.Connection, "send_packed_command", "redis (asyncio)")
    for cls in (redis.connection.Connection, redis.asyncio.connection.Connection):
        def tally(cls=cls, orig=cls.pack_commands, one=cls.pack_command):
            def packs(self, commands):
                SQL["redis " + "+".join(str(c[0]) for c in commands)] += 1
                return orig(self, commands)

            def pack(self, *a):
                SQL[f"redis {a[0]}"] += 1
                return one(self, *a)
            cls.pack_commands, cls.pack_command = packs, pack
        tally()


def _count_sqlite(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _(conn, cursor, statement, params, context, executemany):
        COUNTS["sql (SQLAlchemy)"] += 1
        SQL[" ".join(statement.split())[:90]] += 1


async def _drive(app, requests, concurrency) -> list[float]:
    import httpx

    lat: list[float] = []
    it = iter(requests)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        async def worker(reqs):
            for qs, body in reqs:
                t0 = time.perf_counter()
                r = await client.post(f"/wechat?{qs}", content=body,
                                      headers={"Content-Type": "text/xml"})
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text[:200]
        lanes = [list(itertools.islice(it, len(requests) // concurrency))
                 for _ in range(concurrency)]
        await asyncio.gather(*(worker(lane) for lane in lanes))
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="postgresql", choices=("sqlite", "postgresql"))
    ap.add_argument("--scenario", default="my_tier", choices=sorted(SCENARIOS))
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--profile", default="", help="write a cProfile here (and print its top)")
    args = ap.parse_args()
    sc = SCENARIOS[args.scenario]
    users = [f"oprof{u:04d}" for u in range(args.users)]
    drop = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.store == "sqlite":
            env = dict(ENV, DATABASE_URL=f"sqlite:///{tmp}/p.db", REDIS_URL="")
        else:
            url, drop = scratch_postgres(PG_ADMIN)
            env = dict(ENV, DATABASE_URL=url, REDIS_URL=REDIS,
                       REDIS_PREFIX=f"vipbot-prof-{os.getpid()}:")
        env["IN_PROCESS_JOBS"] = "false"
        env["WECHAT_MESSAGE_MODE"] = "plain"
        try:
            import subprocess
            full = {**os.environ, **env}
            subprocess.run([sys.executable, "main.py", "db", "upgrade"], cwd=ROOT, check=True,
                           env=full, stdout=subprocess.DEVNULL)
            if sc.bound:
                set_up(full, Path(tmp), users)
            os.environ.update(env)
            from bot.app import create_app
            from bot.infra.config import get_settings
            from bot.wechat.simulator import WeChatSide, text_xml

            app = create_app(get_settings())
            if args.store == "sqlite":
                _count_sqlite(app.state.services.engine)
            else:
                _count_drivers()
                from sqlalchemy import event

                event.listen(app.state.services.engine, "connect",
                             lambda *_: COUNTS.update(["pg connect"]))
            side = WeChatSide(ENV["WECHAT_TOKEN"], ENV["WECHAT_APP_ID"],
                              ENV["WECHAT_ENCODING_AES_KEY"], "plain")
            ids = itertools.count(int(time.time() * 1e6))

            def reqs(script, n):
                out = []
                for i in range(n):
                    user = users[(i // len(script)) % len(users)]
                    params, body = side.request(text_xml(user, script[i % len(script)],
                                                         msg_id=next(ids)), openid=user)
                    out.append(("&".join(f"{k}={v}" for k, v in params.items()), body))
                return out

            async def go():
                async with app.router.lifespan_context(app):
                    if sc.prepare:
                        for u in users:
                            for text in sc.prepare:
                                await _drive(app, [reqs_one(u, text)], 1)
                    await _drive(app, reqs(sc.script, 400), args.concurrency)  # warm-up
                    COUNTS.clear()
                    SQL.clear()
                    work = reqs(sc.script, args.messages)
                    prof = cProfile.Profile() if args.profile else None
                    t0 = time.perf_counter()
                    if prof:
                        prof.enable()
                    lat = await _drive(app, work, args.concurrency)
                    if prof:
                        prof.disable()
                    return lat, time.perf_counter() - t0, prof

            def reqs_one(user, text):
                params, body = side.request(text_xml(user, text, msg_id=next(ids)), openid=user)
                return "&".join(f"{k}={v}" for k, v in params.items()), body

            lat, elapsed, prof = asyncio.run(go())
        finally:
            if drop:
                drop()
    lat.sort()
    n = len(lat)
    print(f"{args.store} {args.scenario}: {n} messages in {elapsed:.2f} s = {n / elapsed:.0f} "
          f"msg/s in process (concurrency {args.concurrency}); p50 {lat[n // 2] * 1e3:.1f} ms, "
          f"p99 {lat[int(n * 0.99)] * 1e3:.1f} ms")
    for k, v in sorted(COUNTS.items()):
        print(f"   {k:18} {v / n:6.2f} per message")
    for q, v in SQL.most_common(25):
        print(f"   {v / n:6.2f}  {q}")
    if prof:
        prof.dump_stats(args.profile)
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(45)
        st.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
