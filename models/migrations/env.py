"""Alembic environment. The bot (`main.py db upgrade`, bot/cli/db.py) hands in its own
connection (`config.attributes["connection"]`); run by hand, `alembic upgrade head` takes
the URL from alembic.ini's `sqlalchemy.url` or DATABASE_URL. The data layer imports nothing
of the platform above it (bot.infra): the arrow runs downhill."""
import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

import models  # noqa: F401  (registers the tables)

config = context.config
url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL", "")

target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    if not url:
        raise SystemExit("alembic: set sqlalchemy.url or DATABASE_URL")
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
