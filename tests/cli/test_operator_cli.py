"""The operator's commands, run as a subprocess as an operator would: messages left for a
human agent, privacy export, and the rough edges a newcomer hits (db upgrade says what it
did, a future --date needs --yes, demo load --if-empty repeats how to try binding)."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from sqlmodel import Session

from bot.domain.accounts import bind
from models import LeftMessage
from tests.support import factories
from tests.support import ROOT
from tests.support.imports import cli_env

U = "oCliUser00000000000000001"


def main(db_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=cli_env(db_url),
                          capture_output=True, text=True, timeout=120)


def test_messages_list_and_close(db_url, engine):
    now = datetime.now(timezone.utc)
    with Session(engine) as s:
        s.add(LeftMessage(openid=U, text="请回电话", created_at=now - timedelta(hours=2)))
        s.add(LeftMessage(openid=U + "2", text="理赔进度", created_at=now - timedelta(hours=1)))
        s.commit()
    listed = main(db_url, "messages", "list", "--open")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2 and "请回电话" in lines[0] and "理赔进度" in lines[1]  # oldest first
    first_id = lines[0].split("\t")[0].lstrip("#")
    closed = main(db_url, "messages", "close", first_id, "--by", "o_staff_wang")
    assert closed.returncode == 0 and f"#{first_id} closed" in closed.stdout
    still_open = main(db_url, "messages", "list", "--open").stdout
    assert "请回电话" not in still_open and "理赔进度" in still_open
    assert "o_staff_wang" in main(db_url, "messages", "list").stdout
    assert main(db_url, "messages", "close", "99999").returncode == 1


def test_privacy_export_shows_what_is_held(db_url, engine):
    with Session(engine) as s:
        c = factories.customer(s, name="吴敏", sex="F", tier="gold")
        factories.policy(s, c, "PX00000001", premium="120000")
        factories.family(s, c, "child", "吴小明", datetime(2010, 3, 3).date(), "M")
        bind(s, U, c, datetime.now(timezone.utc))
        s.add(LeftMessage(openid=U, text="请回电话", created_at=datetime.now(timezone.utc)))
        s.commit()
    res = main(db_url, "privacy", "export", U)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["customer"]["name"] == "吴敏"
    assert [p["policy_no"] for p in data["policies"]] == ["PX00000001"]
    assert data["family_members"][0]["name"] == "吴小明"
    assert data["left_messages"][0]["text"] == "请回电话"
    assert data["bookings"] == [] and data["hospital_visits"] == []
    assert main(db_url, "privacy", "export", "o_nobody").returncode == 1


def test_db_upgrade_says_what_it_did(tmp_path):
    url = f"sqlite:///{tmp_path / 'data' / 'fresh.db'}"  # a fresh clone has no data/ folder yet
    first = main(url, "db", "upgrade")
    assert first.returncode == 0 and "created the database schema" in first.stdout
    again = main(url, "db", "upgrade")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_a_future_recompute_date_needs_yes(db_url):
    future = (datetime.now(timezone(timedelta(hours=8))).date() + timedelta(days=40)).isoformat()
    refused = main(db_url, "tiers", "recompute", "--date", future)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert main(db_url, "tiers", "recompute", "--date", future, "--yes").returncode == 0
    today = main(db_url, "tiers", "recompute")
    assert today.returncode == 0


def test_demo_load_if_empty_repeats_the_unbound_policyholder(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = main(url, "demo", "load", "--if-empty")
    assert first.returncode == 0 and "to try 绑定" in first.stdout
    line = next(l for l in first.stdout.splitlines() if "to try 绑定" in l)
    again = main(url, "demo", "load", "--if-empty")
    assert "already has customers" in again.stdout and line in again.stdout


def test_chat_at_a_dead_port_says_so(db_url):
    from tests.conftest import _free_port

    url = f"http://127.0.0.1:{_free_port()}/wechat"  # nothing listens there
    res = subprocess.run([sys.executable, "main.py", "chat", "--url", url], cwd=ROOT,
                         env=cli_env(db_url), capture_output=True, text=True, timeout=60,
                         input="")
    assert res.returncode == 1
    assert "无法连接" in res.stdout and "已连接" not in res.stdout


def test_the_documented_example_files_import_cleanly(db_url):
    """docs/imports.md shows these files: they must stay true."""
    for kind in ("policies", "family", "institutions"):
        res = main(db_url, "import", kind, str(ROOT / "docs" / "examples" / f"{kind}.csv"))
        assert res.returncode == 0, (kind, res.stdout, res.stderr)


def test_faq_unanswered_lists_questions_in_local_time_without_identity(db_url, engine):
    from models import UnansweredQuestion

    # 22:30 in Shanghai on 1 December is 14:30 UTC: the list shows the local time and date.
    late = datetime(2026, 12, 1, 14, 30, tzinfo=timezone.utc)
    with Session(engine) as s:
        s.add(UnansweredQuestion(text="年会在哪里开", tier="gold", asked_at=late))
        s.add(UnansweredQuestion(text="积分能换什么", tier=None, asked_at=late - timedelta(days=2)))
        s.commit()
    res = main(db_url, "faq", "unanswered")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines == ["2026-11-29 22:30\t-\t积分能换什么", "2026-12-01 22:30\tgold\t年会在哪里开"]
    # --since is a local date: 1 December from 00:00 Shanghai (16:00 UTC on 30 November).
    since = main(db_url, "faq", "unanswered", "--since", "2026-12-01").stdout
    assert "年会在哪里开" in since and "积分能换什么" not in since
    assert "no unanswered questions" in main(db_url, "faq", "unanswered", "--since", "2026-12-02").stdout
    assert main(db_url, "faq", "unanswered", "--since", "12/01").returncode != 0
