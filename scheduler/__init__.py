"""Scheduled jobs. `python main.py scheduler` runs them in their own process;
`python main.py jobs run JOB [--date]` runs one as if today were that day."""
from __future__ import annotations

import logging
from datetime import date, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.infra.config import Settings
from bot.infra.db import engine_for
from bot.domain.rules import load_rules

log = logging.getLogger("scheduler")


def run_tiers(settings: Settings, day: date) -> str:
    """The daily tier run, early on `day`: first, when yesterday was a review day
    (30 June, 31 December), that review's downgrades, effective today; then today's
    upgrades and drops. So a customer keeps their tier for the whole review day."""
    from bot.domain.tier_engine import recompute
    from bot.domain.tiers import is_review_day

    rules = load_rules(settings.rules_file)
    engine = engine_for(settings, pool_timeout=30)
    reports = []
    try:
        yesterday = day - timedelta(days=1)
        if is_review_day(yesterday, rules):
            reports.append(recompute(engine, rules, yesterday, review=True))
        reports.append(recompute(engine, rules, day, review=False))
        reports.append(sync_tier_tags(settings, engine, rules))
    finally:
        engine.dispose()
    text = "\n".join(r.render() for r in reports)
    log.info("%s", text)
    return text


class _Line:
    def __init__(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        return self.text


def sync_tier_tags(settings: Settings, engine, rules) -> "_Line":
    """After every tier run: WeChat's tier tags follow the tiers (broadcasts go by tag). A
    WeChat failure is reported, never fails the tier run; the next run retries."""
    from bot.domain.broadcasts import sync_tags
    from bot.infra.wechat_api import make_client

    try:
        return _Line(sync_tags(engine, make_client(settings, engine), rules).render())
    except Exception as exc:
        log.warning("tier tags not synced: %s", exc)
        return _Line(f"tags: not synced ({exc}); the next run retries")


def run_cleanup(settings: Settings, day: date | None = None) -> str:
    """Forget what is no longer needed: conversation records idle past the flow timeout
    (abandoned flows: no half-typed data kept for long), and binding counters whose
    windows and locks have passed."""
    import time

    from bot.conversation.stores import purge_states
    from bot.domain.accounts import purge_limits

    engine = engine_for(settings, pool_timeout=30)
    try:
        states = purge_states(engine, settings)
        longest = max(86400, settings.bind_customer_window_minutes * 60)
        with engine.begin() as conn:
            limits = purge_limits(conn, time.time(), longest)
    finally:
        engine.dispose()
    text = f"cleanup: {states} idle conversation record(s), {limits} expired binding counter(s)"
    log.info("%s", text)
    return text


def run_daily(settings: Settings, day: date) -> str:
    """The daily job: the tier run, then the cleanup."""
    return run_tiers(settings, day) + "\n" + run_cleanup(settings, day)


JOBS = {"tiers": run_tiers, "cleanup": run_cleanup, "daily": run_daily}


def add_jobs(scheduler: BaseScheduler, settings: Settings, today=None) -> BaseScheduler:
    from datetime import datetime

    def daily() -> None:
        run_daily(settings, (today or (lambda: datetime.now(settings.tz).date()))())

    # Shortly after midnight: the review of the day that just ended, then today's changes,
    # then the cleanup of abandoned conversations and expired counters.
    scheduler.add_job(daily, CronTrigger(hour=0, minute=30, timezone=settings.tz), id="tiers",
                      coalesce=True, max_instances=1, misfire_grace_time=6 * 3600,
                      replace_existing=True)
    return scheduler


def run_forever(settings: Settings) -> None:
    scheduler = add_jobs(BlockingScheduler(timezone=settings.tz), settings)
    log.info("scheduler started: %s", ", ".join(j.id for j in scheduler.get_jobs()))
    scheduler.start()
