"""Pluggable stores, each in three flavours (memory, SQL, Redis; Redis with the database
behind it, for when Redis goes away while the bot runs):

* `StateStore` keeps each user's conversation record (flow state, collected data, pages);
* `DedupStore` remembers every inbound message and the reply it got, so that WeChat's
  retries and replays never run a handler twice.

The SQL state store works on the message's own connection and transaction (state and the
handler's writes commit together); the others ignore the connection they are given.
"""
from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from sqlalchemy import Connection, Engine, delete, select, update

from bot.infra import metrics
from bot.infra.db import driver_execute, upsert
from models import DedupEntry, FsmState

DEDUP_T = DedupEntry.__table__
STATE_T = FsmState.__table__


@dataclass
class Record:
    """What the bot remembers about one user's conversation: the flow step (`flow:step`),
    the flow's answers, the steps visited (for 返回) and the pages still to show."""

    state: str | None = None
    data: dict = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)
    updated_at: float = 0.0
    history: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.state, self.data, self.history = None, {}, []

    @property
    def empty(self) -> bool:
        return self.state is None and not self.data and not self.pages

    def dumps(self) -> str:
        value = {"state": self.state, "data": self.data, "pages": self.pages}
        if self.history:
            value["history"] = self.history
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes | None, updated_at: float) -> "Record":
        if not raw:
            return cls()
        try:
            v = json.loads(raw)
            return cls(v.get("state"), v.get("data") or {}, v.get("pages") or [], updated_at,
                       v.get("history") or [])
        except (ValueError, AttributeError):
            return cls()  # a corrupt record is a fresh start, never a crash


class _Striped:
    """A fixed set of locks picked by key hash: bounded memory, per-key serialisation."""

    def __init__(self, n: int = 512) -> None:
        self._locks = [threading.Lock() for _ in range(n)]

    def __call__(self, key: str) -> threading.Lock:
        return self._locks[zlib.crc32(key.encode()) % len(self._locks)]


# --- State stores ------------------------------------------------------------------------


class StateStore(Protocol):
    def lock(self, key: str, conn: Connection): ...
    def load(self, key: str, conn: Connection) -> Record: ...
    def save(self, key: str, record: Record, conn: Connection) -> None: ...


class MemoryStateStore:
    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._locks = _Striped()

    def lock(self, key: str, conn: Connection):
        return self._locks(key)

    def load(self, key: str, conn: Connection) -> Record:
        raw = self._data.get(key)
        return Record.loads(raw[0], raw[1]) if raw else Record()

    def save(self, key: str, record: Record, conn: Connection) -> None:
        if record.empty:
            self._data.pop(key, None)
        else:
            self._data[key] = (record.dumps(), record.updated_at)


class SqlStateStore:
    """State rows in the bot's database, written in the message's transaction.

    Serialisation per user: SQLite runs one transaction at a time (BEGIN IMMEDIATE, one
    connection per process); PostgreSQL takes a transaction-scoped advisory lock on the
    user's key, so two workers cannot interleave one user's messages.
    """

    def __init__(self, engine: Engine) -> None:
        self._pg = engine.dialect.name == "postgresql"
        # Plain SQL straight on the DB-API cursor of the message's connection (inside its
        # transaction): this runs for every message, and SQLAlchemy's per-statement
        # machinery would be most of its cost. Same text on both dialects.
        p = "%s" if self._pg else "?"
        self._lock = f"SELECT pg_advisory_xact_lock({p})"
        self._select = f"SELECT value, updated_at FROM fsm_state WHERE key = {p}"
        self._delete = f"DELETE FROM fsm_state WHERE key = {p}"
        self._upsert = (f"INSERT INTO fsm_state (key, value, updated_at) VALUES ({p}, {p}, {p}) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                        "updated_at = excluded.updated_at")

    @contextmanager
    def lock(self, key: str, conn: Connection) -> Iterator[None]:
        if self._pg:
            driver_execute(conn, self._lock, (zlib.crc32(key.encode()) - 2**31,))
        yield

    def load(self, key: str, conn: Connection) -> Record:
        row = driver_execute(conn, self._select, (key,))
        return Record.loads(row[0], row[1]) if row else Record()

    def save(self, key: str, record: Record, conn: Connection) -> None:
        if record.empty:
            driver_execute(conn, self._delete, (key,))
        else:
            driver_execute(conn, self._upsert, (key, record.dumps(), record.updated_at))


# A user's lock and record, taken with the message's de-duplication claim (one Redis round
# trip, `RedisDedupStore.claim_prefetching`) and handed to the handler's thread in this
# context variable; the lock held by the running message (its key, token, whether released).
PREFETCH: contextvars.ContextVar["Prefetch | None"] = contextvars.ContextVar("prefetch", default=None)
_HELD: contextvars.ContextVar[list | None] = contextvars.ContextVar("held_lock", default=None)

# Release a lock only if it is still ours (its token): an expired one may be another's.
_UNLOCK = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
           "end return 0")
# The claim of a message, then (if claimed) its user's lock, then (if locked) the user's
# record: {0} not claimed; {1, 0} claimed, lock busy; {1, 1, value, updated_at}.
_CLAIM_LOCK_LOAD = """
if not redis.call('SET', KEYS[1], '', 'NX', 'EX', ARGV[1]) then return {0} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, 0} end
local v = redis.call('HMGET', KEYS[3], 'v', 't')
return {1, 1, v[1] or false, v[2] or false}
"""


class LockBusy(RuntimeError):
    """Another message of the user held the lock for longer than we wait."""


@dataclass
class Prefetch:
    key: str  # the user's
    token: str
    record: "Record"


class RedisStateStore:
    """State in Redis hashes; a short Redis lock (SET NX PX with a token, released by a
    compare-and-delete script) serialises one user's messages across workers. The release
    travels with the state's write (one round trip), and the lock and the record may come
    with the message's claim (`Prefetch`)."""

    LOCK_MS = 30_000  # a worker that dies holding a lock holds it this long at most
    WAIT_SECONDS = 10.0

    def __init__(self, client, prefix: str, ttl_seconds: int = 15 * 60 + 300):
        self._r = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._unlock = client.register_script(_UNLOCK)

    def lock_key(self, key: str) -> str:
        return f"{self._prefix}lock:{key}"

    def state_key(self, key: str) -> str:
        return self._prefix + key

    @contextmanager
    def lock(self, key: str, conn: Connection) -> Iterator[None]:
        pre = PREFETCH.get()
        if pre is not None and pre.key == key:
            token = pre.token  # taken with the claim
        else:
            token = uuid.uuid4().hex
            deadline = time.monotonic() + self.WAIT_SECONDS
            pause = 0.002
            while not self._r.set(self.lock_key(key), token, nx=True, px=self.LOCK_MS):
                if time.monotonic() > deadline:
                    raise LockBusy(f"user lock busy for {self.WAIT_SECONDS:g} s")
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        held = [key, token, False]
        reset = _HELD.set(held)
        try:
            yield
        finally:
            _HELD.reset(reset)
            if not held[2]:
                self._unlock(keys=[self.lock_key(key)], args=[token])

    def load(self, key: str, conn: Connection) -> Record:
        pre = PREFETCH.get()
        if pre is not None and pre.key == key:
            PREFETCH.set(None)  # once
            return pre.record
        raw = self._r.hmget(self.state_key(key), "v", "t")
        return Record.loads(raw[0], float(raw[1] or 0)) if raw[0] else Record()

    def save(self, key: str, record: Record, conn: Connection) -> None:
        """Write the record (or delete it when empty) and, when this thread holds the
        user's lock, release it in the same round trip."""
        pipe = self._r.pipeline(transaction=False)
        if record.empty:
            pipe.delete(self.state_key(key))
        else:
            pipe.hset(self.state_key(key), mapping={"v": record.dumps(), "t": record.updated_at})
            pipe.expire(self.state_key(key), self._ttl)
        held = _HELD.get()
        release = held is not None and held[0] == key and not held[2]
        if release:
            self._unlock(keys=[self.lock_key(key)], args=[held[1]], client=pipe)
        pipe.execute()
        if release:
            held[2] = True


# --- Dedup stores ------------------------------------------------------------------------

PENDING = None  # a claimed key whose reply is not known yet


class DedupStore(Protocol):
    def claim(self, key: str) -> bool:
        """True when this caller is the first to see `key` and must run the handler."""

    def complete(self, key: str, reply: str) -> None: ...

    def reply(self, key: str) -> str | None:
        """The stored reply, or None while the first delivery is still being handled."""

    def request_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        """Remember the request (timestamp, nonce) with its body's digest for `ttl`
        seconds. True when the pair is new or came with the same body (WeChat's retry);
        False when it came before with another body (a replayed signature)."""


class MemoryDedupStore:
    """For the embedded single-process default: an ordered dict pruned by age."""

    def __init__(self, ttl_seconds: int) -> None:
        self._ttl = ttl_seconds
        self._entries: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._requests: OrderedDict[str, tuple[float, str]] = OrderedDict()  # expiry, digest
        self._lock = threading.Lock()

    def claim(self, key: str) -> bool:
        now = time.time()
        with self._lock:
            while self._entries:
                oldest, (t, _) = next(iter(self._entries.items()))
                if now - t <= self._ttl:
                    break
                del self._entries[oldest]
            if key in self._entries:
                return False
            self._entries[key] = (now, PENDING)
            return True

    def complete(self, key: str, reply: str) -> None:
        with self._lock:
            t, _ = self._entries.get(key, (time.time(), None))
            self._entries[key] = (t, reply)

    def reply(self, key: str) -> str | None:
        entry = self._entries.get(key)
        return entry[1] if entry else PENDING

    def request_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        now = time.time()
        key = _request_key(timestamp, nonce)
        with self._lock:
            while self._requests:
                oldest, (expires, _) = next(iter(self._requests.items()))
                if expires > now:
                    break
                del self._requests[oldest]
            seen = self._requests.get(key)
            if seen is not None and seen[0] > now:
                return seen[1] == digest
            self._requests[key] = (now + ttl, digest)
            return True


def _request_key(timestamp: str, nonce: str) -> str:
    """The key of one request's (timestamp, nonce), distinct from message keys (m:, e:)."""
    return f"n:{timestamp}:{nonce}"


class SqlDedupStore:
    """Shared by every worker through the database: INSERT … ON CONFLICT DO NOTHING claims."""

    def __init__(self, engine: Engine, ttl_seconds: int) -> None:
        self._engine = engine
        self._ttl = ttl_seconds
        self._last_prune = 0.0

    def claim(self, key: str) -> bool:
        now = time.time()
        with self._engine.begin() as conn:
            if now - self._last_prune > 60:
                self._last_prune = now
                conn.execute(delete(DEDUP_T).where(DEDUP_T.c.created_at < now - self._ttl))
            res = conn.execute(upsert(self._engine, DEDUP_T).values(key=key, created_at=now)
                               .on_conflict_do_nothing(index_elements=[DEDUP_T.c.key])
                               .returning(DEDUP_T.c.key))
            return res.first() is not None

    def complete(self, key: str, reply: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(DEDUP_T).where(DEDUP_T.c.key == key).values(reply=reply))

    def reply(self, key: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(select(DEDUP_T.c.reply).where(DEDUP_T.c.key == key)).scalar()

    def request_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        """The pair as a row of the dedup table (key `n:…`, the digest in `reply`). Rows are
        pruned `ttl_seconds` after `created_at`: this row's is shifted so that it goes `ttl`
        seconds from now."""
        key = _request_key(timestamp, nonce)
        created = time.time() + ttl - self._ttl
        with self._engine.begin() as conn:
            res = conn.execute(upsert(self._engine, DEDUP_T).values(key=key, reply=digest, created_at=created)
                               .on_conflict_do_nothing(index_elements=[DEDUP_T.c.key])
                               .returning(DEDUP_T.c.key))
            if res.first() is not None:
                return True
            stored = conn.execute(select(DEDUP_T.c.reply).where(DEDUP_T.c.key == key)).scalar()
        return stored == digest


class RedisDedupStore:
    def __init__(self, client, ttl_seconds: int, prefix: str,
                 states: RedisStateStore | None = None) -> None:
        self._r = client
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._states = states
        self._claim_lock_load = client.register_script(_CLAIM_LOCK_LOAD)

    def claim_prefetching(self, key: str, user: str) -> "bool | Prefetch":
        """`claim`, and when claimed, the user's lock and record in the same round trip
        (a `Prefetch` for the handler; True when the lock is busy: the handler waits for it)."""
        if self._states is None:
            return self.claim(key)
        token = uuid.uuid4().hex
        st = self._states
        res = self._claim_lock_load(
            keys=[self._prefix + key, st.lock_key(user), st.state_key(user)],
            args=[self._ttl, token, st.LOCK_MS])
        if not res[0]:
            return False
        if not res[1]:
            return True
        raw, updated = res[2], res[3]
        record = Record.loads(raw, float(updated or 0)) if raw else Record()
        return Prefetch(user, token, record)

    def claim(self, key: str) -> bool:
        return bool(self._r.set(self._prefix + key, "", nx=True, ex=self._ttl))

    def complete(self, key: str, reply: str) -> None:
        # "\x00" prefix tells a completed empty reply from a pending claim ("").
        self._r.set(self._prefix + key, "\x00" + reply, ex=self._ttl)

    def reply(self, key: str) -> str | None:
        raw = self._r.get(self._prefix + key)
        if not raw:
            return PENDING
        raw = raw.decode() if isinstance(raw, bytes) else raw
        return raw[1:]

    def request_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        key = self._prefix + _request_key(timestamp, nonce)
        if self._r.set(key, digest, nx=True, ex=ttl):
            return True
        stored = self._r.get(key)
        stored = stored.decode() if isinstance(stored, bytes) else stored
        return stored is None or stored == digest


# --- Redis with the database behind it -------------------------------------------------

log = logging.getLogger(__name__)


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class FailoverDedupStore:
    def __init__(self, primary, fallback, failover: Failover) -> None:
        self.primary, self.fallback, self.failover = primary, fallback, failover

    def claim(self, key: str) -> bool:
        return self.failover.call(lambda: self.primary.claim(key), lambda: self.fallback.claim(key))

    def claim_prefetching(self, key: str, user: str):
        return self.failover.call(lambda: self.primary.claim_prefetching(key, user),
                                  lambda: self.fallback.claim(key))

    def complete(self, key: str, reply: str) -> None:
        self.failover.call(lambda: self.primary.complete(key, reply),
                           lambda: self.fallback.complete(key, reply))

    def reply(self, key: str) -> str | None:
        return self.failover.call(lambda: self.primary.reply(key), lambda: self.fallback.reply(key))

    def request_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        return self.failover.call(
            lambda: self.primary.request_seen(timestamp, nonce, digest, ttl),
            lambda: self.fallback.request_seen(timestamp, nonce, digest, ttl))


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


STATE_MARGIN_SECONDS = 300  # abandoned state outlives the flow timeout by at most this


def state_ttl_seconds(settings) -> int:
    """How long a conversation record outlives its last message: the flow timeout (after
    which the engine ends the flow anyway) plus a margin."""
    return settings.flow_timeout_minutes * 60 + STATE_MARGIN_SECONDS


def purge_states(engine: Engine, settings, now: float | None = None) -> int:
    """Delete SQL conversation records idle longer than the flow timeout (abandoned flows
    and pages nobody asked for): the daily job's, the SQL flavour of Redis's TTL."""
    cutoff = (time.time() if now is None else now) - settings.flow_timeout_minutes * 60
    with engine.begin() as conn:
        return conn.execute(delete(STATE_T).where(STATE_T.c.updated_at < cutoff)).rowcount


def build_stores(settings, engine: Engine):
    """Redis when REDIS_URL is set; otherwise the database for state, and for dedup the
    database on PostgreSQL (shared by workers) or memory on SQLite (one process)."""
    if settings.redis_url:
        import redis

        # Short timeouts: a Redis that stops answering costs a message a second or two once,
        # then the database takes over (Failover).
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1,
                                      socket_timeout=2)
        prefix = settings.redis_prefix
        failover = Failover((redis.exceptions.RedisError, OSError))
        _record_backends("redis", "redis")
        states = RedisStateStore(client, prefix + "state:", state_ttl_seconds(settings))
        return (FailoverStateStore(states, SqlStateStore(engine), failover),
                FailoverDedupStore(RedisDedupStore(client, settings.dedup_ttl_seconds,
                                                   prefix + "dedup:", states),
                                   SqlDedupStore(engine, settings.dedup_ttl_seconds), failover))
    memory = engine.dialect.name == "sqlite"
    dedup = (MemoryDedupStore(settings.dedup_ttl_seconds) if memory
             else SqlDedupStore(engine, settings.dedup_ttl_seconds))
    _record_backends("database", "memory" if memory else "database")
    return SqlStateStore(engine), dedup


