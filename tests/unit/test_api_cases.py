"""REST: GET /cases (filters, pages, order, 422s), /cases/{id}, evidence, /health, /docs.

The app runs its real lifespan (migrations; SQLite and PostgreSQL) with the MQTT ingest off and
anonymous reads turned on (CITYWATCH_ANONYMOUS_READ: reads need no credential); cases are made
through ``ingest_event`` so the rows are exactly what the ingest writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.core.config import Settings
from api.ingest.sample import encode, sample_event, sample_jpeg
from api.ingest.service import IngestOutcome, ingest_event
from api.main import create_app
from api.models import utcnow
from tests.api_support import TEST_KEYS, db_url, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures: every test on SQLite and PostgreSQL

PREFIX = "citywatch/v1"


@pytest.fixture
def api_settings_overrides() -> dict[str, Any]:
    """Anonymous reads turned on, and no fixed token secret (a random one per app)."""
    return {"anonymous_read": True, "token_secret": None}


@pytest.fixture
def clock() -> Callable[[], datetime]:
    return utcnow  # the real clock


def add(app: FastAPI, **kwargs: Any) -> int:
    body = sample_event(**kwargs)
    with app.state.session_factory() as session:
        result = ingest_event(
            session, f"{PREFIX}/violations/{body['stream']}", encode(body), app.state.evidence_store
        )
    assert result.outcome is IngestOutcome.created, result.reason
    assert result.case_id is not None
    return result.case_id


@pytest.fixture
def seeded(app: FastAPI, client: TestClient) -> dict[str, int]:
    return {
        "a": add(
            app, stream="cam-001", first_seen="2026-01-01T08:00:00+00:00", last_seen="2026-01-01T09:00:00Z"
        ),
        "b": add(
            app, stream="cam-002", first_seen="2026-01-02T08:00:00+00:00", last_seen="2026-01-02T09:00:00Z"
        ),
        "c": add(
            app,
            stream="cam-001",
            rule="street_vending",
            label="vendor",
            first_seen="2026-01-03T16:00:00+08:00",
            last_seen="2026-01-03T09:00:00Z",
            location={"grid": "G-77"},
        ),
    }


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["data"]]


def test_list_is_newest_first_with_count(client: TestClient, seeded: dict[str, int]) -> None:
    response = client.get("/cases")
    assert ids(response) == [seeded["c"], seeded["b"], seeded["a"]]
    assert response.json()["count"] == 3


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("stream=cam-001", ["c", "a"]),
        ("rule=street_vending", ["c"]),
        ("grid=G-77", ["c"]),
        ("grid=G-01", ["b", "a"]),
        ("status=candidate", ["c", "b", "a"]),
        ("status=closed", []),
        ("since=2026-01-02T08:00:00Z", ["c", "b"]),
        ("until=2026-01-02T08:00:00Z", ["a"]),
        ("since=2026-01-02T16:00:00%2B08:00&until=2026-01-03T08:00:01", ["b", "c"][::-1]),
        ("since=2026-01-01&until=2026-01-02", ["a"]),
        ("stream=cam-002&rule=street_vending", []),
    ],
)
def test_filters(client: TestClient, seeded: dict[str, int], query: str, expected: list[str]) -> None:
    response = client.get(f"/cases?{query}")
    assert ids(response) == [seeded[k] for k in expected]
    assert response.json()["count"] == len(expected)


def test_pages(client: TestClient, seeded: dict[str, int]) -> None:
    pages = [client.get(f"/cases?page={p}&page_size=2").json() for p in (1, 2, 3)]
    assert [[r["id"] for r in p["data"]] for p in pages] == [[seeded["c"], seeded["b"]], [seeded["a"]], []]
    assert {p["count"] for p in pages} == {3}


def test_same_first_seen_orders_by_id(app: FastAPI, client: TestClient) -> None:
    made = [add(app, first_seen="2026-02-01T00:00:00Z", last_seen="2026-02-01T00:10:00Z") for _ in range(3)]
    assert ids(client.get("/cases")) == sorted(made)


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("page_size=501", "page_size", "less than or equal to 500"),
        ("page_size=0", "page_size", "greater than or equal to 1"),
        ("page=0", "page", "greater than or equal to 1"),
        ("page=x", "page", "valid integer"),
        ("status=open-ish", "status", "candidate"),
        ("rule=speeding", "rule", "illegal_parking"),
        ("since=yesterday", "since", "datetime"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", None, "until must be later than since"),
        ("stream=", "stream", "at least 1 character"),
        ("colour=red", "colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_query_is_422_with_a_clear_message(
    client: TestClient, query: str, field: str | None, words: str
) -> None:
    response = client.get(f"/cases?{query}")
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(words in str(e.get("msg", "")) + str(e.get("ctx", "")) for e in errors), errors
    if field is not None:
        assert any(e["loc"][-1] == field for e in errors), errors


def test_one_case(client: TestClient, seeded: dict[str, int]) -> None:
    body = client.get(f"/cases/{seeded['c']}").json()
    assert body["rule"] == "street_vending"
    assert body["first_seen"] in ("2026-01-03T08:00:00Z", "2026-01-03T08:00:00+00:00")
    assert body["status"] == "candidate" and body["violation_state"] == "open"
    assert body["evidence_url"] == f"/cases/{seeded['c']}/evidence"


@pytest.mark.parametrize(("path", "code"), [("/cases/999", 404), ("/cases/0", 422), ("/cases/abc", 422)])
def test_missing_or_bad_case_id(client: TestClient, path: str, code: int) -> None:
    response = client.get(path)
    assert response.status_code == code
    if code == 404:
        assert response.json() == {"detail": "case 999 not found"}


def test_case_id_beyond_integer_range_is_422_not_500(client: TestClient) -> None:
    assert client.get(f"/cases/{2**40}").status_code == 422


def test_evidence_download(app: FastAPI, client: TestClient) -> None:
    jpeg = sample_jpeg("evidence-download")
    case_id = add(app, jpeg=jpeg)
    response = client.get(f"/cases/{case_id}/evidence")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(jpeg).hexdigest()
    assert response.headers["etag"] == f'"{hashlib.sha256(jpeg).hexdigest()}"'


def test_evidence_missing(app: FastAPI, client: TestClient) -> None:
    no_image = add(app, jpeg=None)
    response = client.get(f"/cases/{no_image}/evidence")
    assert response.status_code == 404
    assert "has no evidence image" in response.json()["detail"]
    assert client.get("/cases/999/evidence").status_code == 404


def test_evidence_file_gone_is_404(app: FastAPI, client: TestClient) -> None:
    jpeg = sample_jpeg("to-be-deleted")
    case_id = add(app, jpeg=jpeg)
    app.state.evidence_store.path_for(hashlib.sha256(jpeg).hexdigest()).unlink()
    response = client.get(f"/cases/{case_id}/evidence")
    assert response.status_code == 404
    assert "not in the evidence store" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/cases/..%2F..%2Fetc%2Fpasswd/evidence", "/cases/1%2F..%2F2/evidence"])
def test_no_path_from_the_request_reaches_the_store(client: TestClient, path: str) -> None:
    assert client.get(path).status_code in (404, 422)


def test_health_without_ingest(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["db"]["ok"] is True
    assert body["ingest"] == {"enabled": False}


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/cases", "/cases/{case_id}", "/cases/{case_id}/evidence", "/health"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/cases"]["get"]["parameters"]}
    assert {"status", "rule", "stream", "grid", "since", "until", "page", "page_size"} <= params


@pytest.mark.parametrize(("limit", "count", "exact"), [(0, 3, True), (3, 3, True), (2, 2, False)])
def test_count_is_exact_up_to_the_limit(tmp_path: Path, limit: int, count: int, exact: bool) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        evidence_dir=tmp_path / "ev",
        ingest_enabled=False,
        cases_count_limit=limit,
        api_keys=list(TEST_KEYS.values()),
        anonymous_read=True,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        for _ in range(3):
            add(app)
        body = client.get("/cases", params={"page_size": 1}).json()
        assert (body["count"], body["count_exact"], len(body["data"])) == (count, exact, 1)
