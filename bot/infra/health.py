"""Readiness checks, shared by `GET /readyz` and the CLI's start-up checks. Each returns
None when all is well, or one line saying what is wrong (never a password or a secret)."""
from __future__ import annotations

import re
from functools import lru_cache

from sqlalchemy import Engine, text

from bot.infra import redact
from bot.infra.config import ROOT

MIGRATIONS = ROOT / "models" / "migrations"


def one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception as one short line: the driver's message when there is one, without
    SQLAlchemy's "[SQL: …]" and "(Background …)" trailers."""
    inner = getattr(exc, "orig", None) or exc
    message = str(inner) or type(inner).__name__
    message = message.split("\n[SQL:")[0].split("\n(Background")[0]
    message = re.sub(r"\s+", " ", message).strip()
    message = re.sub(r"://([^:/@\s]+):[^@\s]+@", r"://\1:***@", message)  # URL passwords
    if len(message) > limit:
        message = message[:limit - 1] + "…"
    return redact.redact(message)


@lru_cache
def migration_heads() -> frozenset[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return frozenset(ScriptDirectory.from_config(cfg).get_heads())


def check_database(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.rollback()
    except Exception as exc:
        return f"unreachable ({one_line(exc)})"
    return None


def check_migrations(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
            conn.rollback()
    except Exception as exc:
        return f"cannot read the schema version ({one_line(exc)})"
    heads = migration_heads()
    if current != heads:
        return (f"at {', '.join(sorted(current)) or 'no revision'}, not at head "
                f"{', '.join(sorted(heads))}: run `python main.py db upgrade`")
    return None


def check_writable(engine: Engine) -> str | None:
    """A write the database must accept (undone at once): a read-only SQLite file, or a
    PostgreSQL standby or read-only role, fails here rather than on the first message."""
    try:
        with engine.connect() as conn, conn.begin() as txn:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            txn.rollback()
    except Exception as exc:
        return f"not writable ({one_line(exc)})"
    return None


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def check_redis(client) -> str | None:
    try:
        client.ping()
    except Exception as exc:
        return f"unreachable ({one_line(exc)})"
    return None


def readiness(engine: Engine, redis=None) -> dict[str, str]:
    """{check: "ok" | "not configured" | what failed}, for /readyz."""
    checks: dict[str, str] = {}
    problem = check_database(engine)
    checks["database"] = problem or "ok"
    checks["migrations"] = (check_migrations(engine) or "ok") if problem is None else \
        "not checked (database unreachable)"
    checks["redis"] = "not configured" if redis is None else (check_redis(redis) or "ok")
    return checks
