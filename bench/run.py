"""`make bench`: the bot's /wechat against the bare FastAPI + wechatpy echo (the reference),
in one run, on loopback, one server worker pinned to one core and the load on the other.

The bot runs in its production configuration on the embedded default (SQLite in WAL mode,
message de-duplication and the conversation state store on) and receives stateful traffic:
each simulated customer starts the identity-binding flow, answers its first question and
leaves it again, so that every message reads and writes that customer's flow state.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
SCRIPT = ["绑定", "张三", "退出"]  # start a flow, answer step one, leave: all stateful


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app: str, env: dict, port: int, cpu: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--no-access-log", "--log-level", "warning"]
    if app.endswith(":make"):
        cmd.append("--factory")
    pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, preexec_fn=pre)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{app} did not start")


def build(port: int, mode: str, connections: int, per_conn: int, echo: bool) -> list[list[bytes]]:
    side = WeChatSide(ENV["WECHAT_TOKEN"], ENV["WECHAT_APP_ID"], ENV["WECHAT_ENCODING_AES_KEY"],
                      mode)
    ids = itertools.count(int(time.time() * 1e6))
    out = []
    for c in range(connections):
        reqs = []
        users = [f"obench{mode[:2]}{c:03d}u{u:03d}{'e' if echo else 'b'}" for u in range(25)]
        for i in range(per_conn):
            user = users[(i // len(SCRIPT)) % len(users)]
            xml = text_xml(user, SCRIPT[i % len(SCRIPT)], msg_id=next(ids))
            params, body = side.request(xml, openid=user)
            qs = "&".join(f"{k}={v}" for k, v in params.items())
            reqs.append(build_request("127.0.0.1", port, f"/wechat?{qs}", body))
        out.append(reqs)
    return out


def _load(queue, port, per_connection, cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    queue.put(run_load("127.0.0.1", port, per_connection,
                       check=lambda b: b.startswith(b"<xml>")))


def measure(port, mode, connections, per_conn, echo, cpu):
    warm = build(port, mode, connections, max(6, per_conn // 10), echo)
    timed = build(port, mode, connections, per_conn, echo)
    for batch in (warm, timed):
        q = mp.Queue()
        p = mp.Process(target=_load, args=(q, port, batch, cpu))
        p.start()
        result = q.get()
        p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--messages", type=int, default=30000, help="per target and mode")
    ap.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    ap.add_argument("--redis-url", default="")
    args = ap.parse_args()
    per_conn = max(len(SCRIPT), args.messages // args.connections)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(ENV, DATABASE_URL=args.database_url or f"sqlite:///{tmp}/bench.db",
                   REDIS_URL=args.redis_url)
        subprocess.run([sys.executable, "main.py", "db", "upgrade"], cwd=ROOT, check=True,
                       env={**os.environ, **env}, stdout=subprocess.DEVNULL)
        rows = []
        for name, app in (("reference echo", "bench.echo_app:app"), ("bot", "bot.asgi:make")):
            for mode in ("plain", "safe"):  # the account's mode is a setting: one server each
                port = free_port()
                server = start_server(app, dict(env, WECHAT_MESSAGE_MODE=mode), port, server_cpu)
                try:
                    r = measure(port, mode, args.connections, per_conn, name != "bot", load_cpu)
                    rows.append((name, mode, r))
                finally:
                    server.send_signal(signal.SIGINT)
                    server.wait(10)

    ref = {mode: r["rps"] for name, mode, r in rows if name == "reference echo"}
    store = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite (WAL)"
    print(f"\n/wechat, one worker, {args.connections} connections, {per_conn * args.connections} "
          f"messages per row; bot state on {store}{' + Redis' if args.redis_url else ''}")
    print(f"{'target':16} {'mode':6} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs ref':>7} {'errors':>7}")
    for name, mode, r in rows:
        print(f"{name:16} {mode:6} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['rps'] / ref[mode]:7.0%} {r['failures']:7d}")
        print("   max ms", round(r["max_ms"]))
        if r["first_failure"]:
            print("   first failure:", r["first_failure"])


if __name__ == "__main__":
    main()
