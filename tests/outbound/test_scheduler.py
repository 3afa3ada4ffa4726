"""The daily tier job, on a real APScheduler with controlled time."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime
from pathlib import Path

import pytest
import time_machine
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from sqlmodel import Session

from models import Customer
from scheduler import add_jobs
from tests.support import factories
from tests.conftest import USE_PG
from tests.support import ROOT



def test_tiers_job_is_due_at_half_past_midnight_in_shanghai(settings):
    with time_machine.travel(datetime.fromisoformat("2026-06-29T23:00:00+08:00"), tick=False):
        sched = add_jobs(BackgroundScheduler(timezone=settings.tz), settings)
        sched.start(paused=True)
        try:
            job = sched.get_job("tiers")
            assert job.next_run_time.isoformat() == "2026-06-30T00:30:00+08:00"
        finally:
            sched.shutdown(wait=False)


def test_tiers_job_upgrades_when_it_fires(settings, services):
    with Session(services.engine, expire_on_commit=False) as s:
        c = factories.customer(s, tier="mass")
        factories.policy(s, c, "PSCHED00001", premium="150000", effective=date(2025, 1, 1))
        s.commit()
    fired = []
    with time_machine.travel(datetime.fromisoformat("2026-03-02T00:29:59+08:00"), tick=True):
        sched = add_jobs(BackgroundScheduler(timezone=settings.tz), settings,
                         today=lambda: date(2026, 3, 2))
        sched.add_listener(lambda ev: fired.append(ev), mask=EVENT_JOB_EXECUTED)
        sched.start()
        try:
            for _ in range(300):
                if fired:
                    break
                time.sleep(0.02)
        finally:
            sched.shutdown(wait=True)
    assert fired
    with Session(services.engine) as s:
        assert s.get(Customer, c.id).tier == "gold"


def test_review_downgrade_waits_for_the_end_of_the_review_day(settings, services):
    from scheduler import run_tiers

    with Session(services.engine, expire_on_commit=False) as s:
        c = factories.customer(s, tier="platinum")  # earns only gold now
        factories.policy(s, c, "PSCHED00002", premium="150000", effective=date(2025, 1, 1))
        s.commit()
    run_tiers(settings, date(2026, 6, 30))  # the run early on 30 June keeps the tier
    with Session(services.engine) as s:
        assert s.get(Customer, c.id).tier == "platinum"
    report = run_tiers(settings, date(2026, 7, 1))  # early on 1 July: the review applies
    assert "2026-06-30" in report
    with Session(services.engine) as s:
        assert s.get(Customer, c.id).tier == "gold"
        assert s.get(Customer, c.id).tier_since == date(2026, 7, 1)


def test_jobs_run_cli(db_url):
    env = {**os.environ, "DATABASE_URL": db_url, "WECHAT_APP_ID": "wx1",
           "WECHAT_APP_SECRET": "s", "WECHAT_TOKEN": "tok", "REDIS_URL": "",
           "SECRET_KEY": "cli-secret-key-0123456789"}
    res = subprocess.run([sys.executable, "main.py", "jobs", "run", "tiers", "--date", "2026-07-01"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "2026-06-30" in res.stdout and "2026-07-01" in res.stdout
    res = subprocess.run([sys.executable, "main.py", "jobs", "run", "tiers", "--date", "2026-02-30"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "not a date" in res.stderr


@pytest.mark.parametrize("level,shown", [("INFO", False), ("DEBUG", True)])
def test_apscheduler_runs_are_quiet_at_info(caplog, level, shown):
    """At LOG_LEVEL=INFO a job run every few seconds writes no line of its own; at DEBUG
    APScheduler's lines are back."""
    import threading

    from apscheduler.schedulers.background import BackgroundScheduler

    from bot.app import CHATTY_LOGGERS, configure_logging

    before = {n: logging.getLogger(n).level for n in CHATTY_LOGGERS}
    configure_logging(level)
    ran = threading.Event()
    scheduler = BackgroundScheduler()
    try:
        with caplog.at_level(logging.DEBUG, logger="bot"):
            scheduler.add_job(ran.set, "interval", minutes=5, next_run_time=datetime.now())
            scheduler.start()
            assert ran.wait(5)
            scheduler.shutdown(wait=True)
    finally:
        for name, lvl in before.items():
            logging.getLogger(name).setLevel(lvl)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")]
    assert any("executed successfully" in m for m in lines) is shown, lines


if USE_PG:  # the scheduler's lock is PostgreSQL's (on SQLite one process by construction)

    class SchedulerProcess:
        """`python main.py scheduler` as an operator starts it; its log read as it comes."""

        def __init__(self, env: dict) -> None:
            self.lines: list[str] = []
            self.proc = subprocess.Popen([sys.executable, "main.py", "scheduler"], cwd=ROOT,
                                         env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
            threading.Thread(target=self._read, daemon=True).start()

        def _read(self) -> None:
            for line in self.proc.stdout:
                self.lines.append(line)

        def said(self, text: str) -> bool:
            return any(text in line for line in self.lines)

        def wait_for(self, text: str, seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if self.said(text):
                    return True
                time.sleep(0.1)
            return False

        def kill(self) -> None:
            if self.proc.poll() is None:
                self.proc.kill()  # SIGKILL: no cleanup, the lock goes with the connection
            self.proc.wait(10)

    def _queue_text(engine, openid: str, text: str, key: str) -> None:
        from datetime import timezone

        from bot.domain import notify
        from models import WechatUser

        now = datetime.now(timezone.utc)
        with Session(engine) as s:
            if s.get(WechatUser, openid) is None:
                s.add(WechatUser(openid=openid, following=True, last_seen_at=now,
                                 bind_failures=0))
            notify.text_message(s, openid, text, now, key=key)
            s.commit()

    def _sent_texts(sent) -> list[str]:
        return [m["body"]["text"]["content"] for m in sent if m["api"] == "custom"]

    def test_two_scheduler_processes_one_active_the_other_takes_over(db_url, engine,
                                                                      wechat_api, sent):
        from tests.support.imports import cli_env

        env = {**cli_env(db_url), "WECHAT_API_BASE_URL": wechat_api.state.base_url,
               "WECHAT_APP_ID": "wx1234567890abcdef", "WECHAT_APP_SECRET": "test-secret",
               "OUTBOX_POLL_SECONDS": "0.5", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        first = SchedulerProcess(env)
        second = None
        try:
            assert first.wait_for("scheduler started", 60), "".join(first.lines)
            second = SchedulerProcess(env)
            assert second.wait_for("standing by", 60), "".join(second.lines)
            _queue_text(engine, "oSched0000000001", "第一条", "sched:1")
            for _ in range(100):
                if _sent_texts(sent):
                    break
                time.sleep(0.1)
            assert _sent_texts(sent) == ["第一条"]  # sent by the active one, once
            assert not second.said("scheduler started")  # the standby runs nothing

            first.kill()
            _queue_text(engine, "oSched0000000001", "第二条", "sched:2")
            assert second.wait_for("scheduler started", 30), "".join(second.lines)
            for _ in range(100):
                if len(_sent_texts(sent)) == 2:
                    break
                time.sleep(0.1)
            assert _sent_texts(sent) == ["第一条", "第二条"]
            # At INFO, APScheduler's lines for each run stay out of the log.
            assert not any("Running job" in line or "executed successfully" in line
                           for line in first.lines + second.lines)
        finally:
            first.kill()
            if second is not None:
                second.kill()
