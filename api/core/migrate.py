"""Bring the database to the newest Alembic revision (called from the API lifespan).

Several API workers may start at once: on PostgreSQL the upgrade runs under a transaction-level
advisory lock, on SQLite under ``BEGIN IMMEDIATE``, so exactly one of them migrates and the
others find the schema current.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from api.core.db import SQLITE_BEGIN_OPTION, is_sqlite
from api.errors import MigrationError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATION_LOCK = 0x63697479  # "city"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def run_migrations(engine: Engine, revision: str = "head") -> bool:
    """Upgrade to ``revision``; True when this call changed the schema (False: another worker had,
    or it was current). Each worker logs which: several started at once show one ``migrated``."""
    cfg = alembic_config()
    try:
        options = {SQLITE_BEGIN_OPTION: "IMMEDIATE"} if is_sqlite(engine) else {}
        with engine.connect().execution_options(**options) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            after = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise MigrationError(f"database migration to {revision!r} failed: {exc}") from exc
    if before != after:
        log.info("database migrated from revision %s to %s", before or "(empty)", after)
    else:
        log.info("database schema already at revision %s", after)
    return before != after
