"""Database engine: SQLite (embedded default, WAL) or PostgreSQL."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10,
                pool_timeout: float = 3.0) -> Engine:
    """An engine for `url`. PostgreSQL: a pool of `pool_size` connections plus up to
    `max_overflow` more; a caller waits at most `pool_timeout` seconds for one, then gets
    sqlalchemy.exc.TimeoutError (a message then gets the apology). `pool_size=0`: no pool."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # SQLite has one writer at a time. One pooled connection per process makes the
        # threads of this process queue on the pool (a condition variable) instead of
        # spinning in SQLite's busy handler; other processes still wait via busy_timeout.
        # Callers must therefore never hold two connections at once in one thread.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=pool_timeout,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # IMMEDIATE: a writer in another process (an import) cannot invalidate our snapshot.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if pool_size == 0:
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                         pool_timeout=pool_timeout, pool_pre_ping=True)


def engine_for(settings, *, pool_timeout: float | None = None) -> Engine:
    """The engine of a process, its pool sized by DB_POOL_SIZE, DB_MAX_OVERFLOW and
    DB_POOL_TIMEOUT (`pool_timeout` overrides the last: batch commands may wait longer)."""
    return make_engine(settings.database_url, pool_size=settings.db_pool_size,
                       max_overflow=settings.db_max_overflow,
                       pool_timeout=settings.db_pool_timeout if pool_timeout is None
                       else pool_timeout)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # Take transaction control from the driver so that "begin" above is honoured.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives a crash of the process; only a power cut can lose
    # the last commits, never corrupt the file.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def driver_execute(conn: Connection, sql: str, params: tuple = ()):
    """Run `sql` straight on the DB-API cursor of `conn` (inside its transaction) and return
    the first row, if any. For the statements that run for every message: SQLAlchemy's
    per-statement machinery would be most of their cost. Placeholders are the driver's."""
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchone() if cur.description else None
    finally:
        cur.close()
