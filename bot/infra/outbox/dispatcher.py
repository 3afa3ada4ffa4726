"""The outbox's dispatcher: claims due rows from the queue store, sends them concurrently
under a rate limit (WeChat's API, the SMS provider), and marks each outcome: sent, retried
with backoff, dead, dropped or expired."""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from sqlalchemy import Engine, case, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from bot.infra import metrics
from bot.infra.privacy import mask_phone
from bot.infra.sealed import unseal
from bot.infra.sms import SmsRejected
from bot.infra.wechat_errors import WeChatApiError
from bot.infra.outbox.queue import (OUTBOX, USERS, PENDING, SENT, DEAD, DROPPED, EXPIRED, WECHAT,
                                    SMS, CS_KINDS, CS_WINDOW, CS_LIMIT, RETRY_CODES, WINDOW_CODES,
                                    UNSUBSCRIBED, MESSAGE_KEYS, SEALED, SEAL_PURPOSE, Outcome,
                                    backoff, claim, client_msg_id, drop_pending, enqueue, listing,
                                    mark, record_delivery, retry)

log = logging.getLogger(__name__)


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
        # Sends whose outcome could not be written (the database went away between the send
        # and its mark): row id -> (the claimed row, its outcome). They are written at the
        # next run, and a row claimed again meanwhile is marked, not sent again (a
        # customer-service message has no key WeChat de-duplicates on).
        self._unmarked: dict[int, tuple[Any, Outcome]] = {}
        self._unmarked_lock = threading.Lock()
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
        self._mark_unmarked()
        now = self.clock()
        rows = claim(self.engine, now, self.batch, self.lease, ids)
        if not rows:
            return Counter(), []
        results = self.process(rows, now)
        try:
            return self._mark(results), rows
        except SQLAlchemyError:
            self._keep_unmarked(results)
            raise

    def _mark(self, results: list[tuple[Any, Outcome]]) -> Counter:
        return mark(self.engine, results, self.clock(), self.max_tries, self.jitter,
                    base=self.settings.outbox_backoff_base, cap=self.settings.outbox_backoff_cap)

    def _keep_unmarked(self, results: list[tuple[Any, Outcome]]) -> None:
        sent = {row.id: (row, out) for row, out in results if out.status == SENT}
        if sent:
            log.warning("outbox: %d sent message(s) could not be marked sent; kept to mark "
                        "later, not to send again", len(sent))
            with self._unmarked_lock:
                self._unmarked.update(sent)

    def _mark_unmarked(self) -> None:
        """Write the kept outcomes (fenced as any mark: a row another dispatcher claimed
        since is left to it). While the database is still away, keep them."""
        with self._unmarked_lock:
            kept = list(self._unmarked.values())
        if not kept:
            return
        try:
            self._mark(kept)
        except SQLAlchemyError:
            return
        with self._unmarked_lock:
            for row, _ in kept:
                self._unmarked.pop(row.id, None)

    def _already_sent(self, row) -> Outcome | None:
        """The outcome of an earlier send of this row that could not be marked."""
        with self._unmarked_lock:
            kept = self._unmarked.pop(row.id, None)
        return kept[1] if kept is not None else None

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
            if (done := self._already_sent(row)) is not None:
                results[row.id] = done
            elif row.expires_at is not None and row.expires_at <= now:
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
            metrics.SMS_ERRORS.labels("refused").inc()
            log.warning("SMS to %s refused: %s", mask_phone(phone), exc)
            return Outcome(DEAD, f"refused: {exc}", payload=_scrub(row))
        except Exception as exc:  # network, 5xx, rate limits: try again later
            metrics.SMS_ERRORS.labels("failed").inc()
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
