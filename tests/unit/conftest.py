"""The case API's test app, defined once for the tests/unit/test_api_*.py modules.

``app`` is the real app (``api.main.create_app``) on ``make_settings`` (test keys, ingest off, evidence
under ``tmp_path``) and ``client`` a ``TestClient`` that runs its lifespan. A module changes them by
overriding a small fixture, never by copying these:

- ``db_url``: a SQLite file by default; a module that imports ``db_url`` and ``module_pg`` from
  tests.api_support runs every test on SQLite and on PostgreSQL instead;
- ``clock``: a ``FakeClock`` the test moves; return ``api.models.utcnow`` for the real clock;
- ``api_settings_overrides``: the settings the module sets beyond ``make_settings``' defaults.

The API modules are imported inside the fixtures, so the unit tests that never use them do not load them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.api_support import FakeClock, make_settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The app's database: a new SQLite file (tests.api_support.db_url adds PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'api.db'}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api_settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def app(
    db_url: str, tmp_path: Path, clock: Callable[[], datetime], api_settings_overrides: dict[str, Any]
) -> FastAPI:
    from api.main import create_app

    return create_app(make_settings(db_url, tmp_path, **api_settings_overrides), clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c
