"""The outbox: every message to a customer is a `notification` row, written in the
transaction that causes it, and sent exactly once by the dispatcher below.

Enqueue (`enqueue`): INSERT … ON CONFLICT (dedupe_key) DO NOTHING, so a doubled job or a
replayed message queues nothing twice.

Claim (`claim`): rows due (pending and past `next_attempt_at`, or left in `sending` by a
worker whose lease ran out) are switched to `sending` with a lease, in one statement:
`FOR UPDATE SKIP LOCKED` on PostgreSQL (several workers never claim the same row), the one
writer of SQLite (BEGIN IMMEDIATE, see bot.infra.db) elsewhere. Each claim increments
`tries`, which fences the marks: a worker whose lease ran out and whose row was claimed
again cannot mark it any more.

Send and mark (`Dispatcher`): concurrently under a rate limit; WeChat's 45009, -1, network
errors, timeouts and 5xx are retried with exponential backoff and jitter (`backoff`); after
OUTBOX_MAX_TRIES the row is dead. A crash between a send and its mark leaves the row in
`sending`; it is claimed again when the lease (OUTBOX_LEASE_SECONDS, well below the ten
minutes WeChat de-duplicates a template's `client_msg_id` and a mass send's
`clientmsgid`) has run out, and re-sent with the same id.

This module decides how to send, never what: bot.domain.notify writes the rows, and gives
the dispatcher a `prepare` hook for rows written by set-based SQL (tier changes).
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from sqlalchemy import Engine, and_, bindparam, case, func, or_, select, update

from bot.infra.db import upsert
from bot.infra.privacy import mask_phone
from bot.infra.sealed import unseal
from bot.infra.sms import SmsRejected
from bot.infra.wechat_errors import WeChatApiError
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
    queued in `session.info["outbox"]`, so that whoever commits it can send them at once."""
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
        info.setdefault("outbox", []).append((row_id, channel))
    return row_id


def drop_pending(db, where, reason: str) -> int:
    """Mark pending rows matching `where` dropped (e.g. a cancelled booking's reminder)."""
    res = db.execute(update(OUTBOX).where(where, OUTBOX.c.status == PENDING)
                     .values(status=DROPPED, last_error=reason[:256]))
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


# --- Sending -------------------------------------------------------------------------------


class RateLimit:
    """A token bucket: at most `rate` acquisitions a second (bursts of `rate`/10)."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.burst = max(1.0, rate / 10)
        self.tokens = self.burst
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
                self.at = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


Prepare = Callable[[Any, dict], "dict | str"]  # (row, payload) -> payload, or a drop reason


class Dispatcher:
    """Sends what is due in the outbox. `run_once` claims one batch; `drain` runs batches
    until nothing is due; `send_ids` sends the rows a transaction just wrote."""

    def __init__(self, engine: Engine, settings, wechat, sms, *, prepare: Prepare | None = None,
                 clock: Callable[[], float] = time.time,
                 jitter: Callable[[], float] = random.random) -> None:
        self.engine, self.settings = engine, settings
        self.wechat, self.sms = wechat, sms  # the WeChat client, the SMS provider (unqueued)
        self.prepare = prepare
        self.clock, self.jitter = clock, jitter
        self.batch = settings.outbox_batch_size
        self.lease = float(settings.outbox_lease_seconds)
        self.max_tries = settings.outbox_max_tries
        self.limit = RateLimit(settings.outbox_rate_per_second)
        self.pool = ThreadPoolExecutor(max_workers=settings.outbox_concurrency,
                                       thread_name_prefix="outbox")
        self._fit_http_pool(settings.outbox_concurrency)

    def _fit_http_pool(self, size: int) -> None:
        http = getattr(self.wechat, "_http", None)
        if http is not None and size > 10:
            from requests.adapters import HTTPAdapter

            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size)
            http.mount("http://", adapter)
            http.mount("https://", adapter)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    # --- Entry points ----------------------------------------------------------------------

    def run_once(self, ids: Iterable[int] | None = None) -> Counter:
        return self._run(ids)[0]

    def _run(self, ids: Iterable[int] | None = None) -> tuple[Counter, list]:
        now = self.clock()
        rows = claim(self.engine, now, self.batch, self.lease, ids)
        if not rows:
            return Counter(), []
        results = self.process(rows, now)
        return (mark(self.engine, results, self.clock(), self.max_tries, self.jitter,
                     base=self.settings.outbox_backoff_base, cap=self.settings.outbox_backoff_cap),
                rows)

    def drain(self, max_batches: int = 1_000_000) -> Counter:
        total: Counter = Counter()
        for _ in range(max_batches):
            done = self.run_once()
            if not done:
                break
            total.update(done)
        return total

    def send_ids(self, ids: list[int]) -> Counter:
        """Send these rows now (the ones a message's transaction just wrote); a row that
        waited for an earlier one of its booking goes in the next round, once that one is
        sent."""
        total: Counter = Counter()
        left = set(ids)
        while left:
            done, claimed = self._run(left)
            if not claimed:
                break
            total.update(done)
            left = (left - {r.id for r in claimed}) | self._waiting_behind(claimed)
        return total

    def _waiting_behind(self, rows) -> set[int]:
        """The due pending rows of the bookings of `rows` (just sent or given up): those that
        waited for them, whichever transaction wrote them, go now rather than at the next
        sweep (one still waiting for another is simply not claimed)."""
        bookings = {r.booking_id for r in rows if r.booking_id is not None}
        if not bookings:
            return set()
        c = OUTBOX.c
        with self.engine.connect() as conn:  # on the same channels: each keeps to its lane
            return set(conn.execute(select(c.id).where(
                c.booking_id.in_(list(bookings)), c.channel.in_(list({r.channel for r in rows})),
                c.status == PENDING,
                c.next_attempt_at <= self.clock())).scalars())

    # --- One batch -------------------------------------------------------------------------

    def process(self, rows: list, now: float) -> list[tuple[Any, Outcome]]:
        results: dict[int, Outcome] = {}
        live = []
        for row in rows:
            if row.expires_at is not None and row.expires_at <= now:
                results[row.id] = Outcome(EXPIRED, "expired before it could be sent",
                                          payload=_scrub(row))
            else:
                live.append(row)
        users = self._users({r.recipient for r in live if r.channel == WECHAT})
        reserved: dict[int, tuple[str, float]] = {}  # row id: the window slot it holds
        jobs = []
        for row in live:
            payload = json.loads(row.payload or "{}")
            if SEALED in payload:  # opened only now, to send (kept sealed in the table)
                try:
                    payload = {**{k: v for k, v in payload.items() if k != SEALED},
                               **unseal(self.settings.secret_key, SEAL_PURPOSE, payload[SEALED])}
                except ValueError:
                    results[row.id] = Outcome(DEAD, "sealed payload cannot be opened "
                                                    "(SECRET_KEY changed?)", payload=_scrub(row))
                    continue
            if self.prepare is not None and not MESSAGE_KEYS & payload.keys():
                prepared = self.prepare(row, payload)
                if isinstance(prepared, str):
                    results[row.id] = Outcome(DROPPED, prepared)
                    continue
                payload = prepared
            if row.channel == WECHAT and not row.recipient.startswith("tag:"):
                user = users.get(row.recipient)
                if user is not None and user.following is False:
                    results[row.id] = Outcome(DROPPED, "unsubscribed (wechat_user.following is false)")
                    continue
                if row.kind in CS_KINDS:
                    verdict = self._window(row, payload, user, reserved, now)
                    if isinstance(verdict, Outcome):
                        results[row.id] = verdict
                        continue
                    payload = verdict
            jobs.append((row, payload))
        futures = [(row, self.pool.submit(self._send_one, row, payload)) for row, payload in jobs]
        for row, fut in futures:
            results[row.id] = fut.result()
            if row.id in reserved and results[row.id].status != SENT:
                self._release(*reserved[row.id])  # not sent: its slot is free again
        return [(row, results[row.id]) for row in rows]

    def _users(self, openids: set[str]) -> dict:
        if not openids:
            return {}
        u = USERS.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(u.openid, u.following, u.last_seen_at)
                                .where(u.openid.in_(list(openids)))).all()
        return {r.openid: r for r in rows}

    def _reserve(self, openid: str, seen: float) -> bool:
        """Take one of the CS_LIMIT slots of the window opened by the user's message at
        `seen`, in one conditional UPDATE (atomic across workers: no check-then-send race).
        A newer message restarts the count; a reservation made under a newer one than
        `seen` counts in that newer window."""
        u = USERS.c
        fresh = or_(u.cs_window_from.is_(None), u.cs_window_from < seen)
        with self.engine.begin() as conn:
            res = conn.execute(update(USERS).where(
                u.openid == openid, or_(fresh, u.cs_used < CS_LIMIT)).values(
                cs_used=case((fresh, 1), else_=u.cs_used + 1),
                cs_window_from=case((fresh, seen), else_=u.cs_window_from)))
        return res.rowcount == 1

    def _release(self, openid: str, seen: float) -> None:
        u = USERS.c
        with self.engine.begin() as conn:
            conn.execute(update(USERS).where(u.openid == openid, u.cs_used > 0,
                                             u.cs_window_from >= seen)
                         .values(cs_used=u.cs_used - 1))

    def _window(self, row, payload: dict, user, reserved: dict, now: float):
        """The payload to send inside WeChat's customer-service window (at most CS_LIMIT
        messages within 48 hours of the user's last message), else the template fallback,
        else a dead letter saying why."""
        seen = user.last_seen_at.timestamp() if user is not None and user.last_seen_at else None
        why = None
        if seen is None or now - seen > CS_WINDOW.total_seconds():
            why = "outside WeChat's 48-hour customer-service window"
        else:
            if not self._reserve(row.recipient, seen):
                why = f"{CS_LIMIT} customer-service messages already sent since the user's last message"
            else:
                reserved[row.id] = (row.recipient, seen)
        if why is None:
            return payload
        if payload.get("fallback"):
            return {"template": payload["fallback"], "fallback_used": why}
        return Outcome(DEAD, why)

    # --- One message -----------------------------------------------------------------------

    def _send_one(self, row, payload: dict) -> Outcome:
        self.limit.acquire()
        try:
            if row.channel == SMS:
                return self._sms(row, payload)
            return self._wechat(row, payload)
        except Exception as exc:  # never lose the row to a bug: retry, then dead
            log.exception("outbox row %s failed unexpectedly", row.id)
            return Outcome("retry", f"{type(exc).__name__}: {exc}")

    def _wechat(self, row, payload: dict) -> Outcome:
        kept = json.dumps(payload, ensure_ascii=False) if payload.get("fallback_used") else None
        try:
            if "template" in payload:
                body = dict(payload["template"])
                body.setdefault("touser", row.recipient)
                if row.client_msg_id:
                    body["client_msg_id"] = row.client_msg_id
                result = self.wechat.post("message/template/send", data=body)
                return Outcome(SENT, payload.get("fallback_used"), msgid=_int(result.get("msgid")),
                               payload=kept)
            if "mass" in payload:
                mass = payload["mass"]
                body = {"filter": {"is_to_all": not mass.get("tag_id"),
                                   **({"tag_id": mass["tag_id"]} if mass.get("tag_id") else {})},
                        "text": {"content": mass["content"]}, "msgtype": "text"}
                if row.client_msg_id:
                    body["clientmsgid"] = row.client_msg_id
                result = self.wechat.post("message/mass/sendall", data=body)
                return Outcome(SENT, msgid=_int(result.get("msg_id")))
            body = {"touser": row.recipient, "msgtype": "text",
                    "text": {"content": payload["text"]}}
            result = self.wechat.post("message/custom/send", data=body)
            return Outcome(SENT, msgid=_int(result.get("msgid")))
        except WeChatApiError as exc:
            code = exc.errcode
            if code == UNSUBSCRIBED:
                return Outcome(DROPPED, f"unsubscribed (WeChat {code})")
            if code in WINDOW_CODES and payload.get("fallback"):
                return self._wechat(row, {"template": payload["fallback"],
                                          "fallback_used": f"WeChat {code}: {exc.errmsg}"})
            if code is None or code in RETRY_CODES:
                return Outcome("retry", str(exc))
            return Outcome(DEAD, str(exc))

    def _sms(self, row, payload: dict) -> Outcome:
        phone = row.recipient
        try:
            send = getattr(self.sms, "send_sms", None)
            if send is not None:
                send(phone, payload.get("template", ""), payload.get("params", []),
                     payload.get("text", ""))
            else:
                self.sms.send(phone, payload.get("text", ""))
        except SmsRejected as exc:
            log.warning("SMS to %s refused: %s", mask_phone(phone), exc)
            return Outcome(DEAD, f"refused: {exc}", payload=_scrub(row))
        except Exception as exc:  # network, 5xx, rate limits: try again later
            log.warning("SMS to %s failed: %s", mask_phone(phone), exc)
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        return Outcome(SENT, payload=_scrub(row))


def _scrub(row) -> str | None:
    """A one-time code has no business in the table once it is sent or dead."""
    payload = json.loads(row.payload or "{}")
    if not payload.get("secret"):
        return None
    payload.pop(SEALED, None)
    payload["params"] = ["******" if i == 0 else p for i, p in enumerate(payload.get("params", []))]
    payload["text"] = "******"
    return json.dumps(payload, ensure_ascii=False)


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


__all__ = ["enqueue", "claim", "mark", "retry", "listing", "record_delivery", "Dispatcher",
           "backoff", "client_msg_id", "drop_pending", "func"]
