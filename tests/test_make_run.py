"""`make run` as a newcomer types it: HOST= and PORT= choose where it serves, and it prints
the addresses it serves."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import _free_port
from tests.test_importer import ROOT, cli_env


def test_make_run_serves_on_the_port_it_is_given(tmp_path: Path):
    port = _free_port()
    venv = Path(sys.prefix)
    env = {**cli_env(f"sqlite:///{tmp_path / 'bot.db'}"), "PYTHONUNBUFFERED": "1",
           "IN_PROCESS_JOBS": "false"}
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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    base = f"http://127.0.0.1:{port}"
    for line in (f"Serving WeChat's server URL at {base}/wechat", f"{base}/healthz",
                 f"{base}/readyz", f"{base}/wechat-double", f"chat --url {base}/wechat"):
        assert line in out, out
    assert ":8000" not in out
