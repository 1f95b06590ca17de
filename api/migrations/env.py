"""Alembic environment: runs on the connection handed over by ``api.core.migrate`` (start-up),
or on ``CITYWATCH_DATABASE_URL`` when the alembic CLI is used."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from api.core.config import Settings
from api.core.db import create_db_engine
from api.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    engine = create_db_engine(Settings().database_url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
