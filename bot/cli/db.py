"""`db upgrade`, and the step every command takes first: migrate the database and check it
takes writes, or stop with one line naming the setting."""
from __future__ import annotations

import typer

from bot.cli.common import fail, settings
from bot.infra.config import ROOT, Settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


def upgrade_database(s: Settings) -> tuple[str | None, str]:
    """Apply every migration; return the revision before and after."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from bot.infra.db import make_engine

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "models" / "migrations"))
    cfg.set_main_option("sqlalchemy.url", s.database_url.replace("%", "%%"))

    def current() -> str | None:
        engine = make_engine(s.database_url, pool_size=0)  # creates the SQLite file's folder
        try:
            with engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        finally:
            engine.dispose()

    before = current()
    engine = make_engine(s.database_url, pool_size=0)
    try:
        with engine.connect() as conn:  # the bot's engine (SQLite's pragmas, BEGIN IMMEDIATE)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
    finally:
        engine.dispose()
    return before, current()


def prepare_database(s: Settings, *, redis: bool = False) -> tuple[str | None, str]:
    """Migrate the database and check that it takes writes (and that Redis answers, with
    `redis`): a failure stops the command with one line naming the setting, never a
    traceback. Returns the schema revision before and after."""
    from sqlalchemy import make_url

    from bot.infra import health
    from bot.infra.db import make_engine

    where = make_url(s.database_url).render_as_string(hide_password=True)
    try:
        revisions = upgrade_database(s)
    except Exception as exc:
        fail("DATABASE_URL", f"cannot use the database {where}: {health.one_line(exc)}")
    engine = make_engine(s.database_url, pool_size=0) if not s.is_sqlite else \
        make_engine(s.database_url)
    if problem := _probe(engine, health.check_writable, engine.dispose):
        fail("DATABASE_URL", f"the database {where} is {problem}")
    if redis and s.redis_url:
        client = health.redis_client(s.redis_url)
        if problem := _probe(client, health.check_redis, client.close):
            fail("REDIS_URL", f"Redis at {make_url_redis(s.redis_url)} is {problem}")
    return revisions


def _probe(resource, check, close) -> str | None:
    """`check(resource)`'s problem (None when fine), the resource closed after."""
    try:
        return check(resource)
    finally:
        close()


def make_url_redis(url: str) -> str:
    """A Redis URL without its password."""
    import re

    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def open_session(s: Settings):
    """A session on the migrated database (objects stay readable after the commit)."""
    from sqlmodel import Session

    from bot.infra.db import engine_for

    prepare_database(s)
    return Session(engine_for(s, pool_timeout=30), expire_on_commit=False)


@app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (creates the SQLite file under data/ on first run)."""
    s = settings()
    before, after = prepare_database(s)
    if before == after:
        typer.echo(f"database is up to date (revision {after})")
    elif before is None:
        typer.echo(f"created the database schema (revision {after})")
    else:
        typer.echo(f"upgraded the database from revision {before} to {after}")
