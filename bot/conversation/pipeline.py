"""The message pipeline: one verified inbound message in, one `Reply` out, exactly once.

Each message is claimed in the de-duplication store before its handler runs; a retry or
replay waits for, and gets, the first delivery's reply. The handler runs in one database
transaction holding the user's lock: the pipeline is the one owner of that transaction (it
begins, commits or rolls it back) and of each message's unit of work (`Work`: the session,
the outbox rows and after-commit calls it collects, and the one savepoint API handlers may
use, `ctx.attempt()`). On the embedded default (SQLite, state in the
database) the messages waiting for the one connection share a commit (group commit), each
in its own savepoint. A handler slower than the deadline answers "success" and its reply
follows as a customer-service message.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection, bindparam, insert, update

from bot.conversation.context import Context, Work
from bot.conversation.engine import handle
from bot.conversation.message import Inbound
from bot.conversation.reply import Reply
from bot.conversation.router import Router
from bot.conversation.stores import (PREFETCH, REPLAYED, DedupStore, MemoryDedupStore, Prefetch,
                                     SqlStateStore, StateStore, build_stores)
from bot.domain import notify
from bot.infra import logs, metrics
from bot.infra.db import driver_execute
from bot.infra.services import Services
from bot.infra.texts import render
from models import WechatUser

log = logging.getLogger(__name__)

USER_T = WechatUser.__table__
_TOUCH = (update(USER_T).where(USER_T.c.openid == bindparam("who"))
          .values(last_seen_at=bindparam("now")))
TOUCH_EVERY = 600.0  # seconds between writes of a user's last_seen_at
MAX_BATCH = 64  # messages sharing one commit
NO_REPLY = Reply()


class Lane:
    """Long-lived threads taking calls from one queue (`queue.SimpleQueue`), each call
    answered on its caller's event loop. For the handlers: a call here is one queue put and
    one wake-up of the loop, where `run_in_executor` made a `ThreadPoolExecutor` work item
    and a concurrent future wrapped in an asyncio one for every message."""

    def __init__(self, threads: int, name: str) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def run(self, loop, fn, *args) -> asyncio.Future:
        """`fn(*args)` on one of the lane's threads in a copy of the caller's context
        (its log ids); its result or exception on `loop`'s future."""
        fut = loop.create_future()
        self._q.put((contextvars.copy_context(), fn, args, fut, loop))
        return fut

    def submit(self, ctx, fn) -> None:
        """`fn()` on one of the lane's threads, in `ctx`; nobody waits for it."""
        self._q.put((ctx, fn, (), None, None))

    def _work(self) -> None:
        get = self._q.get
        while True:
            item = get()
            if item is None:
                return
            ctx, fn, args, fut, loop = item
            try:
                result = ctx.run(fn, *args)
            except BaseException as exc:  # noqa: BLE001 (handed to the waiting caller)
                if fut is None:
                    log.exception("call on the %s lane failed", self._threads[0].name)
                else:
                    _call_soon(loop, _fail, fut, exc)
            else:
                if fut is not None:
                    _call_soon(loop, _succeed, fut, result)
            # Hold nothing of this call while waiting for the next.
            item = ctx = fn = args = fut = loop = result = None

    def shutdown(self) -> None:
        """Let every call queued so far finish, then end the threads."""
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join()


def _call_soon(loop, fn, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _succeed(fut: asyncio.Future, result) -> None:
    if not fut.done():
        fut.set_result(result)


def _fail(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


@dataclass
class Handoff:
    """Decides, exactly once, whether a reply goes back in the HTTP response or, when the
    handler was too slow for WeChat's 5-second window, as a customer-service message."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    outcome: str | None = None  # "replied" | "late"

    def claim(self, outcome: str) -> bool:
        with self.lock:
            if self.outcome is None:
                self.outcome = outcome
                return True
            return False

    def settle(self, outcome: str) -> str:
        """`outcome` unless the other was claimed first; the outcome either way."""
        self.claim(outcome)
        return self.outcome


class Pipeline:
    def __init__(self, services: Services, router: Router, *, states: StateStore | None = None,
                 dedup: DedupStore | None = None) -> None:
        keep = timedelta(minutes=services.settings.flow_timeout_minutes)
        too_long = sorted(f.name for f in router.flows.values()
                          if f.conversation_timeout is not None and f.conversation_timeout > keep)
        if too_long:  # the state stores keep a flow's state for the setting's time, no longer
            services.close()
            raise ValueError(f"conversation_timeout above FLOW_TIMEOUT_MINUTES: {too_long}")
        self.services = services
        self.settings = services.settings
        self.router = router
        self.engine = services.engine
        default_states, default_dedup = build_stores(self.settings, self.engine)
        self.states = states or default_states
        self.dedup = dedup or default_dedup
        # SQLite serves one connection per process: one thread takes messages in FIFO
        # order (threads fighting over the connection starve some messages for seconds).
        # PostgreSQL and Redis take real parallelism.
        sqlite = self.engine.dialect.name == "sqlite"
        # PostgreSQL: no more threads than the pool has connections (more would only queue
        # on the pool, and time out there).
        pool = self.settings.db_pool_size + self.settings.db_max_overflow
        self.lane = Lane(1 if sqlite else min(32, pool), "bot")
        # The de-duplication calls (a claim, a stored reply) on threads of their own when
        # they leave the process (Redis, PostgreSQL): never queued behind handlers. (On the
        # embedded default they take no thread: MemoryDedupStore, `_dedup`.)
        alone = sqlite and not self.settings.redis_url
        self.dedup_executor = ThreadPoolExecutor(max_workers=1 if alone else 16,
                                                 thread_name_prefix="dedup")
        self._touched: dict[str, float] = {}
        # Group commit on the embedded default (SQLite, state in the database, one worker).
        self.group_commit = sqlite and isinstance(self.states, SqlStateStore)
        # State kept outside the database (Redis) is written only after the commit.
        self.state_in_txn = isinstance(self.states, SqlStateStore)
        # Redis with the database behind it: in the transaction while Redis is down.
        self._failover = getattr(self.states, "failover", None)
        self._pending: deque = deque()
        self._drain_scheduled = False

    def close(self) -> None:
        self.lane.shutdown()
        self.dedup_executor.shutdown(wait=True)
        getattr(self.dedup, "close", lambda: None)()  # Redis's copy in the database, written
        self.services.close()

    # --- One transaction ----------------------------------------------------------------

    def process_batch(self, msgs: list, late: list | None = None,
                      ids: list | None = None) -> list[tuple[Reply, list, bool, bool]]:
        """Run the router for each message, in order, in one database transaction: each
        message in its own SAVEPOINT when there are several, so one failing handler loses
        only its own writes. Returns (reply, after-commit actions, queued late, reply
        recorded) per message; replies and actions are released only after the commit.
        `late` gives each message's (Handoff, dedup key): a reply whose HTTP response was
        given up on by then is queued as a customer-service message in the handler's own
        transaction (so no crash after the commit can lose it); on Redis the reply is
        recorded for retries before the user's lock is released, with its release. `ids`
        gives each message's log ids (bot.infra.logs)."""
        results: list[tuple[Reply, list, bool, bool]] = []
        written: list[str] = []  # openids whose last_seen_at this transaction wrote
        try:
            with self.engine.connect() as conn, conn.begin() as txn:
                savepoints = len(msgs) > 1
                for i, msg in enumerate(msgs):
                    if ids:  # a drain of several messages: each one's log ids (its own context)
                        logs.REQUEST_ID.set(ids[i][0])
                        logs.MSG_ID.set(ids[i][1])
                    if savepoints:
                        driver_execute(conn, "SAVEPOINT message")
                    with self.states.lock(msg.source, conn):
                        try:
                            reply, actions, save, touched, queued_late = self._handle(
                                conn, msg, late[i] if late else None)
                        except Exception:
                            log.exception("handler failed for %s message", msg.type)
                            if not savepoints:
                                txn.rollback()
                                return [_error()]
                            driver_execute(conn, "ROLLBACK TO SAVEPOINT message")
                            driver_execute(conn, "RELEASE SAVEPOINT message")
                            results.append(_error())
                            continue
                        stored = False
                        if not savepoints:
                            txn.commit()  # before the user's lock is released
                            if late and self._reply_with_release:
                                # Stored with the release of the user's lock (Redis): one
                                # round trip for the state, the lock and the reply.
                                reply, stored = self._settle(late[i][1], late[i][0], reply), True
                            if save:
                                save()  # state outside the database: only once committed
                    if savepoints:
                        driver_execute(conn, "RELEASE SAVEPOINT message")
                    results.append((reply, actions, queued_late, stored))
                    if touched:
                        written.append(touched)
                if txn.is_active:
                    txn.commit()
        except Exception:  # the database itself failed (locked, gone): nothing was saved
            log.exception("transaction for %d message(s) failed", len(msgs))
            return [_error()] * len(msgs)
        self._remember_touched(written)  # only what was committed
        return results

    def _handle(self, conn: Connection, msg, late=None):
        """One message on `conn`, inside the caller's transaction and the user's lock.
        Returns the reply, the after-commit actions, the state write to make after the
        commit when the state lives outside the database, the openid whose last_seen_at
        was written, and whether the reply was queued as a late one (`late`: the message's
        Handoff and dedup key)."""
        openid = msg.source
        record = self.states.load(openid, conn)
        # What to compare with afterwards: needed only for a record without a state (one
        # that had a state and has none now has changed; one that has a state is saved).
        before = record.dumps() if record.state is None else None
        now = self.services.now()
        work = Work(conn)  # the message's unit of work: its session and what to send after
        ctx = Context(self.services, self.router, msg, Inbound.of(msg), conn, record, now, work)
        touched = self._touch(conn, openid, now)
        queued_late = False
        try:
            reply = handle(ctx)
            if late is not None and late[0].settle("replied") == "late" and reply.text:
                # Too slow for WeChat's window: the reply follows as a customer-service
                # message, queued with the handler's writes.
                notify.late_reply(work.session, openid, reply.text, now, key=f"late:{late[1]}")
                queued_late = True
            work.flush()
            if work.outbox:  # what this message queued goes out right after the commit
                services, queued = self.services, list(work.outbox)
                work.after_commit.append(lambda: services.kick_outbox(queued))
        finally:
            work.close()
        save = None
        if record.state is not None or before is None or record.dumps() != before:
            record.updated_at = time.time()
            if self.state_in_txn or (self._failover is not None and self._failover.down):
                self.states.save(openid, record, conn)
            else:
                save = lambda: self.states.save(openid, record, conn)  # noqa: E731
        return reply, work.after_commit, save, touched, queued_late

    def _touch(self, conn: Connection, openid: str, now) -> str | None:
        """Write when the user last wrote (WeChat's 48-hour customer-service window), at
        most once every ten minutes per process; returns the openid when it wrote. The
        process remembers the write only once it is committed (`_remember_touched`): a
        first transaction that fails must not leave a new user without a row."""
        if time.monotonic() - self._touched.get(openid, -TOUCH_EVERY) < TOUCH_EVERY:
            return None
        res = conn.execute(_TOUCH, {"who": openid, "now": now})
        if res.rowcount == 0:
            conn.execute(insert(USER_T).values(openid=openid, following=True, last_seen_at=now,
                                               bind_failures=0))
        return openid

    def _remember_touched(self, openids: list[str]) -> None:
        if len(self._touched) > 100_000:
            self._touched.clear()
        mono = time.monotonic()
        for openid in openids:
            self._touched[openid] = mono

    # --- Exactly once -------------------------------------------------------------------

    async def first_sight(self, timestamp: str, nonce: str, digest: str) -> bool:
        """False when this signed (timestamp, nonce) came before with another body. Pairs
        are remembered for as long as their timestamp stays inside the window."""
        ttl = self._pair_ttl
        loop = asyncio.get_running_loop()
        if getattr(self.dedup, "asynchronous", False):  # Redis: on the event loop
            return await self.dedup.arequest_seen(timestamp, nonce, digest, ttl,
                                                  self._on_dedup_thread)
        return await self._dedup(loop, lambda _: self.dedup.request_seen(timestamp, nonce, digest, ttl), None)

    async def receive(self, msg, key: str, request: tuple[str, str, str] | None = None) -> Reply:
        """The reply for one verified message. The first delivery of `key` runs the
        handler; a retry or replay waits for, and returns, its reply. A handler slower than
        the deadline gets no reply here (WeChat is answered "success") and its reply
        follows as a customer-service message. `request`: the request's (timestamp, nonce,
        body digest), checked first (`first_sight`; on Redis in the claim's round trip):
        `Replayed` when the pair came before with another body, and nothing is claimed."""
        loop = asyncio.get_running_loop()
        kind = metrics.message_type(msg)
        pair = None
        if request is not None:
            if self._claims_pair:
                pair = (*request, self._pair_ttl)
            elif not await self.first_sight(*request):
                raise Replayed
        claimed = await self._claim(loop, msg, key, pair)
        if claimed is REPLAYED:
            raise Replayed
        if claimed:
            started = time.perf_counter()
            handoff = Handoff()
            fut = self._submit(loop, msg, key, handoff)
            PREFETCH.set(None)  # handed to the handler's thread with its context
            try:
                async with asyncio.timeout(self.settings.reply_deadline_seconds):
                    reply = await asyncio.shield(fut)
            except TimeoutError:
                if handoff.claim("late"):
                    log.warning("handler slower than %.1fs; its reply follows as a "
                                "customer-service message", self.settings.reply_deadline_seconds)
                    fut.add_done_callback(_late_done)  # nobody awaits it any more
                    metrics.HANDLER_SECONDS.labels(kind).observe(time.perf_counter() - started)
                    metrics.MESSAGES.labels(kind, "late").inc()
                    return NO_REPLY
                reply = await fut
            metrics.HANDLER_SECONDS.labels(kind).observe(time.perf_counter() - started)
            metrics.MESSAGES.labels(kind, _outcome(reply)).inc()
            return reply
        metrics.DEDUP_HITS.labels("message").inc()
        metrics.MESSAGES.labels(kind, "duplicate").inc()
        deadline = loop.time() + self.settings.reply_deadline_seconds
        while loop.time() < deadline:
            stored = await self._dedup(loop, self.dedup.reply, key)
            if stored is not None:
                return Reply.loads(stored)
            await asyncio.sleep(0.02)
        return NO_REPLY

    @property
    def _pair_ttl(self) -> int:
        """How long a request's (timestamp, nonce) is remembered: while its timestamp is
        inside the window, either side of now."""
        return 2 * self.settings.timestamp_window_seconds + 60

    @property
    def _claims_pair(self) -> bool:
        """Whether the claim checks the request's pair itself (Redis, on the event loop)."""
        return (getattr(self.dedup, "asynchronous", False) and not self.group_commit
                and hasattr(self.dedup, "claim_prefetching"))

    async def _claim(self, loop, msg, key: str, pair: tuple | None = None):
        """Claim `key`. On Redis the user's lock and record come with the claim, in one
        round trip, for the handler (PREFETCH, carried with the context to its thread), and
        with `pair` (`receive`) the request's pair is checked in it too (REPLAYED)."""
        claim = getattr(self.dedup, "claim_prefetching", None)
        if claim is None or self.group_commit:
            return await self._dedup(loop, self.dedup.claim, key)
        if getattr(self.dedup, "asynchronous", False):  # Redis: on the event loop
            claimed = await self.dedup.aclaim_prefetching(key, msg.source, self._on_dedup_thread,
                                                          pair)
            if claimed is REPLAYED:
                return claimed
        else:
            claimed = await self._dedup(loop, lambda k: claim(k, msg.source), key)
        if isinstance(claimed, Prefetch):
            PREFETCH.set(claimed)
            return True
        return bool(claimed)

    def _on_dedup_thread(self, fn) -> asyncio.Future:
        """`fn()` on a de-duplication thread (the database's fallback of an async store)."""
        return asyncio.get_running_loop().run_in_executor(
            self.dedup_executor, contextvars.copy_context().run, fn)

    async def _dedup(self, loop, fn, key):
        if isinstance(self.dedup, MemoryDedupStore):
            return fn(key)  # microseconds: no thread hop
        return await loop.run_in_executor(self.dedup_executor, contextvars.copy_context().run,
                                          fn, key)

    def _submit(self, loop, msg, key: str, handoff: Handoff) -> asyncio.Future:
        if not self.group_commit:  # the log ids (context variables) go along
            return self.lane.run(loop, self._run_one, msg, key, handoff)
        fut = loop.create_future()
        self._pending.append((msg, key, handoff, logs.current(), fut, loop))
        self._schedule_drain()
        return fut

    def _schedule_drain(self) -> None:
        """One drain waiting in the executor at a time (it takes every message waiting by
        then), rather than one per message. A drain clears the flag before it takes the
        messages, so a message appended while the flag is set is always taken."""
        if not self._drain_scheduled:
            self._drain_scheduled = True
            # In a context of its own: the log ids it sets for each message die with it.
            self.lane.submit(contextvars.Context(), self._drain)

    def _run_one(self, msg, key: str, handoff: Handoff) -> Reply:
        return self._finish([(msg, key, handoff)], self.process_batch([msg], [(handoff, key)]))[0]

    def _drain(self) -> None:
        """Take every message waiting (up to a batch) and answer them with one commit."""
        self._drain_scheduled = False
        items = []
        while self._pending and len(items) < MAX_BATCH:
            items.append(self._pending.popleft())
        if self._pending:  # more than a batch waiting: the rest in the next drain
            self._schedule_drain()
        if not items:
            return
        try:
            ids = [i[3] for i in items]
            replies = self._finish([i[:3] for i in items],
                                   self.process_batch([i[0] for i in items],
                                                      [(i[2], i[1]) for i in items], ids), ids)
        except Exception:
            log.exception("message batch failed")
            replies = [Apology(render("error")) for _ in items]
        # One wake-up of each event loop per batch, not one per message.
        by_loop: dict = {}
        for (*_, fut, loop), reply in zip(items, replies):
            by_loop.setdefault(loop, []).append((fut, reply))
        for loop, done in by_loop.items():
            loop.call_soon_threadsafe(_resolve, done)

    def _finish(self, items, results, ids: list | None = None) -> list[Reply]:
        """Record each reply for retries, and hand it to the HTTP response or, when that
        was too slow, to a customer-service message."""
        out = []
        for n, ((msg, key, handoff), result) in enumerate(zip(items, results)):
            with logs.bound(ids[n] if ids else None):
                out.append(self._finish_one(msg, key, handoff, *result))
        return out

    @property
    def _reply_with_release(self) -> bool:
        """Whether a message's reply is stored while its user's lock is still held, to go
        with the lock's release (Redis, while it answers: `RedisDedupStore.complete`)."""
        return self._failover is not None and not self._failover.down

    def _settle(self, key: str, handoff: Handoff, reply: Reply) -> Reply:
        """Record the reply for retries; the reply for the HTTP response, or NO_REPLY when
        that was given up on (WeChat already got "success")."""
        if handoff.settle("replied") == "replied":
            if reply.text or reply.transfer:
                reply.at = reply.at or int(time.time())
            self.dedup.complete(key, reply.dumps())
            return reply
        self.dedup.complete(key, NO_REPLY.dumps())
        return NO_REPLY

    def _finish_one(self, msg, key, handoff, reply, actions, queued_late, stored) -> Reply:
        for action in actions:
            self.services.run_after_commit(action)
        if stored:  # recorded already (`process_batch`), with the release of the user's lock
            return reply
        answer = self._settle(key, handoff, reply)
        if answer is NO_REPLY and reply.text and not queued_late:
            # Too late for the HTTP response: the apology of a failed transaction follows.
            self._late_reply(msg.source, reply.text, key)
        return answer

    def _late_reply(self, openid: str, text: str, key: str) -> None:
        """A late reply queued on its own (the apology, when the handler's transaction
        failed after WeChat was answered "success"), as a customer-service message through
        the outbox (retried; it dies with WeChat's 48-hour window)."""
        from sqlmodel import Session

        try:
            with Session(self.engine, expire_on_commit=False) as session:
                row = notify.late_reply(session, openid, text, self.services.now(),
                                        key=f"late:{key}")
                session.commit()
            self.services.kick_outbox([(row, "wechat")])
        except Exception:
            log.exception("late reply to %s… could not be queued", openid[:6])


class Replayed(Exception):
    """The request's signed (timestamp, nonce) came before with another body: a replayed
    signature carrying a forged message (the door answers 403)."""


class Apology(Reply):
    """The apology for a message whose handler or transaction failed."""


def _outcome(reply: Reply) -> str:
    if isinstance(reply, Apology):
        return "error"
    return "replied" if reply.text or reply.transfer else "no_reply"


def _error() -> tuple[Reply, list, bool, bool]:
    """The apology for a message whose handler or transaction failed (rendered only then)."""
    return Apology(render("error")), [], False, False


def _late_done(fut: asyncio.Future) -> None:
    """A handler that finished after its HTTP response was given up on: its failure is
    logged here (nobody awaits it)."""
    if not fut.cancelled() and fut.exception() is not None:
        exc = fut.exception()
        log.error("late handler failed: %s", exc, exc_info=(type(exc), exc, exc.__traceback__))


def _resolve(done: list[tuple[asyncio.Future, Reply]]) -> None:
    for fut, reply in done:
        if not fut.done():
            fut.set_result(reply)
