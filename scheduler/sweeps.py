"""The sweeps behind the scheduled jobs, each idempotent and working out what is due from the
data (so a missed run catches up and a doubled run does nothing twice):

- `sweep_reminders`: once it is past REMINDER_HOUR, the reminders of tomorrow's confirmed
  bookings not yet reminded (the outbox key and `booking.reminded_at` make it once only);
- `dispatch`: the outbox rows due (bot.infra.outbox.Dispatcher).

(The services they use are built once, by bot.wiring.build_services.)

`BackgroundJobs` runs both in a thread of the serving process when no separate scheduler
process does (IN_PROCESS_JOBS, the default: `make run` is one process and must still deliver
everything). Several serving processes may each run it: claims are exclusive
(FOR UPDATE SKIP LOCKED) and the reminder sweep takes a PostgreSQL advisory lock for its
transaction, so it runs in one process at a time.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import date, datetime

from sqlalchemy import text
from sqlmodel import Session

from bot.domain import notify

log = logging.getLogger(__name__)

REMINDER_LOCK = 0x7669_7072  # advisory lock id of the reminder sweep ("vipr")
SCHEDULER_LOCK = 0x7669_7073  # advisory lock id held by the active scheduler ("vips")


def queue_reminders(engine, settings, day: date, now: datetime) -> int:
    """Queue the reminders for services on `day` + 1; returns how many bookings."""
    with Session(engine, expire_on_commit=False) as session:
        if engine.dialect.name == "postgresql":
            got = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                                  {"k": REMINDER_LOCK}).scalar()
            if not got:
                return 0  # another process is sweeping right now
        count = notify.due_reminders(session, day, now)
        session.commit()
    return count


def sweep_reminders(engine, settings, now: datetime) -> int:
    """The scheduled sweep: today's run once it is past the reminder hour."""
    local = now.astimezone(settings.tz)
    if local.time() < settings.reminder_time:
        return 0
    return queue_reminders(engine, settings, local.date(), now)


def dispatch(services, max_batches: int = 1_000_000) -> Counter:
    return services.dispatcher.drain(max_batches)


class BackgroundJobs:
    """The outbox dispatcher (every OUTBOX_POLL_SECONDS) and the reminder sweep (every
    minute) in a daemon thread; `stop()` ends it."""

    def __init__(self, services, *, reminder_every: float = 60.0) -> None:
        self.services = services
        self.reminder_every = reminder_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "BackgroundJobs":
        self._thread = threading.Thread(target=self._run, name="outbox-loop", daemon=True)
        self._thread.start()
        log.info("in-process jobs started: outbox dispatch every %ss, reminders every %ss",
                 self.services.settings.outbox_poll_seconds, self.reminder_every)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import time

        poll = self.services.settings.outbox_poll_seconds
        next_sweep = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.reminder_every
                    sweep_reminders(self.services.engine, self.services.settings,
                                    self.services.now())
                self.services.dispatcher.drain(max_batches=50)
            except Exception:
                log.exception("in-process jobs: a run failed; trying again")
            self._stop.wait(poll)
