"""Redis with the database behind it, for when Redis goes away while the bot runs; and
`build_stores`, which picks the flavours the settings ask for."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine

from bot.conversation.stores.dedup import (REPLAYED, DedupMirror, MemoryDedupStore, RedisDedupStore,
                                           SqlDedupStore, _one_line, log)
from bot.conversation.stores.state import Record, RedisStateStore, SqlStateStore, state_ttl_seconds
from bot.infra import metrics


class Failover:
    """Which store answers: the primary (Redis) until a call to it fails, then the fallback
    (the database) until the primary answers again. While it is down every call goes
    straight to the fallback, and the primary is tried again every RETRY_SECONDS. Each
    switch is logged once. Shared by the state and the de-duplication store."""

    RETRY_SECONDS = 2.0

    def __init__(self, errors: tuple[type[BaseException], ...], what: str = "Redis") -> None:
        self.errors = errors
        self.what = what
        self.down = False
        self._next_try = 0.0
        self._lock = threading.Lock()
        self.on_back: list = []  # called (once) when the primary answers again, before use

    def call(self, primary, fallback):
        if not self.down or time.monotonic() >= self._next_try:
            try:
                result = primary()
            except self.errors as exc:
                self.failed(exc)
            else:
                if self.down:
                    self._back()
                return result
        return fallback()

    async def acall(self, primary, fallback, run):
        """`call` with a coroutine function as the primary; the fallback (the database's,
        blocking) is run by `run` (on a thread) and awaited."""
        if not self.down or time.monotonic() >= self._next_try:
            try:
                result = await primary()
            except self.errors as exc:
                self.failed(exc)
            else:
                if self.down:
                    self._back()
                return result
        return await run(fallback)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._next_try = time.monotonic() + self.RETRY_SECONDS
            if self.down:
                return
            self.down = True
        _record_backends("database", "database")
        metrics.STORE_SWITCHES.labels("database").inc()
        log.error("%s unreachable (%s): conversation state and message de-duplication use "
                  "the database until it answers again", self.what, _one_line(exc))

    def _back(self) -> None:
        with self._lock:
            if not self.down:
                return
            for hook in self.on_back:
                try:
                    hook()
                except Exception as exc:  # noqa: BLE001 (stay on the database a while more)
                    self._next_try = time.monotonic() + self.RETRY_SECONDS
                    log.error("%s answers again, but could not be brought up to date (%s)",
                              self.what, _one_line(exc))
                    return
            self.down = False
        _record_backends("redis", "redis")
        metrics.STORE_SWITCHES.labels("redis").inc()
        log.warning("%s answers again: conversation state and message de-duplication are "
                    "back on it", self.what)


_BACKENDS = ("redis", "database", "memory")


def _record_backends(state: str, dedup: str) -> None:
    """Which stores answer now, for /metrics (vipbot_store_backend)."""
    metrics.record_store("state", state, _BACKENDS)
    metrics.record_store("dedup", dedup, _BACKENDS)



class FailoverDedupStore:
    """Redis, the database behind it. The database holds a copy of Redis's records a moment
    old (`DedupMirror`), so a message claimed in Redis is not handled again by the database
    when Redis goes; when Redis answers again it gets the database's recent records
    (RESTORE_SECONDS, beyond WeChat's retries) before it answers a claim, so a message
    handled while Redis was down is not handled again by Redis."""

    RESTORE_SECONDS = 120

    def __init__(self, primary, fallback, failover: Failover) -> None:
        self.primary, self.fallback, self.failover = primary, fallback, failover
        self.mirror = getattr(primary, "mirror", None)
        if self.mirror is not None:
            failover.on_back.append(self._restore)

    def _restore(self) -> None:
        """The database's recent claims and replies into Redis (what is there stays)."""
        p = self.primary
        pipe = p._r.pipeline(transaction=False)
        for key, reply in self.mirror.recent(self.RESTORE_SECONDS):
            if key.startswith("n:"):  # a request pair: its body's digest
                pipe.set(p._prefix + key, reply or "", nx=True, ex=p._ttl)
            else:
                pipe.set(p._prefix + key, "" if reply is None else "\x00" + reply, nx=True,
                         ex=p._ttl)
        pipe.execute()

    def _db(self, fn):
        """The database's call, once what the mirror holds is written (a claim made in Redis
        a moment ago must be there to be found)."""
        def call():
            if self.mirror is not None:
                self.mirror.flush()
            return fn()
        return call

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()

    def claim(self, key: str) -> bool:
        return self.failover.call(lambda: self.primary.claim(key),
                                  self._db(lambda: self.fallback.claim(key)))

    def claim_prefetching(self, key: str, user: str):
        return self.failover.call(lambda: self.primary.claim_prefetching(key, user),
                                  self._db(lambda: self.fallback.claim(key)))

    @property
    def asynchronous(self) -> bool:
        """Whether `aclaim_prefetching` and `arequest_seen` take the event loop's path."""
        return getattr(self.primary, "asynchronous", False)

    async def aclaim_prefetching(self, key: str, user: str, run, pair: tuple | None = None):
        """`claim_prefetching`, Redis's call on the event loop, the database's by `run`;
        with `pair` (timestamp, nonce, digest, ttl) the request's pair first, in the same
        call (REPLAYED when it came with another body)."""
        def on_database():
            if pair is not None and not self.fallback.request_seen(*pair):
                return REPLAYED
            return self.fallback.claim(key)

        return await self.failover.acall(lambda: self.primary.aclaim_prefetching(key, user, pair),
                                         self._db(on_database), run)

    async def arequest_seen(self, timestamp: str, nonce: str, digest: str, ttl: int, run):
        return await self.failover.acall(
            lambda: self.primary.arequest_seen(timestamp, nonce, digest, ttl),
            self._db(lambda: self.fallback.request_seen(timestamp, nonce, digest, ttl)), run)

    def complete(self, key: str, reply: str) -> None:
        self.failover.call(lambda: self.primary.complete(key, reply),
                           self._db(lambda: self.fallback.complete(key, reply)))

    def reply(self, key: str) -> str | None:
        return self.failover.call(lambda: self.primary.reply(key),
                                  self._db(lambda: self.fallback.reply(key)))

    def request_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        return self.failover.call(
            lambda: self.primary.request_seen(timestamp, nonce, digest, ttl),
            self._db(lambda: self.fallback.request_seen(timestamp, nonce, digest, ttl)))


class FailoverStateStore:
    """State in Redis, or in the database while Redis is down (a conversation started in
    one is not seen in the other: at a switch, a half-done flow starts afresh). Saved after
    the handler's commit while on Redis, in the handler's transaction while on the database
    (`in_transaction`)."""

    def __init__(self, primary, fallback: SqlStateStore, failover: Failover) -> None:
        self.primary, self.fallback, self.failover = primary, fallback, failover

    @contextmanager
    def lock(self, key: str, conn: Connection) -> Iterator[None]:
        def enter(store):
            cm = store.lock(key, conn)
            cm.__enter__()
            return cm

        cm = self.failover.call(lambda: enter(self.primary), lambda: enter(self.fallback))
        try:
            yield
        finally:
            try:
                cm.__exit__(None, None, None)
            except self.failover.errors as exc:  # Redis gone while held: its lock expires
                self.failover.failed(exc)

    @property
    def in_transaction(self) -> bool:
        return self.failover.down

    def load(self, key: str, conn: Connection) -> Record:
        return self.failover.call(lambda: self.primary.load(key, conn),
                                  lambda: self.fallback.load(key, conn))

    def save(self, key: str, record: Record, conn: Connection) -> None:
        """While Redis is down the pipeline saves in the handler's transaction (as with the
        SQL store); a save after the commit that finds Redis just gone commits on its own."""
        def on_database():
            self.fallback.save(key, record, conn)
            if not conn.in_transaction():
                conn.connection.dbapi_connection.commit()

        self.failover.call(lambda: self.primary.save(key, record, conn), on_database)


def build_stores(settings, engine: Engine):
    """Redis when REDIS_URL is set; otherwise the database for state, and for dedup the
    database on PostgreSQL (shared by workers) or memory on SQLite (one process)."""
    if settings.redis_url:
        import redis

        # Short timeouts: a Redis that stops answering costs a message a second or two once,
        # then the database takes over (Failover).
        timeouts = {"socket_connect_timeout": 1, "socket_timeout": 2}
        client = redis.Redis.from_url(settings.redis_url, **timeouts)

        def aclient():  # bounded, as the threads bounded the synchronous one
            import redis.asyncio

            pool = redis.asyncio.BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=16, timeout=2, **timeouts)
            return redis.asyncio.Redis(connection_pool=pool)

        prefix = settings.redis_prefix
        failover = Failover((redis.exceptions.RedisError, OSError))
        _record_backends("redis", "redis")
        states = RedisStateStore(client, prefix + "state:", state_ttl_seconds(settings))
        return (FailoverStateStore(states, SqlStateStore(engine), failover),
                FailoverDedupStore(RedisDedupStore(client, settings.dedup_ttl_seconds,
                                                   prefix + "dedup:", states, aclient,
                                                   DedupMirror(engine, settings.dedup_ttl_seconds)),
                                   SqlDedupStore(engine, settings.dedup_ttl_seconds), failover))
    memory = engine.dialect.name == "sqlite"
    dedup = (MemoryDedupStore(settings.dedup_ttl_seconds) if memory
             else SqlDedupStore(engine, settings.dedup_ttl_seconds))
    _record_backends("database", "memory" if memory else "database")
    return SqlStateStore(engine), dedup
