"""De-duplication stores (memory, SQL, Redis, and the database's mirror of Redis's claims):
every inbound message and the reply it got, so that WeChat's retries and replays never run a
handler twice."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Protocol

from sqlalchemy import Engine, delete, func, select, update

from bot.conversation.stores.state import (Prefetch, Record, RedisStateStore, _CLAIM_LOCK_LOAD,
                                           _PAIR_CLAIM_LOCK_LOAD)
from bot.infra.db import upsert
from models import DedupEntry


log = logging.getLogger("bot.conversation.stores")  # one logger for the stores, as before the split
DEDUP_T = DedupEntry.__table__
PENDING = None  # a claimed key whose reply is not known yet
# A claim refused because its request's (timestamp, nonce) came before with another body.
REPLAYED = "replayed"


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
            got = self._async[loop] = (client, client.register_script(_CLAIM_LOCK_LOAD),
                                       client.register_script(_PAIR_CLAIM_LOCK_LOAD))
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

    async def aclaim_prefetching(self, key: str, user: str,
                                 pair: tuple | None = None) -> "bool | Prefetch | str":
        """`claim_prefetching` on the event loop. With `pair` (timestamp, nonce, digest,
        ttl), the request's pair is checked first (`request_seen`) in the same round trip:
        REPLAYED, and nothing claimed, when it came before with another body."""
        client, script, pair_script = self._on_loop()
        if self._states is None:
            if pair is not None and not await self.arequest_seen(*pair):
                return REPLAYED
            return self._mirrored(key, bool(await client.set(self._prefix + key, "", nx=True,
                                                             ex=self._ttl)))
        token, keys, args = self._claim_args(key, user)
        if pair is None:
            return self._mirrored(key, self._claimed(await script(keys=keys, args=args), user,
                                                     token))
        timestamp, nonce, digest, ttl = pair
        name = _request_key(timestamp, nonce)
        res = await pair_script(keys=[self._prefix + name, *keys], args=[digest, ttl, *args])
        if res[0] == -1:
            return REPLAYED
        if res[4]:
            self._mirrored(name, True, digest, time.time() + ttl - self._ttl)
        return self._mirrored(key, self._claimed(res, user, token))

    async def arequest_seen(self, timestamp: str, nonce: str, digest: str, ttl: int) -> bool:
        """`request_seen` on the event loop."""
        client = self._on_loop()[0]
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
        """Store the reply; while this thread holds the user's lock, with the lock's
        release (one round trip for the state, the lock and the reply)."""
        # "\x00" prefix tells a completed empty reply from a pending claim ("").
        value = "\x00" + reply
        if self._states is None or not self._states.with_release(self._prefix + key, value,
                                                                   self._ttl):
            self._r.set(self._prefix + key, value, ex=self._ttl)
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

def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
