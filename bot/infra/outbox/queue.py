"""The outbox's queue store: the `notification` rows, their states and the statements on
them — enqueue (INSERT … ON CONFLICT (dedupe_key) DO NOTHING), drop, claim with a lease
(FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's one writer), mark (fenced by `tries`),
retry, list and the delivery result. The dispatcher (bot.infra.outbox.dispatcher) sends
what this store hands it."""
from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from sqlalchemy import Engine, String, and_, bindparam, cast, or_, select, update

from bot.infra.db import upsert
from models import Notification, WechatUser

log = logging.getLogger(__name__)

OUTBOX = Notification.__table__
USERS = WechatUser.__table__

PENDING, SENDING, SENT = "pending", "sending", "sent"
DEAD, DROPPED, EXPIRED = "dead", "dropped", "expired"
STATUSES = (PENDING, SENDING, SENT, DEAD, DROPPED, EXPIRED)
WECHAT, SMS = "wechat", "sms"
# Kinds sent as customer-service messages (WeChat's 48-hour window applies).
CS_KINDS = frozenset({"custom", "late_reply", "handover"})
CS_WINDOW = timedelta(hours=48)  # WeChat's customer-service window after a user's message
CS_LIMIT = 5  # customer-service messages within the window after the user's last message
RETRY_CODES = frozenset({45009, -1, 40001, 40014, 42001})  # rate limit, system busy, token
WINDOW_CODES = frozenset({45015, 45047})  # out of the 48-hour window / over its count
UNSUBSCRIBED = 43004
MESSAGE_KEYS = frozenset({"template", "text", "mass", "params"})  # a payload ready to send
SEALED = "sealed"  # a payload key: the message's secret part, encrypted (bot.infra.sealed)
SEAL_PURPOSE = "outbox"
QUEUED = "outbox"  # the Session.info key under which `enqueue` collects the rows it queued


def collecting(rows: list) -> dict:
    """The `info` of a Session whose queued rows `enqueue` appends to `rows` (a message's
    `ctx.outbox`), so that whoever commits the session can send them at once."""
    return {QUEUED: rows}


def client_msg_id(key: str) -> str:
    """WeChat's de-duplication id of a template message or mass send, from the row's key."""
    return "vip" + hashlib.sha1(key.encode()).hexdigest()[:29]


def backoff(tries: int, *, base: float = 2.0, cap: float = 600.0,
            jitter: Callable[[], float] = random.random) -> float:
    """Seconds before try `tries + 1`: exponential (base · 2^(tries-1), at most `cap`), with
    "equal jitter" (half fixed, half random) so that a backlog does not retry in lockstep."""
    step = min(cap, base * 2 ** max(0, tries - 1))
    return step / 2 + jitter() * step / 2


def epoch(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    return value.timestamp()


def enqueue(db, *, kind: str, channel: str, recipient: str, payload: dict, key: str,
            now: datetime, customer_id: int | None = None, booking_id: int | None = None,
            expires_at: datetime | float | None = None, status: str = PENDING,
            last_error: str | None = None, with_client_msg_id: bool = False) -> int:
    """Queue one message in the caller's transaction (a Session or a Connection); returns its
    row id (the existing row's when `key` was queued before). A Session remembers the ids it
    queued in `session.info[QUEUED]` (see `collecting`), so that whoever commits it can send
    them at once."""
    values = dict(kind=kind, channel=channel, recipient=recipient,
                  payload=json.dumps(payload, ensure_ascii=False), dedupe_key=key,
                  status=status, tries=0, next_attempt_at=now.timestamp(),
                  expires_at=epoch(expires_at), last_error=last_error,
                  client_msg_id=client_msg_id(key) if with_client_msg_id else None,
                  customer_id=customer_id, booking_id=booking_id, created_at=now)
    db.execute(upsert(db, OUTBOX).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"]))
    row_id = db.execute(select(OUTBOX.c.id).where(OUTBOX.c.dedupe_key == key)).scalar_one()
    info = getattr(db, "info", None)
    if isinstance(info, dict) and status == PENDING and hasattr(db, "get_bind"):
        info.setdefault(QUEUED, []).append((row_id, channel))
    return row_id


def drop_pending(db, where, reason: str, *, free_keys: bool = False) -> int:
    """Mark pending rows matching `where` dropped (e.g. a cancelled booking's reminder).
    With `free_keys`, their idempotency keys get the row's id appended, so that the message
    they stood for may be queued again, rewritten (a reminder of a re-confirmed booking)."""
    values = dict(status=DROPPED, last_error=reason[:256])
    if free_keys:
        values["dedupe_key"] = OUTBOX.c.dedupe_key + ":dropped:" + cast(OUTBOX.c.id, String)
    res = db.execute(update(OUTBOX).where(where, OUTBOX.c.status == PENDING).values(**values))
    return res.rowcount or 0


# --- Claiming and marking ------------------------------------------------------------------


def claim(engine: Engine, now: float, limit: int, lease: float,
          ids: Iterable[int] | None = None) -> list:
    """Claim up to `limit` due rows (or the pending ones among `ids`) for this worker."""
    c = OUTBOX.c
    if ids is not None:
        due = and_(c.id.in_(list(ids)), c.status == PENDING)
    else:
        due = or_(and_(c.status == PENDING, c.next_attempt_at <= now),
                  and_(c.status == SENDING, c.lease_until < now))
    # A booking's messages on one channel go out in the order they were written: a row
    # waits while an earlier one of its booking is still pending or being sent (the
    # confirmation before the reminder, whatever retries the confirmation needs). Sent,
    # dead, dropped and expired rows hold nothing up.
    e = OUTBOX.alias("earlier").c
    waits = (select(e.id).where(e.booking_id == c.booking_id, e.channel == c.channel,
                                e.id < c.id, e.status.in_([PENDING, SENDING]))
             .exists())
    due = and_(due, or_(c.booking_id.is_(None), ~waits))
    pick = select(c.id).where(due).order_by(c.next_attempt_at, c.id).limit(limit)
    if engine.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (update(OUTBOX).where(c.id.in_(pick.scalar_subquery()))
            .values(status=SENDING, lease_until=now + lease, tries=c.tries + 1)
            .returning(*OUTBOX.c))
    with engine.begin() as conn:
        rows = conn.execute(stmt).all()
    return sorted(rows, key=lambda r: (r.next_attempt_at, r.id))


@dataclass
class Outcome:
    status: str  # sent | retry | dead | dropped | expired
    error: str | None = None
    msgid: int | None = None
    payload: str | None = None  # a payload to keep instead (scrubbed, or the fallback used)


def mark(engine: Engine, results: list[tuple[Any, Outcome]], now: float,
         max_tries: int, jitter: Callable[[], float] = random.random,
         base: float = 2.0, cap: float = 600.0) -> Counter:
    """Write the outcomes of claimed rows, fenced by (status sending, tries)."""
    counts: Counter = Counter()
    groups: dict[str, list[dict]] = defaultdict(list)
    sent_at = datetime.fromtimestamp(now, timezone.utc)
    for row, out in results:
        status = out.status
        if status == "retry" and row.tries >= max_tries:
            status, out.error = DEAD, f"gave up after {row.tries} tries: {out.error}"
        values = dict(_id=row.id, _tries=row.tries, status=status if status != "retry" else PENDING,
                      last_error=(out.error or None) and str(out.error)[:256],
                      msgid=out.msgid if out.msgid is not None else row.msgid,
                      payload=out.payload,
                      lease_until=None, sent_at=sent_at if status == SENT else None,
                      next_attempt_at=(now + backoff(row.tries, base=base, cap=cap, jitter=jitter)
                                       if status == "retry" else row.next_attempt_at))
        groups["all"].append(values)
        counts[status] += 1
    if groups:
        c = OUTBOX.c
        stmt = (update(OUTBOX).where(c.id == bindparam("_id"), c.status == SENDING,
                                     c.tries == bindparam("_tries"))
                .values(status=bindparam("status"), last_error=bindparam("last_error"),
                        msgid=bindparam("msgid"), payload=bindparam("payload"),
                        lease_until=bindparam("lease_until"), sent_at=bindparam("sent_at"),
                        next_attempt_at=bindparam("next_attempt_at")))
        kept = [v for v in groups["all"] if v["payload"] is None]
        changed = [v for v in groups["all"] if v["payload"] is not None]
        with engine.begin() as conn:
            if changed:
                conn.execute(stmt, changed)
            if kept:  # most rows: leave the payload as it is (no rewrite of the text)
                conn.execute(stmt.values(payload=c.payload), [
                    {k: v for k, v in row.items() if k != "payload"} for row in kept])
    return counts


def retry(engine: Engine, now: float, row_id: int | None = None, all_dead: bool = False) -> int:
    """Put dead rows (one, or all) back in the queue with their tries reset."""
    c = OUTBOX.c
    where = c.status == DEAD if all_dead else and_(c.id == row_id,
                                                   c.status.in_([DEAD, EXPIRED, DROPPED]))
    with engine.begin() as conn:
        res = conn.execute(update(OUTBOX).where(where).values(
            status=PENDING, tries=0, next_attempt_at=now, last_error=None, lease_until=None,
            expires_at=None))
    return res.rowcount or 0


def listing(engine: Engine, *, dead_only: bool = False, limit: int = 200) -> list:
    c = OUTBOX.c
    query = select(OUTBOX).order_by(c.id.desc()).limit(limit)
    query = query.where(c.status == DEAD) if dead_only else query.where(
        c.status.in_([PENDING, SENDING, DEAD]))
    with engine.connect() as conn:
        return conn.execute(query).all()


def record_delivery(db, msgid: int, status: str) -> int:
    """TEMPLATESENDJOBFINISH: WeChat's delivery result of the template message `msgid`."""
    res = db.execute(update(OUTBOX).where(OUTBOX.c.msgid == msgid)
                     .values(delivery=status[:64]))
    return res.rowcount or 0
