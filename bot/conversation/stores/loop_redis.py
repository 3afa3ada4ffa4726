"""Redis calls on the event loop for the calls every message makes before its handler (the
claim): a few redis-py asyncio connections of our own, taken from a free list.

redis-py's asyncio client and connection pool wrap every command in an `asyncio.Condition`,
a timeout context, connection-count metrics hooks, a retry wrapper and a check of the
deprecated arguments: in py-spy (one PostgreSQL + Redis worker, booking step) that was about
a third of the claim's cost on the event loop, the command's own sending and reading the
rest. Here a call is: take a connection, send, read, give it back. The connections are
redis-py's (its RESP encoder, hiredis's parser when installed, its timeouts and errors: a
`RedisError` or `OSError`, which the stores' failover catches)."""
from __future__ import annotations

import asyncio
import hashlib
from collections import deque

from redis.exceptions import NoScriptError, ResponseError


class LoopRedis:
    """At most `limit` connections to Redis, for the event loop that makes this object
    (connections belong to the loop that made them). A call waiting for a connection waits
    at most `wait` seconds."""

    def __init__(self, url: str, limit: int = 16, wait: float = 2.0, **options) -> None:
        import redis.asyncio

        pool = redis.asyncio.ConnectionPool.from_url(url, **options)
        self._cls, self._kwargs = pool.connection_class, pool.connection_kwargs
        self._limit, self._wait = limit, wait
        self._free: list = []
        self._count = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future] = deque()

    async def execute(self, *args):
        """One command, its reply (bytes, as redis-py's client gives without decoding)."""
        conn = await self._take()
        try:
            await conn.send_command(*args)
            reply = await conn.read_response()
        except ResponseError:
            self._give(conn)  # an error reply: the connection is fine
            raise
        except BaseException:
            self._drop(conn)
            raise
        self._give(conn)
        return reply

    def script(self, source: str) -> "LoopScript":
        return LoopScript(self, source)

    async def _take(self):
        if self._free:
            return self._free.pop()
        if self._count >= self._limit:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout(self._wait):
                    conn = await fut
            except BaseException:
                if fut.done() and not fut.cancelled():  # handed one just as we gave up
                    self._give(fut.result())
                raise
            if conn is not None:
                return conn
            # None: a connection was dropped, its place is ours (counted for us already)
        else:
            self._count += 1
        conn = self._cls(**self._kwargs)
        try:
            await conn.connect()
        except BaseException:
            self._drop(None)
            raise
        return conn

    def _give(self, conn) -> None:
        """`conn` (or, None, the place of a dropped one) to the first live waiter, or free."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        if conn is None:
            self._count -= 1
        else:
            self._free.append(conn)

    def _drop(self, conn) -> None:
        if conn is not None:
            conn._close()  # the socket, now (no await: a dead peer must not hold us)
        self._give(None)

    async def aclose(self) -> None:
        free, self._free = self._free, []
        self._count -= len(free)
        for conn in free:
            await conn.disconnect()


class LoopScript:
    """A Lua script run by its SHA1 (EVALSHA), loaded on first use and after a Redis
    restart (NOSCRIPT: EVAL sends the source once, which loads it)."""

    def __init__(self, redis: LoopRedis, source: str) -> None:
        self._redis, self._source = redis, source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list, args: list):
        try:
            return await self._redis.execute("EVALSHA", self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._redis.execute("EVAL", self._source, len(keys), *keys, *args)
