"""Pluggable stores, each in three flavours (memory, SQL, Redis; Redis with the database
behind it, for when Redis goes away while the bot runs):

* `StateStore` keeps each user's conversation record (flow state, collected data, pages);
* `DedupStore` remembers every inbound message and the reply it got, so that WeChat's
  retries and replays never run a handler twice.

The SQL state store works on the message's own connection and transaction (state and the
handler's writes commit together); the others ignore the connection they are given.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import time
import uuid
import weakref
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from sqlalchemy import Connection, Engine, delete, func, select, update

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
            # EVAL, not the registered script: redis-py sends SCRIPT EXISTS (a round trip of
            # its own) before a pipeline that holds a registered script.
            pipe.eval(_UNLOCK, 1, self.lock_key(key), held[1])
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


class DedupMirror:
    """The database's copy of the claims and replies made in Redis, written a moment later
    (every INTERVAL seconds, in one statement, by a thread of its own) so that the database
    can take over exactly where Redis stopped: a message claimed in Redis and retried by
    WeChat after Redis went away is found in the database, not handled again. Before the
    database answers a claim (Redis down), what is still waiting here is written first.

    The copy does not wait for the disk on PostgreSQL (`synchronous_commit` off for its own
    transaction only): it costs no message a WAL flush, and a PostgreSQL crash can lose
    its last fraction of a second, which only matters if Redis fails in the same moment."""

    INTERVAL = 0.1
    MAX_ROWS = 200_000  # held while the database does not answer; the oldest go first

    def __init__(self, engine: Engine, ttl_seconds: int) -> None:
        self._engine = engine
        self._ttl = ttl_seconds
        self._pg = engine.dialect.name == "postgresql"
        self._rows: dict[str, tuple[float, str | None]] = {}  # key -> (created_at, reply)
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._failing = False

    def add(self, key: str, created_at: float, reply: str | None = None) -> None:
        with self._lock:
            old = self._rows.get(key)
            if old is not None:
                created_at, reply = old[0], old[1] if reply is None else reply
            elif len(self._rows) >= self.MAX_ROWS:
                del self._rows[next(iter(self._rows))]
            self._rows[key] = (created_at, reply)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="dedup-mirror",
                                                daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Write what is waiting (and on every minute, prune the old rows)."""
        with self._flushing:  # one writer at a time: rows are written in the order taken
            with self._lock:
                rows, self._rows = self._rows, {}
            now = time.time()
            prune = now - self._last_prune > 60
            if not rows and not prune:
                return
            try:
                with self._engine.begin() as conn:
                    if self._pg:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit TO off")
                    if rows:
                        stmt = upsert(self._engine, DEDUP_T)
                        stmt = stmt.on_conflict_do_update(
                            index_elements=[DEDUP_T.c.key],
                            set_={"reply": func.coalesce(stmt.excluded.reply, DEDUP_T.c.reply)})
                        conn.execute(stmt, [{"key": k, "created_at": c, "reply": r}
                                            for k, (c, r) in rows.items()])
                    if prune:
                        conn.execute(delete(DEDUP_T).where(DEDUP_T.c.created_at < now - self._ttl))
                if prune:
                    self._last_prune = now
                if self._failing:
                    self._failing = False
                    log.warning("de-duplication records are written to the database again")
            except Exception as exc:  # noqa: BLE001 (the database is away: keep, retry)
                with self._lock:
                    for k, v in rows.items():
                        self._rows.setdefault(k, v)
                if not self._failing:
                    self._failing = True
                    log.error("de-duplication records could not be copied to the database "
                              "(%s); kept to retry", _one_line(exc))
                raise

    def recent(self, seconds: float) -> list[tuple[str, str | None]]:
        """The database's claims of the last `seconds` (key, reply)."""
        with self._engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(DEDUP_T.c.key, DEDUP_T.c.reply)
                .where(DEDUP_T.c.created_at > time.time() - seconds))]

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 (logged once by flush)
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.flush()
        except Exception:  # noqa: BLE001
            pass


class RedisDedupStore:
    """Claims and replies in Redis. With `aclient` (a factory of redis.asyncio clients) the
    two calls every message makes before its handler (`arequest_seen`,
    `aclaim_prefetching`) run on the event loop itself: no thread hop each (measured with
    bench/profile_message.py and py-spy: handing a call to a thread and back cost more of
    the worker's CPU than the Redis call)."""

    def __init__(self, client, ttl_seconds: int, prefix: str,
                 states: RedisStateStore | None = None, aclient=None,
                 mirror: DedupMirror | None = None) -> None:
        self.mirror = mirror
        self._r = client
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._states = states
        self._claim_lock_load = client.register_script(_CLAIM_LOCK_LOAD)
        self._aclient = aclient
        # One asyncio client per event loop (a connection belongs to the loop that made
        # it; tests run one loop each).
        self._async: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def asynchronous(self) -> bool:
        return self._aclient is not None

    def _on_loop(self):
        loop = asyncio.get_running_loop()
        got = self._async.get(loop)
        if got is None:
            client = self._aclient()
            got = self._async[loop] = (client, client.register_script(_CLAIM_LOCK_LOAD))
        return got

    def _claim_args(self, key: str, user: str) -> tuple[str, list, list]:
        token = uuid.uuid4().hex
        st = self._states
        return (token, [self._prefix + key, st.lock_key(user), st.state_key(user)],
                [self._ttl, token, st.LOCK_MS])

    def _mirrored(self, key: str, claimed, reply: str | None = None, created=None):
        if claimed and self.mirror is not None:
            self.mirror.add(key, time.time() if created is None else created, reply)
        return claimed

    @staticmethod
    def _claimed(res, user: str, token: str) -> "bool | Prefetch":
        if not res[0]:
            return False
        if not res[1]:
            return True
        raw, updated = res[2], res[3]
        record = Record.loads(raw, float(updated or 0)) if raw else Record()
        return Prefetch(user, token, record)

    def claim_prefetching(self, key: str, user: str) -> "bool | Prefetch":
        """`claim`, and when claimed, the user's lock and record in the same round trip
        (a `Prefetch` for the handler; True when the lock is busy: the handler waits for it)."""
        if self._states is None:
            return self.claim(key)
        token, keys, args = self._claim_args(key, user)
        return self._mirrored(key, self._claimed(self._claim_lock_load(keys=keys, args=args),
                                                 user, token))

    async def aclaim_prefetching(self, key: str, user: str) -> "bool | Prefetch":
        """`claim_prefetching` on the event loop."""
        client, script = self._on_loop()
        if self._states is None:
            return self._mirrored(key, bool(await client.set(self._prefix + key, "", nx=True,
                                                             ex=self._ttl)))
        token, keys, args = self._claim_args(key, user)
        return self._mirrored(key, self._claimed(await script(keys=keys, args=args), user, token))

    async def arequest_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        """`request_seen` on the event loop."""
        client, _ = self._on_loop()
        pair = _request_key(timestamp, nonce)
        key = self._prefix + pair
        if await client.set(key, digest, nx=True, ex=ttl):
            return self._mirrored(pair, True, digest, time.time() + ttl - self._ttl)
        stored = await client.get(key)
        stored = stored.decode() if isinstance(stored, bytes) else stored
        return stored is None or stored == digest

    def claim(self, key: str) -> bool:
        return self._mirrored(key, bool(self._r.set(self._prefix + key, "", nx=True,
                                                    ex=self._ttl)))

    def complete(self, key: str, reply: str) -> None:
        # "\x00" prefix tells a completed empty reply from a pending claim ("").
        self._r.set(self._prefix + key, "\x00" + reply, ex=self._ttl)
        self._mirrored(key, True, reply)

    def reply(self, key: str) -> str | None:
        raw = self._r.get(self._prefix + key)
        if not raw:
            return PENDING
        raw = raw.decode() if isinstance(raw, bytes) else raw
        return raw[1:]

    def request_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        pair = _request_key(timestamp, nonce)
        key = self._prefix + pair
        if self._r.set(key, digest, nx=True, ex=ttl):
            return self._mirrored(pair, True, digest, time.time() + ttl - self._ttl)
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


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

    async def aclaim_prefetching(self, key: str, user: str, run):
        """`claim_prefetching`, Redis's call on the event loop, the database's by `run`."""
        return await self.failover.acall(lambda: self.primary.aclaim_prefetching(key, user),
                                         self._db(lambda: self.fallback.claim(key)), run)

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


