"""A spike, not the bot: the reads of one 我的等级 message (a transaction of three indexed
SELECTs, as the bot sends them on PostgreSQL) run N times at a concurrency of C, by

* psycopg's synchronous connections, one per thread of a pool (the bot's way today), and
* psycopg's AsyncConnection, one per task on one event loop (what an async path would do),

each measured for wall time and for this process's CPU time per transaction. It answers
whether the thread hops of the synchronous driver are what limits a worker.

    .venv/bin/python bench/async_spike.py --transactions 5000 --concurrency 20

Bounded: N transactions per variant on a scratch table it makes and drops.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

URL = "postgresql://postgres@127.0.0.1:5432/test"
READS = ("SELECT a, b FROM spike_user WHERE k = %s",
         "SELECT a, b, c FROM spike_customer WHERE id = %s",
         "SELECT id, a, b, c FROM spike_policy WHERE customer_id = %s")


def set_up(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS spike_user, spike_customer, spike_policy")
        c.execute("CREATE TABLE spike_user (k text PRIMARY KEY, a int, b text)")
        c.execute("CREATE TABLE spike_customer (id int PRIMARY KEY, a text, b text, c text)")
        c.execute("CREATE TABLE spike_policy (id serial PRIMARY KEY, customer_id int, a text, "
                  "b numeric, c date)")
        c.execute("CREATE INDEX ON spike_policy (customer_id)")
        c.execute("INSERT INTO spike_user SELECT 'u' || i, i, 'x' FROM generate_series(1, %s) i",
                  (rows,))
        c.execute("INSERT INTO spike_customer SELECT i, 'name', 'phone', 'id' "
                  "FROM generate_series(1, %s) i", (rows,))
        c.execute("INSERT INTO spike_policy (customer_id, a, b, c) SELECT i %% %s + 1, 'p', "
                  "1000, current_date FROM generate_series(1, %s) i", (rows, rows * 5))
        c.execute("ANALYZE")


def tear_down(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS spike_user, spike_customer, spike_policy")


def one_sync(conn, i: int, rows: int) -> None:
    n = i % rows + 1
    with conn.transaction():
        conn.execute(READS[0], (f"u{n}",)).fetchone()
        conn.execute(READS[1], (n,)).fetchone()
        conn.execute(READS[2], (n,)).fetchall()


def run_sync(url: str, n: int, conc: int, rows: int) -> tuple[float, float]:
    conns = [psycopg.connect(url) for _ in range(conc)]
    free = list(conns)
    import threading

    lock = threading.Lock()

    def job(i):
        with lock:
            conn = free.pop()
        try:
            one_sync(conn, i, rows)
        finally:
            with lock:
                free.append(conn)

    async def drive():  # the bot's shape: an event loop handing each message to a thread
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(conc)
        sem = asyncio.Semaphore(conc)

        async def one(i):
            async with sem:
                await loop.run_in_executor(pool, job, i)
        await asyncio.gather(*(one(i) for i in range(n)))
        pool.shutdown()

    cpu, t = time.process_time(), time.perf_counter()
    asyncio.run(drive())
    out = time.perf_counter() - t, time.process_time() - cpu
    for c in conns:
        c.close()
    return out


def run_async(url: str, n: int, conc: int, rows: int) -> tuple[float, float]:
    async def drive():
        conns = [await psycopg.AsyncConnection.connect(url) for _ in range(conc)]
        free = list(conns)
        sem = asyncio.Semaphore(conc)

        async def one(i):
            async with sem:
                conn = free.pop()
                try:
                    k = i % rows + 1
                    async with conn.transaction():
                        await (await conn.execute(READS[0], (f"u{k}",))).fetchone()
                        await (await conn.execute(READS[1], (k,))).fetchone()
                        await (await conn.execute(READS[2], (k,))).fetchall()
                finally:
                    free.append(conn)
        cpu, t = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        out = time.perf_counter() - t, time.process_time() - cpu
        for c in conns:
            await c.close()
        return out

    return asyncio.run(drive())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=URL)
    ap.add_argument("--transactions", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rows", type=int, default=1000)
    args = ap.parse_args()
    set_up(args.url, args.rows)
    try:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as a worker
        for name, fn in (("sync, thread pool", run_sync), ("async, one loop", run_async),
                         ("sync, thread pool", run_sync), ("async, one loop", run_async)):
            wall, cpu = fn(args.url, args.transactions, args.concurrency, args.rows)
            print(f"{name:18} {args.transactions / wall:7.0f} transactions/s  "
                  f"{cpu / args.transactions * 1e6:6.0f} µs CPU each (this process)")
            sys.stdout.flush()
    finally:
        tear_down(args.url)


if __name__ == "__main__":
    main()
