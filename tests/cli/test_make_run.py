"""`make run` as a newcomer types it: HOST= and PORT= choose where it serves, and it prints
the addresses it serves."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import _free_port
from tests.support import ROOT
from tests.support.imports import cli_env


def test_make_run_serves_on_the_port_it_is_given(tmp_path: Path):
    port = _free_port()
    venv = Path(sys.prefix)
    env = {**cli_env(f"sqlite:///{tmp_path / 'bot.db'}"), "PYTHONUNBUFFERED": "1",
           "IN_PROCESS_JOBS": "false", "ADMIN_ENABLED": "true"}
    # The shared virtualenv stands in for .venv (-o: it counts as installed); .env is not
    # made either, every setting is in the environment.
    proc = subprocess.Popen(["make", "--no-print-directory", "run", f"PORT={port}",
                             "HOST=127.0.0.1", f"VENV={venv}", "-o", str(venv / ".installed"),
                             "-o", ".env"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        ready = None
        for _ in range(300):
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, "nothing answers on the port"
        assert httpx.get(f"http://127.0.0.1:{port}/wechat").status_code == 400  # unsigned
        simulator = httpx.get(f"http://127.0.0.1:{port}/simulator")
        assert simulator.status_code == 200 and "预约服务" in simulator.text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as browser:
            form = browser.get("/admin/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            signed_in = browser.post("/admin/login", data={
                "login": "admin", "password": "vip-demo-admin", "csrf": csrf, "next": ""})
            assert signed_in.status_code == 303, signed_in.text  # the printed login works
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    base = f"http://127.0.0.1:{port}"
    first = out[out.index("Try the bot"):].splitlines()
    assert first[0] == f"Try the bot in a browser: {base}/simulator"
    assert first[1] == f"Staff console: {base}/admin  (demo admin: admin / vip-demo-admin)"
    for line in (f"Serving WeChat's server URL at {base}/wechat", f"{base}/healthz",
                 f"{base}/readyz", f"{base}/wechat-double", f"chat --url {base}/wechat"):
        assert line in out, out
    assert ":8000" not in out
