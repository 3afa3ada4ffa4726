"""Start-up through the real CLI (a subprocess): production refuses the demo's settings, and
a database or Redis it cannot use stops it with one line naming the setting, never a
traceback."""
from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.support import ROOT

EXAMPLE = {line.split("=", 1)[0]: line.split("=", 1)[1]
           for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
           if line and not line.startswith("#") and "=" in line}
PRODUCTION = {
    "WECHAT_APP_ID": "wx1234567890abcdef",
    "WECHAT_APP_SECRET": "a-real-app-secret-0001",
    "WECHAT_TOKEN": "realtoken42",
    "WECHAT_ENCODING_AES_KEY": base64.b64encode(bytes(range(32))).decode().rstrip("="),
    "SMS_PROVIDER": "http",
    "SMS_GATEWAY_URL": "http://127.0.0.1:1/sms/send",
    "REDIS_URL": "",
    "SECRET_KEY": "a-real-secret-key-0123456789abcdef",
}


def cli(*args: str, tmp_path: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("WECHAT_", "SMS_", "DATABASE_URL", "REDIS_URL", "DB_"))}
    base.update(PRODUCTION, DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}")
    base.update(env)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], env=base,
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def assert_one_line(res: subprocess.CompletedProcess, setting: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in res.stderr + res.stdout, res.stderr
    assert line.startswith(f"Setting {setting}"), line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Production refuses the demo's settings -------------------------------------------------


@pytest.mark.parametrize("setting", ["WECHAT_TOKEN", "WECHAT_ENCODING_AES_KEY",
                                     "WECHAT_APP_SECRET"])
def test_serve_refuses_a_placeholder_from_env_example(tmp_path, setting):
    res = cli("serve", "--port", str(_free_port()), tmp_path=tmp_path, timeout=30,
              **{setting: EXAMPLE[setting]})
    assert_one_line(res, setting)
    assert ".env.example" in res.stderr


@pytest.mark.parametrize("provider", ["log", "none"])
def test_serve_refuses_the_demo_sms_providers(tmp_path, provider):
    res = cli("serve", "--port", str(_free_port()), tmp_path=tmp_path, timeout=30,
              SMS_PROVIDER=provider)
    assert_one_line(res, "SMS_PROVIDER")


def test_serve_demo_runs_on_the_example_settings(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WECHAT_", "SMS_", "DATABASE_URL", "REDIS_URL", "DB_"))}
    env.update({k: v for k, v in EXAMPLE.items() if k != "DATABASE_URL" and k != "RULES_FILE"},
               DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}")
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "serve", "--demo",
                             "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        else:
            pytest.fail("serve --demo did not become ready")
    finally:
        proc.terminate()
        proc.wait(10)
    # uvicorn's own lines carry the app's time stamp: ISO 8601 with the offset (issue 14 §3).
    logged = proc.stderr.read().decode()
    for said in ("Started server process", "Application startup complete", "Uvicorn running on"):
        line = next((x for x in logged.splitlines() if said in x), None)
        assert line is not None, logged
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00 INFO ", line), line


# --- A database or Redis it cannot use: one line ---------------------------------------------


def test_a_wrong_database_name(tmp_path):
    res = cli("serve", "--port", str(_free_port()), tmp_path=tmp_path, timeout=30,
              DATABASE_URL="postgresql://postgres@127.0.0.1:5432/vipbot_no_such_database")
    assert_one_line(res, "DATABASE_URL")
    assert "vipbot_no_such_database" in res.stderr


def test_an_unreachable_redis(tmp_path):
    res = cli("serve", "--port", str(_free_port()), tmp_path=tmp_path, timeout=30,
              REDIS_URL="redis://127.0.0.1:1/0")
    assert_one_line(res, "REDIS_URL")
    assert "unreachable" in res.stderr


@pytest.fixture
def read_only_sqlite(tmp_path, migrated_db):
    """A migrated SQLite file the process cannot write (for root, whom file modes do not
    stop, made immutable)."""
    if not isinstance(migrated_db, Path):
        migrated_db = None
    path = tmp_path / "ro.db"
    if migrated_db is not None:
        shutil.copy(migrated_db, path)
    else:
        res = cli("db", "upgrade", tmp_path=tmp_path, DATABASE_URL=f"sqlite:///{path}")
        assert res.returncode == 0, res.stderr
    path.chmod(0o444)
    immutable = False
    if os.geteuid() == 0:
        immutable = shutil.which("chattr") is not None and subprocess.run(
            ["chattr", "+i", str(path)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("running as root without chattr: no way to make a file read-only")
    yield path
    if immutable:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def test_a_read_only_sqlite_file(tmp_path, read_only_sqlite):
    res = cli("serve", "--port", str(_free_port()), tmp_path=tmp_path, timeout=30,
              DATABASE_URL=f"sqlite:///{read_only_sqlite}")
    assert_one_line(res, "DATABASE_URL")
    assert "readonly" in res.stderr or "read-only" in res.stderr
