"""`main.py chat` against a running bot: the subscribe event WeChat sends on 关注 opens the
chat only for a new follower, or with --subscribe."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest
from sqlmodel import Session

from models import WechatUser
from tests.conftest import AES_KEY, APP_ID, APP_SECRET, SECRET_KEY, TOKEN, _serve
from tests.support import ROOT
from tests.support.imports import cli_env

WELCOME = "欢迎关注"  # bot/templates/welcome.j2, the answer to a subscribe event
FOLLOWER = "oChatFollower0000000000001"


@pytest.fixture
def live_url(app):
    server, thread = _serve(app)
    yield app.state.base_url + "/wechat"
    server.should_exit = True
    thread.join(10)


def chat(db_url: str, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**cli_env(db_url), "WECHAT_APP_ID": APP_ID, "WECHAT_APP_SECRET": APP_SECRET,
           "WECHAT_TOKEN": TOKEN, "WECHAT_ENCODING_AES_KEY": AES_KEY, "SECRET_KEY": SECRET_KEY}
    return subprocess.run([sys.executable, "main.py", "chat", "--url", url, "--mode", "plain",
                           *args], cwd=ROOT, env=env, input="帮助\n", capture_output=True,
                          text=True, timeout=120)


def test_a_follower_opening_the_chat_again_gets_no_subscribe(db_url, engine, live_url):
    with Session(engine) as s:
        s.add(WechatUser(openid=FOLLOWER, following=True,
                         subscribed_at=datetime(2026, 1, 5, tzinfo=timezone.utc)))
        s.commit()
    res = chat(db_url, live_url, "--openid", FOLLOWER)
    assert res.returncode == 0, res.stderr
    assert "已连接" in res.stdout and WELCOME not in res.stdout
    assert "我可以帮您办理这些事" in res.stdout  # the line typed was answered
    with Session(engine) as s:  # no second 关注 recorded
        assert s.get(WechatUser, FOLLOWER).subscribed_at.year == 2026
        assert s.get(WechatUser, FOLLOWER).subscribed_at.month == 1

    asked = chat(db_url, live_url, "--openid", FOLLOWER, "--subscribe")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.count(WELCOME) == 1


def test_a_new_follower_starts_with_the_subscribe_event(db_url, live_url):
    for args in ((), ("--openid", "oChatNewcomer0000000000001")):
        res = chat(db_url, live_url, *args)
        assert res.returncode == 0, res.stderr
        assert res.stdout.count(WELCOME) == 1


def test_no_bot_at_the_url_is_one_line(db_url):
    res = chat(db_url, "http://127.0.0.1:9/wechat", "--openid", FOLLOWER)
    assert res.returncode == 1 and "无法连接" in res.stdout and "Traceback" not in res.stderr
