"""The jobs package, an entry point beside the CLI (not domain code): the scheduled jobs
(`scheduler.jobs`: `python main.py scheduler`, `python main.py jobs run JOB`) and the
sweeps behind them, which the serving process also runs in a thread when no scheduler
process does (`scheduler.sweeps.BackgroundJobs`)."""
from __future__ import annotations

from scheduler.jobs import (JOBS, add_jobs, hold_scheduler_lock, run_cleanup, run_daily,
                            run_dispatch, run_forever, run_reminders, run_tiers, sync_tier_tags)
from scheduler.sweeps import (REMINDER_LOCK, SCHEDULER_LOCK, BackgroundJobs, dispatch,
                              queue_reminders, sweep_reminders)

__all__ = ["JOBS", "REMINDER_LOCK", "SCHEDULER_LOCK", "BackgroundJobs", "add_jobs", "dispatch",
           "hold_scheduler_lock", "queue_reminders", "run_cleanup", "run_daily", "run_dispatch",
           "run_forever", "run_reminders", "run_tiers", "sweep_reminders", "sync_tier_tags"]
