"""Engine and session factories.

SQLite: WAL journal, a busy timeout, foreign keys on, and SQLAlchemy (not the sqlite3 driver)
emits BEGIN, so a transaction can ask for ``BEGIN IMMEDIATE`` (the write lock up front) through
the ``sqlite_begin`` execution option — the ingest does, so two writers never dead-lock on a lock
upgrade. PostgreSQL: psycopg 3 (``postgresql+psycopg://``), pool pre-ping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 15_000
SQLITE_BEGIN_OPTION = "sqlite_begin"
"""Execution option: ``"IMMEDIATE"`` or ``"EXCLUSIVE"`` turns the SQLite BEGIN into that kind."""


def normalise_database_url(url: str) -> str:
    """Map plain ``postgresql://`` / ``postgres://`` URLs onto the psycopg 3 driver."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver; the "begin" hook below emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        kind = conn.get_execution_options().get(SQLITE_BEGIN_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if kind == "IMMEDIATE" else "BEGIN")


def create_db_engine(database_url: str, *, echo: bool = False) -> Engine:
    """Build the engine for ``database_url``; for a SQLite file, create its directory."""
    try:
        url = make_url(normalise_database_url(database_url))
    except ArgumentError as exc:
        raise ConfigError(f"CITYWATCH_DATABASE_URL is not a valid SQLAlchemy URL: {exc}") from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _install_sqlite_hooks(engine)
        return engine
    if backend == "postgresql":
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10)
    raise ConfigError(f"unsupported database backend {backend!r}: use sqlite:/// or postgresql+psycopg://")


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
