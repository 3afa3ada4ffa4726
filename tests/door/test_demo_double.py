"""The demo's WeChat double (`serve --demo`) keeps WeChat's side in the demo database: two
workers share one double (a token one issued is good at the other), tags and the menu
survive a restart, and the CLI on the demo's settings talks to it, never to WeChat."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import httpx
import pytest

from bot.app import create_app
from tests.conftest import APP_ID, APP_SECRET, _serve
from tests.support import ROOT
from tests.support.imports import cli_env


@pytest.fixture
def worker(settings):
    """Start a `serve --demo` worker (the production app with the double mounted) on the
    test's database; each call is another worker, or the same one after a restart."""
    running = []

    def start():
        app = create_app(settings.model_copy(update={"wechat_double": True}), mount_double=True)
        server, thread = _serve(app)
        running.append((server, thread))
        return app.state.base_url + "/wechat-double/cgi-bin/", (server, thread)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(10)


def stop(handle) -> None:
    server, thread = handle
    server.should_exit = True
    thread.join(10)


def token_from(base: str) -> str:
    res = httpx.post(base + "stable_token", json={"grant_type": "client_credential",
                                                  "appid": APP_ID, "secret": APP_SECRET})
    return res.json()["access_token"]


def test_two_workers_share_one_double_and_it_survives_a_restart(worker):
    one, first = worker()
    two, _ = worker()
    token = token_from(one)
    # The token worker one issued is good at worker two (it was refused with 40001).
    tags = httpx.get(two + "tags/get", params={"access_token": token}).json()
    assert tags == {"tags": []}
    assert token_from(two) == token  # WeChat's stable token: the one it holds
    made = httpx.post(two + "tags/create", params={"access_token": token},
                      json={"tag": {"name": "VIP-钻石"}}).json()
    tag_id = made["tag"]["id"]
    assert httpx.post(one + "tags/members/batchtagging", params={"access_token": token},
                      json={"openid_list": ["o_demo_diamond"], "tagid": tag_id}).json() == {
        "errcode": 0, "errmsg": "ok"}
    # A restart of worker one: the tag, its member and the token are still there.
    stop(first)
    again, _ = worker()
    got = httpx.get(again + "tags/get", params={"access_token": token}).json()
    assert got == {"tags": [{"id": tag_id, "name": "VIP-钻石", "count": 1}]}


def demo_cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI on the demo's settings: .env.example's AppSecret, and WeChat's real host as
    the API base (which this machine cannot reach: a call that went there would fail)."""
    from bot.cli import example_values

    env = {**cli_env(db_url), "WECHAT_APP_ID": APP_ID,
           "WECHAT_APP_SECRET": example_values()["WECHAT_APP_SECRET"],
           "WECHAT_API_BASE_URL": "https://api.weixin.qq.com"}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_on_demo_settings_talks_to_the_demo_double(db_url, engine, worker):
    from sqlmodel import Session

    from bot.domain.accounts import bind
    from tests.support import factories

    with Session(engine) as s:
        bind(s, "o_demo_gold", factories.customer(s, name="李四", tier="gold"),
             datetime.now(timezone.utc))
        s.commit()
    pushed = demo_cli(db_url, "menu", "push")
    assert pushed.returncode == 0, pushed.stderr
    assert "menu pushed" in pushed.stdout and "local double" in pushed.stderr
    shown = demo_cli(db_url, "menu", "show")
    assert shown.returncode == 0, shown.stderr
    synced = demo_cli(db_url, "tags", "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    jobs = demo_cli(db_url, "jobs", "run", "dispatch")
    assert jobs.returncode == 0, jobs.stderr
    # What the CLI did is what the server's double holds.
    base, _ = worker()
    token = token_from(base)
    menu = httpx.get(base + "menu/get", params={"access_token": token}).json()
    names = [b["name"] for b in menu["menu"]["button"]]
    assert names and all(name in shown.stdout for name in names)
    tags = httpx.get(base + "tags/get", params={"access_token": token}).json()["tags"]
    gold = [t for t in tags if "黄金" in t["name"]]
    assert len(gold) == 1 and gold[0]["count"] == 1
