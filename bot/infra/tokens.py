"""WeChat's access token, shared by every worker (Redis when REDIS_URL is set, otherwise the
database's `wechat_token` row) and refreshed behind a lock, so that workers never refresh at
once nor overwrite each other's token.

A refresh after WeChat rejected a token (40001 …) needs `force_refresh`, which WeChat
rations: at most one forced refresh per FORCE_INTERVAL seconds across all workers, and at
most WECHAT_FORCE_REFRESH_DAILY_CAP a day (Beijing time); the cap is logged when reached.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, update

from bot.infra.db import upsert
from bot.infra.wechat_errors import WeChatApiError

log = logging.getLogger(__name__)

FORCE_INTERVAL = 30.0  # seconds between two forced refreshes, across all workers
EXPIRY_MARGIN = 120.0  # a token this close to its expiry is refreshed
LOCK_WAIT = 25.0  # seconds a worker waits for another worker's refresh
LEASE = 20.0  # seconds a refresh may hold the lock (a fetch takes at most its timeouts)

Fetch = Callable[[bool], tuple[str, int]]  # force -> (token, expires_in)


@dataclass
class TokenState:
    token: str | None = None
    expires_at: float = 0.0
    forced_at: float = 0.0
    forced_day: str = ""
    forced_count: int = 0


class TokenStore:
    def __init__(self, backend, *, daily_cap: int = 20, tz: ZoneInfo | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.daily_cap = daily_cap
        self.tz = tz or ZoneInfo("Asia/Shanghai")
        self.clock = clock
        self._lock = threading.Lock()  # one refresh at a time in this process
        self._cached: tuple[str, float] | None = None
        self._cap_logged = ""

    def get(self) -> str | None:
        """A token still valid (cached in the process, else the shared one), or None."""
        now = self.clock()
        cached = self._cached
        if cached and cached[1] - now > EXPIRY_MARGIN:
            return cached[0]
        state = self.backend.peek()
        if state.token and state.expires_at - now > EXPIRY_MARGIN:
            self._cached = (state.token, state.expires_at)
            return state.token
        return None

    def refresh(self, fetch: Fetch, *, rejected: str | None) -> str:
        """A fresh token: another worker's when it refreshed meanwhile, else fetched (forced
        when `rejected`, the token WeChat refused, is still the shared one)."""
        with self._lock, self.backend.locked() as (state, save):
            now = self.clock()
            if state.token and state.token != rejected and state.expires_at - now > EXPIRY_MARGIN:
                self._cached = (state.token, state.expires_at)
                return state.token  # another worker refreshed it
            force = rejected is not None
            if force:
                self._may_force(state, now)
                day = datetime.fromtimestamp(now, self.tz).date().isoformat()
                state.forced_count = state.forced_count + 1 if state.forced_day == day else 1
                state.forced_day, state.forced_at = day, now
            try:
                token, expires_in = fetch(force)
            except Exception as exc:
                if not force:
                    raise
                save(state)  # the attempt counts against WeChat's ration all the same
                failure = exc  # raised once the lock is released and the count committed
            else:
                state.token, state.expires_at = token, now + expires_in
                save(state)
                self._cached = (token, state.expires_at)
                log.info("WeChat access token %s (valid %d s)",
                         "force-refreshed" if force else "fetched", expires_in)
                return token
        raise failure

    def _may_force(self, state: TokenState, now: float) -> None:
        wait = state.forced_at + FORCE_INTERVAL - now
        if wait > 0:
            raise WeChatApiError(40001, f"access token rejected again; the last forced refresh "
                                        f"was {FORCE_INTERVAL - wait:.0f} s ago (at most one "
                                        f"per {FORCE_INTERVAL:.0f} s)")
        day = datetime.fromtimestamp(now, self.tz).date().isoformat()
        if state.forced_day == day and state.forced_count >= self.daily_cap:
            if self._cap_logged != day:
                self._cap_logged = day
                log.error("forced access-token refreshes reached the daily cap of %d "
                          "(WECHAT_FORCE_REFRESH_DAILY_CAP): calls WeChat rejects for their "
                          "token fail until tomorrow", self.daily_cap)
            raise WeChatApiError(40001, f"access token rejected; the daily cap of "
                                        f"{self.daily_cap} forced refreshes is reached")


# --- Backends: peek() -> TokenState; locked() -> (TokenState, save) under a shared lock ------


class MemoryTokens:
    def __init__(self) -> None:
        self.state = TokenState()

    def peek(self) -> TokenState:
        return TokenState(**asdict(self.state))

    @contextmanager
    def locked(self) -> Iterator:
        def save(state: TokenState) -> None:
            self.state = TokenState(**asdict(state))
        yield self.peek(), save


class RedisTokens:
    """One JSON value per app id, and a Redis lock around refreshes."""

    def __init__(self, client, key: str) -> None:
        self.client, self.key = client, key

    def peek(self) -> TokenState:
        raw = self.client.get(self.key)
        return TokenState(**json.loads(raw)) if raw else TokenState()

    @contextmanager
    def locked(self) -> Iterator:
        lock = self.client.lock(self.key + ":lock", timeout=60, blocking_timeout=LOCK_WAIT)
        if not lock.acquire():
            raise WeChatApiError(None, "timed out waiting for another worker's token refresh")
        try:
            yield self.peek(), lambda state: self.client.set(self.key, json.dumps(asdict(state)))
        finally:
            try:
                lock.release()
            except Exception:  # expired meanwhile: nothing to release
                pass


class SqlTokens:
    """The `wechat_token` row of the app id. The refresh lock is a lease in that row (taken
    and released in short transactions): no connection is held while WeChat is asked, which
    on SQLite's one connection would stall every message."""

    def __init__(self, engine: Engine, appid: str) -> None:
        from models import WechatToken

        self.engine, self.appid = engine, appid
        self.table = WechatToken.__table__

    def _state(self, row) -> TokenState:
        if row is None:
            return TokenState()
        return TokenState(row.access_token, row.expires_at, row.forced_at, row.forced_day,
                          row.forced_count)

    def peek(self) -> TokenState:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.table).where(self.table.c.appid == self.appid)).first()
            conn.rollback()
        return self._state(row)

    def _take_lease(self, owner: str) -> TokenState | None:
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(upsert(conn, t).values(appid=self.appid, access_token=None, expires_at=0.0,
                                       forced_at=0.0, forced_day="", forced_count=0,
                                       lock_until=0.0, lock_owner="")
                         .on_conflict_do_nothing(index_elements=["appid"]))
            query = select(t).where(t.c.appid == self.appid)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).first()
            now = time.time()
            if row.lock_until > now:
                return None  # another worker is refreshing
            conn.execute(update(t).where(t.c.appid == self.appid)
                         .values(lock_until=now + LEASE, lock_owner=owner))
            return self._state(row)

    @contextmanager
    def locked(self) -> Iterator:
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_WAIT
        while (state := self._take_lease(owner)) is None:
            if time.monotonic() > deadline:
                raise WeChatApiError(None, "timed out waiting for another worker's token refresh")
            time.sleep(0.05)
        saved: list[TokenState] = []
        try:
            yield state, saved.append
        finally:
            t = self.table
            values = dict(lock_until=0.0, lock_owner="")
            if saved:
                s = saved[-1]
                values.update(access_token=s.token, expires_at=s.expires_at,
                              forced_at=s.forced_at, forced_day=s.forced_day,
                              forced_count=s.forced_count)
            with self.engine.begin() as conn:
                conn.execute(update(t).where(t.c.appid == self.appid, t.c.lock_owner == owner)
                             .values(**values))


def make_token_store(settings, engine: Engine | None) -> TokenStore:
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3,
                                      socket_timeout=5)
        backend = RedisTokens(client, f"{settings.redis_prefix}wx:token:{settings.wechat_app_id}")
    elif engine is not None:
        backend = SqlTokens(engine, settings.wechat_app_id)
    else:
        backend = MemoryTokens()
    return TokenStore(backend, daily_cap=settings.wechat_force_refresh_daily_cap, tz=settings.tz)
