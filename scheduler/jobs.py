"""Scheduled jobs. `python main.py scheduler` runs them in their own process;
`python main.py jobs run JOB [--date]` runs one as if today were that day.

Jobs: the daily tier run and cleanup (00:30), the reminder sweep (every few minutes: once
it is past REMINDER_HOUR, tomorrow's confirmed bookings not yet reminded), the outbox
dispatch (every OUTBOX_POLL_SECONDS). Each works out what is due from the data, so a
missed run catches up and a doubled one sends nothing twice. Jobs live in memory (no
pickled job store). On PostgreSQL only the process holding the advisory lock
`SCHEDULER_LOCK` runs them; another `scheduler` waits as a standby."""
from __future__ import annotations

import logging
from datetime import date, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.infra.config import Settings
from bot.infra.db import engine_for
from bot.domain.rules import load_rules, with_settings

log = logging.getLogger("scheduler")


def run_tiers(settings: Settings, day: date) -> str:
    """The daily tier run, early on `day`: first each review (30 June, 31 December) that ended
    since the last run and was not held yet, its downgrades effective the day after it (so a
    customer keeps their tier for the whole review day); then today's upgrades and drops, for
    the customers with an event since the last run (a missed day is caught up)."""
    from bot.domain.tier_engine import last_run, recompute_due
    from bot.domain.tiers import is_review_day, review_days_between

    rules = load_rules(settings.rules_file)
    engine = engine_for(settings, pool_timeout=30)
    reports = []
    try:
        yesterday = day - timedelta(days=1)
        last = last_run(engine)
        # The run early on a review day evaluates without the review; the run after it holds it.
        reviews = (review_days_between(last, yesterday, rules) if last is not None
                   else [yesterday] if is_review_day(yesterday, rules) else [])
        for review_day in reviews:
            reports.append(recompute_due(engine, rules, review_day, review=True,
                                         notice_days=settings.tier_notice_days))
        reports.append(recompute_due(engine, rules, day, review=False,
                                     notice_days=settings.tier_notice_days))
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
        rules = with_settings(load_rules(settings.rules_file), settings)
        longest = max(86400, rules.binding.customer_window_minutes * 60)
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


def _services(settings: Settings):
    from bot.wiring import build_services

    return build_services(settings)


def run_reminders(settings: Settings, day: date, services=None) -> str:
    """Queue the reminders for services on `day` + 1 (as if today were `day`, whatever the
    hour), then send what is due."""
    from datetime import datetime

    from scheduler.sweeps import queue_reminders

    own = services is None
    services = services or _services(settings)
    try:
        now = datetime.now(settings.tz)
        count = queue_reminders(services.engine, settings, day, now)
        sent = services.dispatcher.drain()
    finally:
        if own:
            services.close()
    text = (f"reminders: {count} booking(s) on {day + timedelta(days=1)} reminded; "
            f"outbox: {_counts(sent)}")
    log.info("%s", text)
    return text


def run_dispatch(settings: Settings, day: date | None = None, services=None) -> str:
    """Send what is due in the outbox (retries included), until nothing is."""
    own = services is None
    services = services or _services(settings)
    try:
        sent = services.dispatcher.drain()
    finally:
        if own:
            services.close()
    text = f"outbox: {_counts(sent)}"
    if sent:
        log.info("%s", text)
    return text


def _counts(counter) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counter.items())) or "nothing due"


JOBS = {"tiers": run_tiers, "cleanup": run_cleanup, "daily": run_daily,
        "reminders": run_reminders, "dispatch": run_dispatch}


def add_jobs(scheduler: BaseScheduler, settings: Settings, today=None,
             services=None) -> BaseScheduler:
    from datetime import datetime

    from apscheduler.triggers.interval import IntervalTrigger

    def daily() -> None:
        run_daily(settings, (today or (lambda: datetime.now(settings.tz).date()))())

    # Shortly after midnight: the review of the day that just ended, then today's changes,
    # then the cleanup of abandoned conversations and expired counters.
    scheduler.add_job(daily, CronTrigger(hour=0, minute=30, timezone=settings.tz), id="tiers",
                      coalesce=True, max_instances=1, misfire_grace_time=6 * 3600,
                      replace_existing=True)
    if services is not None:
        from scheduler.sweeps import sweep_reminders

        scheduler.add_job(lambda: sweep_reminders(services.engine, settings, services.now()),
                          IntervalTrigger(minutes=2), id="reminders", coalesce=True,
                          max_instances=1, replace_existing=True, next_run_time=datetime.now(settings.tz))
        scheduler.add_job(lambda: run_dispatch(settings, services=services),
                          IntervalTrigger(seconds=settings.outbox_poll_seconds), id="dispatch",
                          coalesce=True, max_instances=1, replace_existing=True,
                          next_run_time=datetime.now(settings.tz))
    return scheduler


def hold_scheduler_lock(settings: Settings, engine, poll: float = 10.0, stop=None):
    """On PostgreSQL, wait until this process holds the scheduler's advisory lock (one
    active scheduler; others stand by) and return the connection that holds it (the lock
    lives as long as the connection). None on SQLite (one process by construction)."""
    import time

    from sqlalchemy import text

    from scheduler.sweeps import SCHEDULER_LOCK

    if engine.dialect.name != "postgresql":
        return None
    conn = engine.connect()
    conn.execution_options(isolation_level="AUTOCOMMIT")
    told = False
    while True:
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_LOCK}).scalar():
            return conn
        if not told:
            log.info("another scheduler is active; standing by")
            told = True
        if stop is not None and stop():
            conn.close()
            return None
        time.sleep(poll)


def run_forever(settings: Settings) -> None:
    services = _services(settings)
    lock = hold_scheduler_lock(settings, services.engine)
    scheduler = add_jobs(BlockingScheduler(timezone=settings.tz), settings, services=services)
    log.info("scheduler started: %s", ", ".join(j.id for j in scheduler.get_jobs()))
    try:
        scheduler.start()
    finally:
        if lock is not None:
            lock.close()
        services.close()
