"""Alembic environment: the URL comes from the bot's settings (or the caller's config)."""
from alembic import context

from sqlmodel import SQLModel

import models  # noqa: F401  (registers the tables)
from bot.infra.db import make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    from bot.infra.config import get_settings

    url = get_settings().database_url

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
    engine = make_engine(url, pool_size=0) if not url.startswith("sqlite") else make_engine(url)
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
