"""Prometheus metrics (prometheus-client), served at `/metrics` only when METRICS_ENABLED.

Every process records into the metrics below whether or not they are served (a counter's
increment costs a microsecond or two). With several workers set PROMETHEUS_MULTIPROC_DIR
(the same directory for the workers and the scheduler, on one host): each process then
writes its values to files there, and any worker's `/metrics` shows the sum over all of
them (prometheus-client's multiprocess mode). `serve` removes the files of processes that
no longer run when it starts (`clean_multiproc_dir`).

What is computed when scraped, from the database (never stored in a process): the outbox
backlog per channel and status, and the age of its oldest pending row.
"""
from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
if os.environ.get(MULTIPROC_ENV):  # every process writes its files there: it must exist
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)

MESSAGES = Counter("vipbot_messages", "Inbound WeChat messages and events by type and outcome "
                   "(replied, no_reply, late, error, duplicate)", ["type", "outcome"])
HANDLER_SECONDS = Histogram("vipbot_handler_seconds", "From the de-duplication claim to the "
                            "reply, per first delivery", ["type"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0))
DEDUP_HITS = Counter("vipbot_dedup_hits", "Deliveries answered from the de-duplication store "
                     "(kind=message: a WeChat retry or replay of a message already claimed)",
                     ["kind"])
REFUSED = Counter("vipbot_requests_refused", "Requests /wechat refused, by HTTP status",
                  ["status"])
WECHAT_API_ERRORS = Counter("vipbot_wechat_api_errors", "WeChat API calls that failed, by "
                            "errcode (unreachable: network or HTTP error)", ["code"])
SMS_ERRORS = Counter("vipbot_sms_errors", "SMS sends that failed (refused: dead-lettered; "
                     "failed: retried)", ["kind"])
TIER_JOB_SECONDS = Histogram("vipbot_tier_job_seconds", "Duration of one tier evaluation "
                             "(the daily job, a review, tiers recompute)", ["scope"],
                             buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600))
TIER_JOB_CUSTOMERS = Counter("vipbot_tier_job_customers", "Customers the tier evaluations "
                             "evaluated and changed", ["result"])
TIER_JOB_LAST = Gauge("vipbot_tier_job_last_finished_timestamp_seconds", "When the last tier "
                      "evaluation finished (Unix time)", multiprocess_mode="mostrecent")
STORE = Gauge("vipbot_store_backend", "The de-duplication and conversation state store in "
              "use: 1 for the backend answering (redis, database, memory), 0 for the other",
              ["store", "backend"], multiprocess_mode="mostrecent")
STORE_SWITCHES = Counter("vipbot_store_switches", "Switches between Redis and its database "
                         "fallback", ["to"])

_KNOWN_TYPES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link",
                          "event", "unknown"})


def message_type(msg) -> str:
    """A bounded label for a message: its MsgType, events with their Event (click, subscribe,
    scan …; any other as event:other)."""
    kind = getattr(msg, "type", None) or "unknown"
    if kind not in _KNOWN_TYPES:
        kind = "unknown"
    if kind == "event":
        event = str(getattr(msg, "event", "") or "").lower()
        return f"event:{event}" if re.fullmatch(r"[a-z_]{1,32}", event) else "event:other"
    return kind


def record_store(store: str, backend: str, others: tuple[str, ...]) -> None:
    STORE.labels(store, backend).set(1)
    for other in others:
        if other != backend:
            STORE.labels(store, other).set(0)


def wechat_api_error(errcode) -> None:
    WECHAT_API_ERRORS.labels("unreachable" if errcode is None else str(int(errcode))).inc()


def tier_run(report, seconds: float, scope: str) -> None:
    TIER_JOB_SECONDS.labels(scope).observe(seconds)
    TIER_JOB_CUSTOMERS.labels("evaluated").inc(report.evaluated)
    for result, n in (("upgraded", report.upgrades), ("downgraded", report.downgrades),
                      ("dropped", report.drops)):
        TIER_JOB_CUSTOMERS.labels(result).inc(n)
    TIER_JOB_LAST.set(time.time())


# --- At scrape --------------------------------------------------------------------------


class OutboxCollector:
    """The outbox's backlog and the age of its oldest pending row, read when scraped."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def collect(self):
        from sqlalchemy import func, select

        from models import Notification

        t = Notification.__table__
        backlog = GaugeMetricFamily("vipbot_outbox_backlog", "Outbox rows waiting to be sent "
                                    "(pending, sending) and given up on (dead), by channel",
                                    labels=["channel", "status"])
        oldest = GaugeMetricFamily("vipbot_outbox_oldest_pending_age_seconds", "Age of the "
                                   "oldest outbox row not sent yet (0 when none)",
                                   labels=["channel"])
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.channel, t.c.status, func.count(), func.min(t.c.created_at))
                                .where(t.c.status.in_(("pending", "sending", "dead")))
                                .group_by(t.c.channel, t.c.status)).all()
        now = datetime.now(timezone.utc)
        ages: dict[str, float] = {"wechat": 0.0, "sms": 0.0}
        counts = {(c, s): 0 for c in ("wechat", "sms") for s in ("pending", "sending", "dead")}
        for channel, status, count, first in rows:
            counts[(channel, status)] = count
            if status != "dead" and first is not None:
                if isinstance(first, str):
                    first = datetime.fromisoformat(first)
                if first.tzinfo is None:
                    first = first.replace(tzinfo=timezone.utc)
                ages[channel] = max(ages.get(channel, 0.0), (now - first).total_seconds())
        for (channel, status), count in sorted(counts.items()):
            backlog.add_metric([channel, status], count)
        for channel, age in sorted(ages.items()):
            oldest.add_metric([channel], max(0.0, age))
        yield backlog
        yield oldest


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(engine) -> bytes:
    """The text every scrape gets: this process's metrics (or, in multiprocess mode, every
    process's), then what is read from the database now."""
    if multiproc_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        head = generate_latest(registry)
    else:
        head = generate_latest(REGISTRY)
    scrape = CollectorRegistry()
    scrape.register(OutboxCollector(engine))
    return head + generate_latest(scrape)


def clean_multiproc_dir() -> int:
    """Remove the files of processes that no longer run from PROMETHEUS_MULTIPROC_DIR
    (created if missing); returns how many. The files of running processes (a scheduler)
    are kept."""
    where = multiproc_dir()
    if not where:
        return 0
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    for f in path.glob("*.db"):
        m = re.search(r"_(\d+)\.db$", f.name)
        if m and not _alive(int(m.group(1))):
            f.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
