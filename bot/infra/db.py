"""Database engine: SQLite (embedded default, WAL) or PostgreSQL."""
from __future__ import annotations

from collections import namedtuple
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import NullPool


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10,
                pool_timeout: float = 3.0) -> Engine:
    """An engine for `url`. PostgreSQL: a pool of up to `pool_size + max_overflow`
    connections, opened as needed and kept; a caller waits at most `pool_timeout` seconds
    for one, then gets sqlalchemy.exc.TimeoutError (a message then gets the apology).
    `pool_size=0`: no pool."""
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
        # Straight on the driver: once per transaction, and SQLAlchemy's statement
        # machinery would cost more than the BEGIN itself.
        event.listen(engine, "begin", _begin_immediate)
        return engine
    if pool_size == 0:
        return create_engine(url, poolclass=NullPool)
    # No `SELECT 1` before every checkout (a round trip per message): a connection the
    # server dropped (a restart) fails its first statement, which makes SQLAlchemy discard
    # the whole pool, so one message per process gets the apology and the next ones get
    # fresh connections. Idle connections are renewed after half an hour.
    # Every connection opened is kept (`pool_size + max_overflow` of them, opened as they
    # are needed): an overflow connection closed on its return, as QueuePool does, is a
    # new PostgreSQL backend (a fork, authentication, empty caches, no prepared
    # statements) a moment later. Measured: one new connection per ten messages under
    # load, with 20 handler threads on a pool of 10 + 10.
    return create_engine(url, pool_size=pool_size + max_overflow, max_overflow=0,
                         pool_timeout=pool_timeout, pool_pre_ping=False, pool_recycle=1800)


def engine_for(settings, *, pool_timeout: float | None = None) -> Engine:
    """The engine of a process, its pool sized by DB_POOL_SIZE, DB_MAX_OVERFLOW and
    DB_POOL_TIMEOUT (`pool_timeout` overrides the last: batch commands may wait longer)."""
    return make_engine(settings.database_url, pool_size=settings.db_pool_size,
                       max_overflow=settings.db_max_overflow,
                       pool_timeout=settings.db_pool_timeout if pool_timeout is None
                       else pool_timeout)


def _begin_immediate(conn: Connection) -> None:
    conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")


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


class Prepared:
    """A prebuilt Core SELECT for the reads every message makes, compiled once per dialect.

    It runs straight on the DB-API cursor of the caller's connection (inside its
    transaction), with the bound values and the result columns converted by the statement's
    own SQLAlchemy types, exactly as `conn.execute` would: the per-statement machinery of
    `Connection.execute` is most of the cost of these small reads. On PostgreSQL (psycopg 3)
    the statement is prepared on the server on its first run on a connection (`prepare`):
    later runs send only its name and values. Rows are read-only named tuples with the
    statement's column names. Elsewhere (another driver, a connection outside a transaction,
    an empty expanding IN) it is `conn.execute`.
    """

    def __init__(self, stmt) -> None:
        self.stmt = stmt
        self._plans: dict = {}  # dialect class -> (sql, compiled, …) or False

    def _prepare(self, dialect):
        pg = dialect.name == "postgresql" and dialect.driver == "psycopg"
        if dialect.name != "sqlite" and not pg:
            return False
        compiled = self.stmt.compile(dialect=dialect)
        if compiled.positional == pg or compiled.escaped_bind_names:
            return False  # SQLite: qmark; psycopg: pyformat (%(name)s), names as bound
        expanding = frozenset(n for n, b in compiled.binds.items() if b.expanding)
        procs = compiled._bind_processors
        results = tuple((i, p) for i, p in enumerate(
            c[3]._cached_result_processor(dialect, None) for c in compiled._result_columns)
            if p is not None)
        row = namedtuple("Row", [c[0] for c in compiled._result_columns])
        order = tuple(compiled.positiontup) if not pg else tuple(
            n for n in compiled.construct_params({n: None for n in compiled.binds}))
        return compiled, order, expanding, procs, results, row, {}, pg

    def _plan(self, conn: Connection):
        dialect = conn.dialect
        plan = self._plans.get(type(dialect))
        if plan is None:
            plan = self._plans[type(dialect)] = self._prepare(dialect)
        return plan if plan and conn.in_transaction() else False

    @staticmethod
    def _sql(compiled, expanding, params: dict, cache: dict, pg: bool) -> str | None:
        """The SQL text with each expanding IN as many placeholders as it has values (None
        for an empty one: SQLAlchemy renders that as an empty set)."""
        sizes = tuple(len(params[name]) for name in sorted(expanding))
        sql = cache.get(sizes)
        if sql is None:
            if 0 in sizes:
                return None
            sql = compiled.string
            for name, n in zip(sorted(expanding), sizes):
                marks = (", ".join(f"%({name}__{i})s" for i in range(n)) if pg
                         else ", ".join("?" * n))
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", marks)
            cache[sizes] = sql
        return sql

    def _rows(self, conn: Connection, params: dict, one: bool):
        plan = self._plan(conn)
        sql = None
        if plan:
            compiled, order, expanding, procs, results, row, cache, pg = plan
            sql = (self._sql(compiled, expanding, params, cache, pg) if expanding
                   else compiled.string)
        if sql is None:
            result = conn.execute(self.stmt, params)
            return result.first() if one else result.all()
        values = compiled.construct_params(params)
        if pg:
            args = {}
            for name in order:
                p, v = procs.get(name), values[name]
                if name in expanding:
                    for i, x in enumerate(v):
                        args[f"{name}__{i}"] = x if p is None else p(x)
                else:
                    args[name] = v if p is None else p(v)
        else:
            args = []
            for name in order:
                p, v = procs.get(name), values[name]
                if name in expanding:
                    args.extend(v if p is None else map(p, v))
                else:
                    args.append(v if p is None else p(v))
        cur = conn.connection.dbapi_connection.cursor()
        try:
            if pg:
                cur.execute(sql, args, prepare=True)
            else:
                cur.execute(sql, args)
            raw = [cur.fetchone()] if one else cur.fetchall()
        finally:
            cur.close()
        out = []
        for r in raw:
            if r is None:
                continue
            if results:
                r = list(r)
                for i, p in results:
                    r[i] = p(r[i])
            out.append(row._make(r))
        return (out[0] if out else None) if one else out

    def first(self, conn: Connection, params: dict):
        """The first row, or None."""
        return self._rows(conn, params, True)

    def all(self, conn: Connection, params: dict) -> list:
        return self._rows(conn, params, False)


def upsert(db, table):
    """An INSERT into `table` that can take ON CONFLICT, in the dialect of `db` (an Engine,
    a Connection or a Session)."""
    dialect = db.dialect if hasattr(db, "dialect") else db.get_bind().dialect
    return (pg_insert if dialect.name == "postgresql" else sqlite_insert)(table)
