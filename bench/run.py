"""`make bench`: the bot's /wechat against the bare FastAPI + wechatpy echo (the reference),
in one run, on loopback, one server worker pinned to one core and the load on the other.

The bot runs in its production configuration on the embedded default (SQLite in WAL mode,
message de-duplication and the conversation state store on). Its traffic, one row per
scenario and message mode:

- binding: each simulated follower starts the identity-binding flow, answers its first
  question and leaves it again (every message reads and writes that user's flow state);
- booking: bound customers (gold, five policies) sitting at the date step of a dental
  booking answer it (the first date offered: rule checks, quota read, the summary), then
  go back to it with 返回 (the date step again: dates checked, options offered); every
  message reads and writes the flow state;
- my_tier: bound customers with five policies ask 我的等级 (customer, policies, evaluation,
  breakdown, template). Nothing is cached between messages: every request is cold.

The customers (1,000 per row by default, spread over the connections) are made through the
CLI: `import policies`, `import institutions`, `bind --file`.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import set_up  # noqa: E402
from bench.loadgen import build_request, run as run_load  # noqa: E402
from bot.wechat.simulator import WeChatSide, text_xml  # noqa: E402

ENV = {
    "WECHAT_APP_ID": "wxbench0000000001",
    "WECHAT_APP_SECRET": "bench-secret",
    "SECRET_KEY": "bench-secret-key-0123456789",
    "WECHAT_TOKEN": "benchtoken",
    "WECHAT_ENCODING_AES_KEY": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    "WECHAT_API_BASE_URL": "http://127.0.0.1:9/",  # never called by this traffic
    "LOG_LEVEL": "WARNING",
}
ERROR = "系统开了个小差"  # bot/templates/error.j2
NEEDS_BINDING = "需要先验证投保人身份"  # bot/templates/binding/needed.j2


@dataclass(frozen=True)
class Scenario:
    script: tuple[str, ...]  # what each user sends, in turn, over and over
    bound: bool = False  # users are bound customers (made by bench/data.py)
    prepare: tuple[str, ...] = ()  # sent once by each user before the warm-up (not timed)
    expect: str = ""  # in every connection's last reply


SCENARIOS = {
    "binding": Scenario(("绑定", "张三", "退出"), expect="身份绑定"),
    # 预约洁牙 → beneficiary 本人 → city → clinic: at the date step.
    "booking": Scenario(("1", "返回"), bound=True, prepare=("预约洁牙", "1", "1", "1"),
                        expect="日期"),
    "my_tier": Scenario(("我的等级",), bound=True, expect="保费贡献值"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app: str, env: dict, port: int, cpu: int | None,
                 wait: float = 60.0, workers: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    if app.endswith(":make"):
        cmd.append("--factory")
    if os.environ.get("BENCH_PYSPY") and app.startswith("bot"):  # a profile of the bot
        cmd = ["py-spy", "record", "--nonblocking", "--gil", "-r", "200", "-f", "raw", "-o",
               f"{os.environ['BENCH_PYSPY']}.{port}.txt", "--", *cmd]
    pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, preexec_fn=pre)
    for _ in range(int(wait / 0.05)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{app} did not start")


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / _TICK  # utime + stime
    except (OSError, IndexError):
        return 0.0


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the uvicorn supervisor and its workers)."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def _named(*names: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as fh:
                    if fh.read().strip() in names:
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def cpu_snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the bot (its process tree), by every PostgreSQL process and
    by Redis (theirs include whatever else used them meanwhile)."""
    return {"bot": sum(_cpu_seconds(p) for p in _tree(server_pid)),
            "postgres": sum(_cpu_seconds(p) for p in _named("postgres")),
            "redis": sum(_cpu_seconds(p) for p in _named("redis-server"))}


def users_of(scenario: str, mode: str, c: int, per_conn_users: int, echo: bool) -> list[str]:
    tag = "e" if echo else "b"
    return [f"o{scenario[:2]}{mode[:2]}{c:03d}u{u:03d}{tag}" for u in range(per_conn_users)]


def build(port: int, mode: str, connections: int, per_conn: int, users: list[list[str]],
          script: tuple[str, ...], once: bool = False) -> list[list[bytes]]:
    """Each connection's requests: its users in turn, each sending the whole `script` (with
    `once`, each user sends it once and `per_conn` is ignored)."""
    side = WeChatSide(ENV["WECHAT_TOKEN"], ENV["WECHAT_APP_ID"], ENV["WECHAT_ENCODING_AES_KEY"],
                      mode)
    ids = itertools.count(int(time.time() * 1e6))
    out = []
    for c in range(connections):
        mine = users[c]
        n = len(mine) * len(script) if once else per_conn
        reqs = []
        for i in range(n):
            user = mine[(i // len(script)) % len(mine)]
            xml = text_xml(user, script[i % len(script)], msg_id=next(ids))
            params, body = side.request(xml, openid=user)
            qs = "&".join(f"{k}={v}" for k, v in params.items())
            reqs.append(build_request("127.0.0.1", port, f"/wechat?{qs}", body))
        out.append(reqs)
    return out


def _load(queue, port, per_connection, cpu, rate=None):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    queue.put(run_load("127.0.0.1", port, per_connection,
                       check=lambda b: b.startswith(b"<xml>"), rate=rate))


def _batch(port, batch, cpu, rate=None) -> dict:
    q = mp.Queue()
    p = mp.Process(target=_load, args=(q, port, batch, cpu, rate))
    p.start()
    result = q.get()
    p.join()
    return result


def measure(port, mode, connections, per_conn, users, scenario: Scenario, cpu,
            server_pid: int | None = None, rate: float | None = None) -> dict:
    """One row: the scenario's preparation and a warm-up (as fast as the server answers),
    then the measured batch (at `rate` messages a second when given)."""
    if scenario.prepare:
        prep = _batch(port, build(port, mode, connections, 0, users, scenario.prepare, once=True),
                      cpu)
        if prep["failures"]:
            raise SystemExit(f"preparing {scenario} failed: {prep['first_failure']}")
    n = len(scenario.script)
    warm = build(port, mode, connections, max(2 * n, per_conn // 10 // n * n), users,
                 scenario.script)
    _batch(port, warm, cpu)
    reqs = build(port, mode, connections, per_conn, users, scenario.script)
    before = cpu_snapshot(server_pid) if server_pid else None
    r = _batch(port, reqs, cpu, rate)
    if before:  # CPU milliseconds per message, of the bot and of the stores
        after = cpu_snapshot(server_pid)
        r["cpu_ms"] = {k: (after[k] - before[k]) * 1000 / r["requests"] for k in before}
    return r


def replies(mode: str, bodies: list[bytes]) -> list[str]:
    side = WeChatSide(ENV["WECHAT_TOKEN"], ENV["WECHAT_APP_ID"], ENV["WECHAT_ENCODING_AES_KEY"],
                      mode)
    return [side.read_reply(b).get("Content") or "" for b in bodies]


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"


def scratch_postgres(admin_url: str, prefix: str = "vipbot_bench_") -> tuple[str, callable] | None:
    """A fresh PostgreSQL database for this run (dropped at the end), or None when the
    server does not answer."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}{os.getpid()}"
    try:
        admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"),
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 (any failure: no PostgreSQL for this run)
        print(f"PostgreSQL not available ({type(exc).__name__}); measuring SQLite only")
        return None

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--messages", type=int, default=30000, help="per row")
    ap.add_argument("--customers", type=int, default=1000,
                    help="bound customers per row of a bound scenario")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, of {', '.join(SCENARIOS)}")
    ap.add_argument("--modes", default="plain,safe", help="comma-separated, of plain, safe")
    ap.add_argument("--stores", default="sqlite,postgresql",
                    help="comma-separated, of sqlite (embedded) and postgresql (+ Redis), "
                         "measured in this one run beside one echo")
    ap.add_argument("--pg-admin-url", default=PG_ADMIN,
                    help="a PostgreSQL database to create this run's scratch database from")
    ap.add_argument("--pg-name-prefix", default="vipbot_bench_",
                    help="the scratch database's name: this prefix and the run's process id")
    ap.add_argument("--redis-url", default=REDIS, help="for the postgresql store ('' for none)")
    ap.add_argument("--database-url", default="",
                    help="measure this one database instead (no scratch database)")
    ap.add_argument("--rate", type=float, default=0,
                    help="send the measured messages at this fixed rate (messages a second "
                         "over all connections, latency counted from each one's scheduled "
                         "time), below saturation; 0: as fast as answered (saturation)")
    ap.add_argument("--pg-workers", type=int, default=2,
                    help="also measure `serve --workers N` on PostgreSQL + Redis, unpinned "
                         "(0: not)")
    args = ap.parse_args()
    scenarios = [x for x in args.scenarios.split(",") if x]
    modes = [x for x in args.modes.split(",") if x]
    per_conn_users = -(-args.customers // args.connections)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)

    def per_conn(scenario: str) -> int:
        n = len(SCENARIOS[scenario].script)
        return max(n, args.messages // args.connections // n * n)

    def users(scenario: str, mode: str, echo: bool, store: str = "") -> list[list[str]]:
        count = per_conn_users if SCENARIOS[scenario].bound else 25
        return [users_of(scenario, mode, c, count, echo) for c in range(args.connections)]

    rows = []
    cleanups = []
    with tempfile.TemporaryDirectory() as tmp:
        stores: list[tuple[str, dict]] = []
        if args.database_url:
            label = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite (WAL)"
            stores.append((label + (" + Redis" if args.redis_url and label != "SQLite (WAL)" else ""),
                           {"DATABASE_URL": args.database_url,
                            "REDIS_URL": args.redis_url if label != "SQLite (WAL)" else ""}))
        else:
            for store in [x for x in args.stores.split(",") if x]:
                if store == "sqlite":
                    stores.append(("SQLite (WAL)", {"DATABASE_URL": f"sqlite:///{tmp}/bench.db",
                                                    "REDIS_URL": ""}))
                elif store == "postgresql":
                    made = scratch_postgres(args.pg_admin_url, args.pg_name_prefix)
                    if made:
                        cleanups.append(made[1])
                        stores.append(("PostgreSQL" + (" + Redis" if args.redis_url else ""),
                                       {"DATABASE_URL": made[0], "REDIS_URL": args.redis_url,
                                        "REDIS_PREFIX": f"vipbot-bench-{os.getpid()}:"}))
                else:
                    raise SystemExit(f"unknown store {store!r}: sqlite or postgresql")
        try:
            for store_label, store_env in stores:
                env = dict(ENV, **store_env)
                full_env = {**os.environ, **env}
                subprocess.run([sys.executable, "main.py", "db", "upgrade"], cwd=ROOT, check=True,
                               env=full_env, stdout=subprocess.DEVNULL)
                bound = [o for sc in scenarios if SCENARIOS[sc].bound for m in modes
                         for conn in users(sc, m, False) for o in conn]
                if bound:
                    started = time.monotonic()
                    report = set_up(full_env, Path(tmp), bound)
                    print(f"{store_label}: set up {len(bound)} bound customers in "
                          f"{time.monotonic() - started:.0f} s")
                    print("   " + "\n   ".join(line for line in report.splitlines()
                                                if line.startswith(("import", "bind", "  bound",
                                                                    "  rejected", "  tier"))))
                targets = [("bot", "bot.asgi:make", sc, 1) for sc in scenarios]
                if not store_label.startswith("SQLite") and args.pg_workers > 1:
                    targets += [("bot", "bot.asgi:make", sc, args.pg_workers) for sc in scenarios]
                if not rows:  # one echo per run, first
                    targets.insert(0, ("reference echo", "bench.echo_app:app", "binding", 1))
                for name, app, scenario, workers in targets:
                    for mode in modes:  # the account's mode is a setting: one server each
                        port = free_port()
                        # One worker: pinned to one core, the load on the other. Several:
                        # unpinned, as `serve --workers N` runs.
                        pinned = workers == 1
                        server = start_server(app, dict(env, WECHAT_MESSAGE_MODE=mode), port,
                                              server_cpu if pinned else None, workers=workers)
                        echo = name != "bot"
                        try:
                            time.sleep(0 if pinned else 5)  # every worker up
                            r = measure(port, mode, args.connections, per_conn(scenario),
                                        users(scenario, mode, echo), SCENARIOS[scenario],
                                        load_cpu if pinned else None, server.pid,
                                        args.rate or None)
                            label = store_label + ("" if pinned else f" ×{workers}")
                            rows.append((name, "-" if echo else label,
                                         scenario if not echo else "-", mode, r))
                        finally:
                            server.send_signal(signal.SIGINT)
                            server.wait(10)
                        if not echo:
                            said = replies(mode, r["last"])
                            wrong = [t for t in said if ERROR in t or NEEDS_BINDING in t
                                     or SCENARIOS[scenario].expect not in t]
                            r["failures"] += len(wrong)
                            r["sample"] = said[0][:70].replace("\n", " / ")
                            if wrong and not r["first_failure"]:
                                r["first_failure"] = f"last reply: {wrong[0][:200]!r}"
        finally:
            for drop in cleanups:
                drop()

    ref = {mode: r["rps"] for name, _, _, mode, r in rows if name == "reference echo"}
    print(f"\n/wechat, one worker, {args.connections} connections, about {args.messages} "
          f"messages per row"
          + (f" offered at {args.rate:g} a second" if args.rate else " (saturation)")
          + f"; bound scenarios over {per_conn_users * args.connections} "
          f"customers per row; PostgreSQL and Redis share this machine's cores with the bot")
    print(f"{'target':15} {'store':23} {'scenario':9} {'mode':6} {'msg/s':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'vs echo':>7} {'errors':>7}")
    for name, store, scenario, mode, r in rows:
        print(f"{name:15} {store:23} {scenario:9} {mode:6} {r['rps']:8.0f} {r['p50_ms']:8.2f} "
              f"{r['p99_ms']:8.2f} {r['rps'] / ref[mode]:7.0%} {r['failures']:7d}")
        cpu = r.get("cpu_ms", {})
        print("   max ms", round(r["max_ms"]), "  CPU ms per message:",
              ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) or "-",
              "  reply:", r.get("sample", "(echo)"))
        if r["first_failure"]:
            print("   first failure:", r["first_failure"])
    stores_seen = sorted({s for _, s, _, _, _ in rows if s != "-" and "×" not in s})
    if len(stores_seen) == 2:
        print("\nPostgreSQL + Redis against the embedded default, same scenario and mode:")
        by = {(s, sc, m): r for _, s, sc, m, r in rows}
        emb = next(s for s in stores_seen if s.startswith("SQLite"))
        pg = next(s for s in stores_seen if s != emb)
        for sc in scenarios:
            for m in modes:
                if (emb, sc, m) in by and (pg, sc, m) in by:
                    print(f"   {sc:9} {m:6} {by[(pg, sc, m)]['rps'] / by[(emb, sc, m)]['rps']:6.0%}")
                    many = next((s for s in by if s[0].startswith(pg + " ×") and s[1:] == (sc, m)),
                                None)
                    if many:
                        print(f"   {sc:9} {m:6} {many[0]}: "
                              f"{by[many]['rps'] / by[(emb, sc, m)]['rps']:6.0%} of one embedded worker")


if __name__ == "__main__":
    main()
