"""A load test of the standard deployment, on loopback, bounded in time: `serve --workers 2`
on PostgreSQL + Redis, one `scheduler` (the outbox dispatch, the reminder sweep), the outbox
sending to the WeChat double (and the SMS gateway double) in a process of its own.

Traffic from 1,000 simulated followers, bound gold customers made through the CLI (as
`make bench` does): 我的等级, whole dental bookings (some twice: the quota is one a year),
cancellations of the booking just made, FAQ questions, random text, and WeChat's retries
(the same MsgId three times within 5 s, each retry expected to get the first reply).

Then the database is checked: no customer with two live bookings of one service and day, no
yearly quota exceeded, every booking a customer was told about exists, and every outbox row
sent once (the double's count of deliveries against the sent rows; no client_msg_id twice).

Faults (`--fault`), each injected while the traffic runs:
  kill-worker   one uvicorn worker killed with SIGKILL (uvicorn starts another)
  redis         Redis stopped for 15 s, then started again (the bot answers from the
                database stores meanwhile)
  wechat-down   the WeChat API double answers -1 (system busy) to every send for 20 s
  wechat-down-5min
                the same for 5 minutes (the traffic stops first; the outbox backs up, then
                drains: the drain is awaited up to 3 minutes after the outage ends, with the
                backoff capped at 120 s for this run)
  pg-restart    the PostgreSQL server restarted (`pg_ctlcluster` when given --pg-cluster,
                e.g. "15 main"; the server is shared: it is restarted only when asked): the
                bot apologises while it is down, then recovers; the run reports the apology
                window and checks that no message was half-applied
  scheduler     the active scheduler killed with SIGKILL while it holds its lock (a
                standby runs beside it), with the WeChat API down for 10 s: the failed
                sends are retried only if the standby takes over

Everything runs on scratch resources of its own: a PostgreSQL database created for the run
(and dropped), a redis-server on its own port (never the shared one), temporary files.

    .venv/bin/python bench/load.py [--fault none|kill-worker|redis|wechat-down|...]
                                  [--seconds 40]
    .venv/bin/python bench/load.py --fault pg-restart --pg-cluster "15 main"
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import set_up  # noqa: E402
from bot.wechat.simulator import WeChatSide, text_xml  # noqa: E402

APP_ID, SECRET = "wxload00000000001", "load-test-secret-0001"
TOKEN = "loadtoken"
ERROR = "系统开了个小差"  # bot/templates/error.j2
SUBMITTED = re.compile(r"预约号：(\w+)")
FAQ = ["住院怎么报销", "体检需要空腹吗", "洁牙一年可以几次", "怎么升级成钻石客户", "保单贷款怎么办理",
       "客服电话是多少", "家人可以用我的权益吗", "预约可以改期吗"]
BOOKING = ("预约洁牙", "1", "1", "1", "1", "确认")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def double_app():
    """The uvicorn factory of the WeChat API double (and an SMS gateway), with two control
    doors for this script: /_load/outage (POST ?seconds=) and /_load/stats."""
    from fastapi import Request

    from bot.wechat.double import create_double

    app = create_double(APP_ID, SECRET)
    app.state.sms = []

    @app.post("/sms/send")
    async def sms(request: Request):
        app.state.sms.append(await request.json())
        return {"ok": True}

    @app.post("/_load/outage")
    async def outage(seconds: float):
        app.state.outage_until = time.time() + seconds
        return {"until": app.state.outage_until}

    @app.get("/_load/stats")
    async def stats():
        keys = [m["body"].get("client_msg_id") for m in app.state.sent]
        ids = [k for k in keys if k]
        custom = [json.dumps(m["body"], sort_keys=True, ensure_ascii=False)
                  for m in app.state.sent if m["api"] == "custom"]
        return {"sent": len(app.state.sent), "sms": len(app.state.sms),
                # customer-service messages have no de-duplication key at WeChat: the same
                # body to the same follower twice is a message delivered twice
                "custom_bodies_twice": len(custom) - len(set(custom)),
                "duplicates_refused": len(app.state.duplicates),
                "client_msg_ids_twice": len(ids) - len(set(ids)),
                "by_api": {a: sum(1 for m in app.state.sent if m["api"] == a)
                           for a in {m["api"] for m in app.state.sent}}}

    return app


def wait_port(port: int, seconds: float = 60) -> None:
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


class Follower:
    def __init__(self, openid: str, rng: random.Random) -> None:
        self.openid = openid
        self.rng = rng

    def sessions(self) -> list[tuple[str, tuple[str, ...]]]:
        r = self.rng
        kind = r.choices(["tier", "booking", "booking_twice", "cancel", "faq", "random"],
                         [30, 20, 5, 10, 20, 15])[0]
        if kind == "tier":
            return [("tier", ("我的等级",))]
        if kind == "booking":
            return [("booking", BOOKING)]
        if kind == "booking_twice":  # the second is refused: one dental a year
            return [("booking", BOOKING), ("booking", BOOKING)]
        if kind == "cancel":
            return [("booking", BOOKING), ("cancel", ("取消预约 {number}", "确认"))]
        if kind == "faq":
            return [("faq", (r.choice(FAQ),))]
        alphabet = "你好请问保险的我是要不一二三abc123？！ "
        return [("random", tuple("".join(r.choice(alphabet) for _ in range(r.randint(1, 20)))
                                 for _ in range(r.randint(1, 3))))]


class Load:
    def __init__(self, url: str, side: WeChatSide, retry_share: float, rng: random.Random):
        self.url, self.side, self.retry_share, self.rng = url, side, retry_share, rng
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.retry_mismatch = 0
        self.retries = 0
        self.told: dict[str, str] = {}  # booking number -> openid, as the replies said
        self.messages = 0
        self.failures_at: list[float] = []  # when each error or apology was seen (epoch s)
        self.answered_at: list[float] = []  # when each HTTP answer came (epoch s)

    async def post(self, http, xml: str, openid: str) -> str:
        params, body = self.side.request(xml, openid=openid)
        t0 = time.perf_counter()
        try:
            res = await http.post(self.url, params=params, content=body,
                                  headers={"Content-Type": "text/xml"})
        except Exception as exc:  # noqa: BLE001 (a worker killed mid-request: count it)
            self.errors.append(f"{type(exc).__name__}")
            self.failures_at.append(time.time())
            return ""
        self.latencies.append(time.perf_counter() - t0)
        self.messages += 1
        self.answered_at.append(time.time())
        if res.status_code != 200:
            self.errors.append(f"HTTP {res.status_code}")
            self.failures_at.append(time.time())
            return ""
        content = self.side.read_reply(res.content).get("Content") or ""
        if ERROR in content:
            self.errors.append("apology")
            self.failures_at.append(time.time())
        return content

    async def say(self, http, openid: str, text: str) -> str:
        xml = text_xml(openid, text, msg_id=random.getrandbits(62) + 1)
        if self.rng.random() >= self.retry_share:
            return await self.post(http, xml, openid)
        # WeChat's retries: the same MsgId three times within 5 s.
        self.retries += 1

        async def later(delay):
            await asyncio.sleep(delay)
            return await self.post(http, xml, openid)
        replies = await asyncio.gather(later(0), later(1.0), later(2.5))
        if len(set(replies)) != 1 and all(replies):
            self.retry_mismatch += 1
        return replies[0]

    async def follower(self, http, f: Follower, stop: float) -> None:
        number = ""
        for kind, script in f.sessions():
            for text in script:
                if time.time() > stop:
                    return
                if "{number}" in text:
                    if not number:
                        break
                    text = text.format(number=number)
                reply = await self.say(http, f.openid, text)
                m = SUBMITTED.search(reply)
                if m:
                    number = m.group(1)
                    self.told[number] = f.openid
            await self.say(http, f.openid, "退出")  # whatever was left open


async def drive(url: str, followers: list[Follower], seconds: float, concurrency: int,
                load: Load, at_second=None) -> float:
    import httpx

    stop = time.time() + seconds
    queue = list(followers)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as http:
        async def worker():
            while queue and time.time() < stop:
                await load.follower(http, queue.pop(), stop)

        async def faults():
            if at_second is not None:
                await at_second()

        t0 = time.perf_counter()
        await asyncio.gather(faults(), *(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--followers", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=40.0, help="traffic time (at most 60)")
    ap.add_argument("--concurrency", type=int, default=50, help="followers talking at once")
    ap.add_argument("--retry-share", type=float, default=0.05,
                    help="share of messages WeChat delivers three times")
    ap.add_argument("--fault", default="none", choices=["none", "kill-worker", "redis",
                                                         "wechat-down", "wechat-down-5min",
                                                         "scheduler", "pg-restart"])
    ap.add_argument("--pg-cluster", default="",
                    help='pg-restart: the cluster `pg_ctlcluster VERSION NAME restart` restarts, '
                         'e.g. "15 main" (required for that fault)')
    ap.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis-port", type=int, default=6390)
    args = ap.parse_args()
    seconds = min(args.seconds, 60.0)
    if args.fault == "pg-restart" and len(args.pg_cluster.split()) != 2:
        ap.error('--fault pg-restart needs --pg-cluster "VERSION NAME" (see ls /etc/postgresql)')
    outage = {"wechat-down": 20.0, "wechat-down-5min": 300.0}.get(args.fault, 0.0)
    backoff_cap = 120 if args.fault == "wechat-down-5min" else 8
    rng = random.Random(17)

    from sqlalchemy import create_engine, text

    name = f"vipbot_load_{os.getpid()}"
    admin = create_engine(args.pg_admin_url.replace("postgresql://", "postgresql+psycopg://"),
                          isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = args.pg_admin_url.rsplit("/", 1)[0] + "/" + name
    procs: list[subprocess.Popen] = []
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)

    def redis_server() -> subprocess.Popen:
        p = subprocess.Popen(["redis-server", "--port", str(args.redis_port), "--save", "",
                              "--appendonly", "no", "--bind", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(args.redis_port, 10)
        return p

    redis_proc = redis_server()
    double_port, bot_port = _port(), _port()
    env = {**os.environ,
           "WECHAT_APP_ID": APP_ID, "WECHAT_APP_SECRET": SECRET, "WECHAT_TOKEN": TOKEN,
           "WECHAT_ENCODING_AES_KEY": "", "WECHAT_MESSAGE_MODE": "plain",
           "SECRET_KEY": "load-test-secret-key-0123456789",
           "DATABASE_URL": db_url, "REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0",
           "REDIS_PREFIX": "vipbot-load:",
           "WECHAT_API_BASE_URL": f"http://127.0.0.1:{double_port}/",
           "SMS_PROVIDER": "http", "SMS_GATEWAY_URL": f"http://127.0.0.1:{double_port}/sms/send",
           "SMS_GATEWAY_TOKEN": "load-gw-token", "IN_PROCESS_JOBS": "false",
           "METRICS_ENABLED": "true", "PROMETHEUS_MULTIPROC_DIR": str(work / "prom"),
           "OUTBOX_POLL_SECONDS": "1", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
           "OUTBOX_BACKOFF_BASE": "1" if backoff_cap == 8 else "2",
           "OUTBOX_BACKOFF_CAP": str(backoff_cap), "OUTBOX_MAX_TRIES": "12"}
    report: dict = {"fault": args.fault}
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.load:double_app", "--factory", "--host",
             "127.0.0.1", "--port", str(double_port), "--log-level", "warning"],
            cwd=ROOT, env=env))
        subprocess.run([sys.executable, "main.py", "db", "upgrade"], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        openids = [f"oLoad{i:06d}x" for i in range(args.followers)]
        set_up(env, work, openids)
        logs = open(work / "bot.log", "w")
        serve = subprocess.Popen([sys.executable, "main.py", "serve", "--host", "127.0.0.1",
                                  "--port", str(bot_port), "--workers", "2"],
                                 cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=logs)
        procs.append(serve)
        active = subprocess.Popen([sys.executable, "main.py", "scheduler"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=logs)
        procs.append(active)
        if args.fault == "scheduler":  # a standby, started once the first holds the lock
            time.sleep(4)
            procs.append(subprocess.Popen([sys.executable, "main.py", "scheduler"], cwd=ROOT,
                                          env=env, stdout=subprocess.DEVNULL, stderr=logs))
        wait_port(bot_port, 180)  # a loaded machine starts workers slowly
        time.sleep(3)  # both workers up
        url = f"http://127.0.0.1:{bot_port}/wechat"
        load = Load(url, WeChatSide(TOKEN, APP_ID, "", "plain"), args.retry_share, rng)
        followers = [Follower(o, random.Random(i)) for i, o in enumerate(openids)]
        events: list[str] = []
        outage_end = [0.0]  # when the WeChat API outage ends (epoch s)
        restart: list[float] = []  # the PostgreSQL restart's start and end (epoch s)

        async def fault():
            nonlocal redis_proc
            import httpx
            await asyncio.sleep(8)
            if args.fault == "kill-worker":
                workers = children(serve.pid)
                victim = max(workers)
                os.kill(victim, signal.SIGKILL)
                events.append(f"t=8s: SIGKILL to worker {victim} (of {workers})")
                await asyncio.sleep(10)
                events.append(f"t=18s: workers now {children(serve.pid)}")
            elif args.fault == "redis":
                redis_proc.terminate()
                redis_proc.wait(5)
                events.append("t=8s: Redis stopped")
                await asyncio.sleep(15)
                redis_proc = redis_server()
                events.append("t=23s: Redis started again (empty: no persistence)")
            elif args.fault == "scheduler":
                # The active scheduler killed while it holds its lock, and the WeChat API
                # down for 10 s: the rows that failed are retried only by a dispatcher sweep,
                # so the outbox drains only if the standby took over.
                async with httpx.AsyncClient() as h:
                    await h.post(f"http://127.0.0.1:{double_port}/_load/outage",
                                 params={"seconds": 10})
                os.kill(active.pid, signal.SIGKILL)
                events.append(f"t=8s: SIGKILL to the active scheduler {active.pid}; WeChat API "
                              "double answers -1 for 10 s")
            elif outage:
                async with httpx.AsyncClient() as h:
                    await h.post(f"http://127.0.0.1:{double_port}/_load/outage",
                                 params={"seconds": outage})
                outage_end[0] = time.time() + outage
                events.append(f"t=8s: WeChat API double answers -1 to every send for "
                              f"{outage:.0f} s")
            elif args.fault == "pg-restart":
                version, cluster = args.pg_cluster.split()
                t0 = time.time()
                done = await asyncio.to_thread(
                    subprocess.run, ["pg_ctlcluster", version, cluster, "restart"],
                    capture_output=True, text=True, timeout=60)
                restart[:] = [t0, time.time()]
                events.append(f"t=8s: pg_ctlcluster {version} {cluster} restart: exit "
                              f"{done.returncode} after {time.time() - t0:.1f} s "
                              f"{done.stderr.strip()[:120]}")

        elapsed = asyncio.run(drive(url, followers, seconds, args.concurrency, load, fault))
        lat = sorted(load.latencies)
        n = len(lat)
        report.update(messages=n, seconds=round(elapsed, 1), msg_per_s=round(n / elapsed, 1),
                      p50_ms=round(lat[n // 2] * 1000, 1) if n else None,
                      p99_ms=round(lat[min(n - 1, int(n * 0.99))] * 1000, 1) if n else None,
                      errors=len(load.errors),
                      error_kinds={k: load.errors.count(k) for k in set(load.errors)},
                      retried_messages=load.retries, retries_with_another_reply=load.retry_mismatch,
                      bookings_told=len(load.told), events=events)
        if restart:
            after = [t for t in load.failures_at if t >= restart[0] - 1]
            report["apology_window"] = {
                "restart_s": round(restart[1] - restart[0], 1),
                "failures_from_restart": len(after),
                "first_after_restart_start_s": round(after[0] - restart[0], 1) if after else None,
                "last_after_restart_start_s": round(after[-1] - restart[0], 1) if after else None,
                "answered_ok_after_last_failure": sum(
                    1 for t in load.answered_at if after and t > after[-1])}
        # The outbox drains: wait (bounded) until nothing is pending or sending.
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"),
                               pool_pre_ping=True)
        drained_at = None
        backlog: list[tuple[float, int]] = []  # (epoch s, rows pending or sending)
        # Bounded: 90 s after the traffic, or 180 s after a long outage ends.
        t_end = max(time.time() + 90, outage_end[0] + 180) if outage > 60 else time.time() + 90
        while time.time() < t_end:
            with engine.connect() as c:
                waiting = c.execute(text("SELECT count(*) FROM notification WHERE status IN "
                                         "('pending', 'sending')")).scalar()
            backlog.append((time.time(), waiting))
            if waiting == 0 and time.time() > outage_end[0]:
                drained_at = time.time()
                break
            time.sleep(1)
        report["outbox_drained"] = drained_at is not None
        if outage:
            report["outbox_backlog"] = {
                "max_pending": max((w for _, w in backlog), default=0),
                "pending_when_outage_ended": next((w for t, w in backlog if t >= outage_end[0]),
                                                  None),
                "drained_s_after_outage_end": (round(drained_at - outage_end[0], 1)
                                               if drained_at else None)}
        import httpx
        report["double"] = httpx.get(f"http://127.0.0.1:{double_port}/_load/stats").json()
        metrics = httpx.get(f"http://127.0.0.1:{bot_port}/metrics").text
        report["metrics"] = [line for line in metrics.splitlines()
                             if line.startswith(("vipbot_messages_total", "vipbot_dedup_hits_total",
                                                 "vipbot_store_backend", "vipbot_store_switches",
                                                 "vipbot_outbox_backlog{channel=\"wechat\",status=\"pending\"",
                                                 "vipbot_wechat_api_errors_total",
                                                 "vipbot_handler_seconds_count"))]
        report["checks"] = check(engine, load.told)
        engine.dispose()
        logs.close()
        lines = (work / "bot.log").read_text(errors="replace").splitlines()
        report["log_errors"] = sum(1 for line in lines if '"level": "ERROR"' in line)
        report["schedulers_started"] = sum(1 for line in lines if "scheduler started" in line)
        report["schedulers_standing_by"] = sum(1 for line in lines if "standing by" in line)
        report["log_error_samples"] = [json.loads(line)["message"][:160] for line in lines
                                       if '"level": "ERROR"' in line][:3]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(5)
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        tmp.cleanup()
    print(json.dumps(report, ensure_ascii=False, indent=2))


def check(engine, told: dict[str, str]) -> dict:
    from sqlalchemy import text

    live = "('submitted', 'confirmed', 'completed', 'no_show')"
    counted = "('submitted', 'confirmed', 'completed', 'no_show', 'cancelled_late')"
    with engine.connect() as c:
        doubles = c.execute(text(
            f"SELECT count(*) FROM (SELECT customer_id, service, preferred_date FROM booking "
            f"WHERE status IN {live} AND family_member_id IS NULL "
            f"GROUP BY 1, 2, 3 HAVING count(*) > 1) d")).scalar()
        over = c.execute(text(
            f"SELECT count(*) FROM (SELECT customer_id, service, quota_year FROM booking "
            f"WHERE status IN {counted} AND counted GROUP BY 1, 2, 3 HAVING count(*) > 1) q")
        ).scalar()  # dental, gold: one a year (rules.toml)
        numbers = {r[0] for r in c.execute(text("SELECT number FROM booking"))}
        by_status = dict(c.execute(text("SELECT status, count(*) FROM booking GROUP BY 1")).all())
        outbox = {f"{k}/{st}": n for k, st, n in c.execute(text(
            "SELECT kind, status, count(*) FROM notification GROUP BY 1, 2")).all()}
        sent_twice = c.execute(text(
            "SELECT count(*) FROM (SELECT dedupe_key FROM notification GROUP BY 1 "
            "HAVING count(*) > 1) k")).scalar()
        # Half-applied messages: a booking's row and the message telling the customer are
        # written in one transaction, so one without the other means a message half-applied.
        without_receipt = c.execute(text(
            "SELECT count(*) FROM booking b WHERE NOT EXISTS (SELECT 1 FROM notification n "
            "WHERE n.dedupe_key = 'booking:' || b.id || '\\:received')")).scalar()
        cancelled_untold = c.execute(text(
            "SELECT count(*) FROM booking b WHERE b.status IN ('cancelled', 'cancelled_late') "
            "AND NOT EXISTS (SELECT 1 FROM notification n "
            "WHERE n.dedupe_key = 'booking:' || b.id || '\\:cancelled')")).scalar()
    return {"live_bookings_doubled": doubles, "quota_exceeded": over,
            "bookings_told_but_missing": sorted(set(told) - numbers)[:10],
            "bookings_by_status": by_status, "outbox_by_status": outbox,
            "outbox_keys_twice": sent_twice, "bookings_without_receipt": without_receipt,
            "cancellations_untold": cancelled_untold}


if __name__ == "__main__":
    main()
