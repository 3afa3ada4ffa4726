"""What a running bot holds (settings, database, stores, router, WeChat client) and the
synchronous pipeline that turns one verified inbound message into a reply."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from sqlalchemy import Connection, Engine, bindparam, insert, update
from wechatpy.replies import TextReply, TransferCustomerServiceReply

from bot.infra.config import Settings
from bot.infra.db import driver_execute, make_engine
from bot.conversation.engine import dispatch, page_reply
from bot.conversation.router import Context, Reply, Router
from bot.conversation.stores import (DedupStore, MemoryDedupStore, SqlStateStore, StateStore,
                        build_stores)
from bot.domain.rules import load_rules
from bot.infra.sms import make_sms
from bot.infra.texts import render
from bot.infra.wechat_api import make_client, make_crypto
from models import WechatUser

log = logging.getLogger(__name__)

USER_T = WechatUser.__table__
_TOUCH = (update(USER_T).where(USER_T.c.openid == bindparam("who"))
          .values(last_seen_at=bindparam("now")))
SUCCESS = "success"  # WeChat's "no reply"
TOUCH_EVERY = 600.0  # seconds between writes of a user's last_seen_at
MAX_BATCH = 64  # messages sharing one commit


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


class Services:
    def __init__(self, settings: Settings, router: Router, *, engine: Engine | None = None,
                 states: StateStore | None = None, dedup: DedupStore | None = None) -> None:
        self.settings = settings
        self.router = router
        self.engine = engine or make_engine(settings.database_url)
        with self.engine.connect() as conn:  # fail fast, and warm the pool
            conn.exec_driver_sql("SELECT 1")
        default_states, default_dedup = build_stores(settings, self.engine)
        self.states = states or default_states
        self.dedup = dedup or default_dedup
        self.crypto = make_crypto(settings)
        self.rules = load_rules(settings.rules_file)
        # SQLite serves one connection per process: one thread takes messages in FIFO
        # order (threads fighting over the connection starve some messages for seconds).
        # PostgreSQL and Redis take real parallelism.
        sqlite = self.engine.dialect.name == "sqlite"
        threads = 1 if sqlite else 32
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bot")
        # Outbound calls (SMS, customer-service messages) never hold up message handling.
        self.io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bot-io")
        self._touched: dict[str, float] = {}
        # Group commit on the embedded default (SQLite, state in the database, one worker):
        # the messages waiting for the one connection share a transaction.
        self.group_commit = sqlite and isinstance(self.states, SqlStateStore)
        self._pending: deque = deque()

    @cached_property
    def wechat(self):
        return make_client(self.settings)

    @cached_property
    def sms(self):
        return make_sms(self.settings)

    def now(self) -> datetime:
        return datetime.now(self.settings.tz)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.io.shutdown(wait=True)
        self.engine.dispose()

    # --- The pipeline ---------------------------------------------------------------

    def process_batch(self, msgs: list) -> list[tuple[Reply, list]]:
        """Run the router for each message, in order, in one database transaction (group
        commit): each message in its own SAVEPOINT when there are several, so one failing
        handler loses only its own writes. Replies, and each message's outbound calls, are
        released only after the commit. Returns (reply, after-commit actions) per message."""
        error = (Reply(render("error")), [])
        results: list[tuple[Reply, list]] = []
        try:
            with self.engine.connect() as conn, conn.begin() as txn:
                savepoints = len(msgs) > 1
                for msg in msgs:
                    if savepoints:
                        driver_execute(conn, "SAVEPOINT message")
                    with self.states.lock(msg.source, conn):
                        try:
                            results.append(self._handle(conn, msg))
                        except Exception:
                            log.exception("handler failed for %s message", msg.type)
                            if not savepoints:
                                txn.rollback()
                                return [error]
                            driver_execute(conn, "ROLLBACK TO SAVEPOINT message")
                            driver_execute(conn, "RELEASE SAVEPOINT message")
                            results.append(error)
                            continue
                        if not savepoints:
                            txn.commit()  # before the user's lock is released
                    if savepoints:
                        driver_execute(conn, "RELEASE SAVEPOINT message")
                if txn.is_active:
                    txn.commit()
        except Exception:  # the database itself failed (locked, gone): nothing was saved
            log.exception("transaction for %d message(s) failed", len(msgs))
            return [error] * len(msgs)
        return results

    def _handle(self, conn: Connection, msg) -> tuple[Reply, list]:
        """One message on `conn`, inside the caller's transaction and the user's lock."""
        openid = msg.source
        now = self.now()
        record = self.states.load(openid, conn)
        before = record.dumps()
        ctx = Context(self, msg, conn, record, now)
        self._expire_flow(ctx)
        self._touch(conn, openid, now)
        try:
            reply = dispatch(ctx, self.router)
            ctx.flush()
        finally:
            ctx.close()
        if ctx.notices:
            reply.text = "\n\n".join([*ctx.notices, reply.text]).strip()
        if reply.text and not reply.paged:
            reply.text = page_reply(ctx, reply.text, self.settings.reply_max_bytes)
        if record.state is not None or record.dumps() != before:
            record.updated_at = time.time()
            self.states.save(openid, record, conn)
        return reply, ctx.after_commit

    def _expire_flow(self, ctx: Context) -> None:
        rec = ctx.record
        if rec.state and time.time() - rec.updated_at > self.settings.flow_timeout_minutes * 60:
            rec.state, rec.data = None, {}
            ctx.notices.append(render("flow/expired", minutes=self.settings.flow_timeout_minutes))

    def _touch(self, conn: Connection, openid: str, now: datetime) -> None:
        """Remember when the user last wrote (WeChat's 48-hour customer-service window),
        at most once every ten minutes per process."""
        mono = time.monotonic()
        if mono - self._touched.get(openid, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        self._touched[openid] = mono
        if len(self._touched) > 100_000:
            self._touched.clear()
        res = conn.execute(_TOUCH, {"who": openid, "now": now})
        if res.rowcount == 0:
            conn.execute(insert(USER_T).values(openid=openid, following=True, last_seen_at=now,
                                               bind_failures=0))

    def render_reply(self, msg, reply: Reply) -> str:
        if reply.transfer:
            return TransferCustomerServiceReply(message=msg).render()
        if not reply.text:
            return SUCCESS
        return TextReply(message=msg, content=reply.text).render()

    async def receive(self, msg, key: str) -> str:
        """The reply XML (or "success") for one verified message. The first delivery of
        `key` runs the handler; a retry or replay waits for, and returns, its reply. A
        handler slower than the deadline answers "success" and its reply follows as a
        customer-service message."""
        loop = asyncio.get_running_loop()
        if await self._dedup(loop, self.dedup.claim, key):
            handoff = Handoff()
            fut = self._submit(loop, msg, key, handoff)
            try:
                return await asyncio.wait_for(asyncio.shield(fut),
                                              self.settings.reply_deadline_seconds)
            except asyncio.TimeoutError:
                if handoff.claim("late"):
                    log.warning("handler slower than %.1fs; its reply follows as a "
                                "customer-service message", self.settings.reply_deadline_seconds)
                    return SUCCESS
                return await fut
        deadline = loop.time() + self.settings.reply_deadline_seconds
        while loop.time() < deadline:
            stored = await self._dedup(loop, self.dedup.reply, key)
            if stored is not None:
                return stored
            await asyncio.sleep(0.02)
        return SUCCESS

    async def _dedup(self, loop, fn, key):
        if isinstance(self.dedup, MemoryDedupStore):
            return fn(key)  # microseconds: no thread hop
        return await loop.run_in_executor(self.executor, fn, key)

    def _submit(self, loop, msg, key: str, handoff: Handoff) -> asyncio.Future:
        if not self.group_commit:
            return loop.run_in_executor(self.executor, self._run_one, msg, key, handoff)
        fut = loop.create_future()
        self._pending.append((msg, key, handoff, fut, loop))
        self.executor.submit(self._drain)
        return fut

    def _run_one(self, msg, key: str, handoff: Handoff) -> str:
        return self._finish([(msg, key, handoff)], self.process_batch([msg]))[0]

    def _drain(self) -> None:
        """Take every message waiting (up to a batch) and answer them with one commit."""
        items = []
        while self._pending and len(items) < MAX_BATCH:
            items.append(self._pending.popleft())
        if not items:
            return
        try:
            xmls = self._finish([i[:3] for i in items], self.process_batch([i[0] for i in items]))
        except Exception:
            log.exception("message batch failed")
            xmls = [self.render_reply(i[0], Reply(render("error"))) for i in items]
        for (*_, fut, loop), xml in zip(items, xmls):
            loop.call_soon_threadsafe(_resolve, fut, xml)

    def _finish(self, items, results) -> list[str]:
        """Record each reply for retries, and hand it to the HTTP response or, when that
        was too slow, to a customer-service message."""
        out = []
        for (msg, key, handoff), (reply, actions) in zip(items, results):
            for action in actions:
                self.io.submit(_logged, action)
            xml = self.render_reply(msg, reply)
            if handoff.claim("replied"):
                self.dedup.complete(key, xml)
                out.append(xml)
                continue
            # Too late for the HTTP response: WeChat already got "success".
            self.dedup.complete(key, SUCCESS)
            if reply.text:
                self.io.submit(self.send_text, msg.source, reply.text)
            out.append(SUCCESS)
        return out

    def send_text(self, openid: str, text: str) -> None:
        try:
            self.wechat.message.send_text(openid, text)
        except Exception:
            log.exception("customer-service message to %s failed", openid[:6] + "…")


def _resolve(fut: asyncio.Future, xml: str) -> None:
    if not fut.done():
        fut.set_result(xml)


def _logged(action) -> None:
    try:
        action()
    except Exception:
        log.exception("deferred action failed")
