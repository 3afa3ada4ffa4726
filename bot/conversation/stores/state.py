"""Conversation state stores (memory, SQL, Redis): each user's `Record` and the user's lock.

The SQL state store works on the message's own connection and transaction (state and the
handler's writes commit together); the others ignore the connection they are given."""
from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from sqlalchemy import Connection, Engine, delete

from bot.infra.db import driver_execute
from models import FsmState


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
_HELD: contextvars.ContextVar["_Held | None"] = contextvars.ContextVar("held_lock", default=None)


@dataclass
class _Held:
    """The user's lock held by the running message, and the write that goes to Redis with
    its release (the message's stored reply, `RedisStateStore.with_release`)."""

    key: str
    token: str
    released: bool = False
    then: tuple[str, str, int] | None = None  # SET key value EX seconds


# The last write of a message, one round trip: the user's record written (ARGV[1] '1':
# fields v, t, expiring after ARGV[4] seconds), deleted ('0') or left alone (''); the
# user's lock (KEYS[2]) released if still ours (token ARGV[5]; an expired lock may be
# another's); and, with KEYS[3], the message's reply stored (ARGV[6], for ARGV[7] seconds).
_FINISH = """
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 't', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
elseif ARGV[1] == '0' then
  redis.call('DEL', KEYS[1])
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7]) end
return 1
"""
# The claim of a message, then (if claimed) its user's lock, then (if locked) the user's
# record: {0} not claimed; {1, 0} claimed, lock busy; {1, 1, value, updated_at}.
_CLAIM_LOCK_LOAD = """
if not redis.call('SET', KEYS[1], '', 'NX', 'EX', ARGV[1]) then return {0} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, 0} end
local v = redis.call('HMGET', KEYS[3], 'v', 't')
return {1, 1, v[1] or false, v[2] or false}
"""
# The same, after the request's (timestamp, nonce) pair (KEYS[1], its body's digest ARGV[1],
# kept ARGV[2] seconds): {-1} when the pair came before with another body (a replayed
# signature: nothing claimed); otherwise the claim's answer with, last, 1 when the pair is new.
_PAIR_CLAIM_LOCK_LOAD = """
local new = 0
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  new = 1
else
  local seen = redis.call('GET', KEYS[1])
  if seen and seen ~= ARGV[1] then return {-1} end
end
if not redis.call('SET', KEYS[2], '', 'NX', 'EX', ARGV[3]) then return {0, 0, false, false, new} end
if not redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[5]) then return {1, 0, false, false, new} end
local v = redis.call('HMGET', KEYS[4], 'v', 't')
return {1, 1, v[1] or false, v[2] or false, new}
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
        self._script = client.register_script(_FINISH)

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
        held = _Held(key, token)
        reset = _HELD.set(held)
        try:
            yield
        finally:
            _HELD.reset(reset)
            if not held.released:
                self._finish(key, held, "")

    def with_release(self, key: str, value: str, seconds: int) -> bool:
        """Make `SET key value EX seconds` with the release of the user's lock held here
        (no round trip of its own); False when no lock is held here."""
        held = _HELD.get()
        if held is None or held.released:
            return False
        held.then = (key, value, seconds)
        return True

    def load(self, key: str, conn: Connection) -> Record:
        pre = PREFETCH.get()
        if pre is not None and pre.key == key:
            PREFETCH.set(None)  # once
            return pre.record
        raw = self._r.hmget(self.state_key(key), "v", "t")
        return Record.loads(raw[0], float(raw[1] or 0)) if raw[0] else Record()

    def save(self, key: str, record: Record, conn: Connection) -> None:
        """Write the record (or delete it when empty) and, when this thread holds the
        user's lock, release it in the same round trip, with what goes with the release
        (`with_release`): one script (redis-py's pipeline of the same commands was 4% of
        the worker's GIL samples on PostgreSQL + Redis, the handler itself 10%; py-spy)."""
        held = _HELD.get()
        if held is not None and (held.key != key or held.released):
            held = None
        self._finish(key, held, "0" if record.empty else "1", record)

    def _finish(self, key: str, held: "_Held | None", write: str,
                record: "Record | None" = None) -> None:
        """One round trip (_FINISH): the record (`write` '1'), its deletion ('0') or
        nothing (''); the release of `held`; and the write that goes with it."""
        keys = [self.state_key(key), self.lock_key(key)]
        args = ["", "", "", "", held.token if held else "", "", ""]
        if write == "1":
            args[1:4] = [record.dumps(), repr(record.updated_at), self._ttl]
        args[0] = write
        if held is not None and held.then is not None:
            keys.append(held.then[0])
            args[5:7] = held.then[1:]
        self._script(keys=keys, args=args)
        if held is not None:
            held.released = True


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
