"""Helpers for the case API's tests: test credentials, a clock that tests move, databases on SQLite or
PostgreSQL, and settings that use them. Test support only (it imports pytest), so it lives in the tests
tree, not in the shipped ``api`` package.

The fixtures ``db_url`` (every test on both backends: a new SQLite file, or this module's
PostgreSQL database emptied) and ``module_pg`` are imported into a test module to be used there;
``module_pg`` relies on the suite's ``pg_url`` fixture (tests/conftest.py) to skip without PostgreSQL.
In tests/unit, importing them replaces the SQLite-only ``db_url`` of tests/unit/conftest.py, so the
shared ``app`` and ``client`` fixtures run that module's tests on both backends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from api.core.config import Settings

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

TEST_KEYS: dict[str, dict[str, Any]] = {
    "admin": {"name": "t-admin", "role": "admin"},
    "reviewer": {"name": "t-reviewer", "role": "reviewer"},
    "dispatcher": {"name": "t-dispatcher", "role": "dispatcher"},
    "unit": {"name": "t-unit-hgc", "role": "field_unit", "unit": "hgc-squad"},
    "other_unit": {"name": "t-unit-xcq", "role": "field_unit", "unit": "xcq-squad"},
    "detector": {"name": "t-detector", "role": "detector"},
    "public": {"name": "t-public", "role": "public"},
}
for _who, _entry in TEST_KEYS.items():
    _entry["key"] = f"test-{_who}-key-{'0' * 16}"


def key_of(who: str) -> str:
    return str(TEST_KEYS[who]["key"])


def auth(who: str) -> dict[str, str]:
    """Headers that authenticate as ``who`` (a key of ``TEST_KEYS``)."""
    return {"X-API-Key": key_of(who)}


@dataclass
class FakeClock:
    """``now`` moves only when a test says so."""

    now: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 1, 0, tzinfo=UTC))  # Mon 09:00 +08

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "evidence_dir": tmp_path / "evidence",
        "ingest_enabled": False,
        "api_keys": list(TEST_KEYS.values()),
        "token_secret": "test-token-secret",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'api-{uuid.uuid4().hex[:6]}.db'}"
        return
    import psycopg
    from psycopg import sql

    admin_url = os.environ.get("CITYWATCH_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
    name = f"citywatch_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            parts = urlsplit(admin_url)
            yield urlunsplit(("postgresql+psycopg", parts.netloc, f"/{name}", "", ""))
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


_TABLES = ("recheck_requests", "case_events", "dead_letters", "cases")


def empty_database(url: str) -> None:
    """Delete every row (PostgreSQL: TRUNCATE ... RESTART IDENTITY) and keep the schema."""
    from sqlalchemy import inspect, text

    from api.core.db import create_db_engine

    engine = create_db_engine(url)
    try:
        present = [t for t in _TABLES if inspect(engine).has_table(t)]
        if not present:
            return
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"TRUNCATE {', '.join(present)} RESTART IDENTITY CASCADE"))
            else:
                for table in present:
                    conn.execute(text(f"DELETE FROM {table}"))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def module_pg(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One PostgreSQL database for the test module (``pg_url`` skips when none answers)."""
    with fresh_database("postgres", tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("module_pg")
        empty_database(url)
        return url
    return f"sqlite:///{tmp_path / 'api.db'}"


@contextmanager
def migrated_engine(url: str) -> Iterator[Any]:
    """An engine on ``url`` with the Alembic migrations applied, disposed afterwards."""
    from api.core.db import create_db_engine
    from api.core.migrate import run_migrations

    engine = create_db_engine(url)
    run_migrations(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def ingest_sample(app: Any, body: dict[str, Any], prefix: str = "citywatch/v1") -> int:
    """Ingest one detector event (``api.ingest.sample.sample_event``) into a test app's database the way
    the MQTT consumer does; returns the id of the case it created (asserting it created one)."""
    from api.ingest.sample import encode
    from api.ingest.service import IngestOutcome, ingest_event

    with app.state.session_factory() as session:
        result = ingest_event(
            session,
            f"{prefix}/violations/{body['stream']}",
            encode(body),
            app.state.evidence_store,
            routing=app.state.desk.routing,
        )
    assert result.outcome is IngestOutcome.created and result.case_id is not None, result
    return int(result.case_id)
