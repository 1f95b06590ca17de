"""The API's ``/healthz``, ``/readyz`` and ``GET /metrics`` (api/routes/health.py, api/routes/metrics.py,
api/services/metrics.py): who may read the metrics from where, the route templates the request histogram
is labelled with, the cases gauge (one GROUP BY), the ingest counters and the MQTT gauges."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from api.core.db import create_db_engine, create_session_factory
from api.ingest.sample import sample_event
from api.services.metrics import ingest_families
from tests.api_support import auth, ingest_sample

LOOPBACK = ("127.0.0.1", 40000)
REMOTE = ("10.1.2.3", 40000)
LABELS = {"illegal_parking": "vehicle", "street_vending": "vendor", "unclean_road": "litter"}


@pytest.fixture
def local(app: FastAPI) -> Iterator[TestClient]:
    """A client on loopback (the shared ``client`` fixture's address is ``testclient``: not loopback)."""
    with TestClient(app, client=LOOPBACK) as c:
        yield c


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def test_healthz_is_alive(client: TestClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})


def broken_database(tmp_path: Path) -> Any:
    """Sessions on a "database file" that is a folder: every statement fails."""
    folder = tmp_path / "not-a-database"
    folder.mkdir()
    return create_session_factory(create_db_engine(f"sqlite:///{folder}"))


@pytest.mark.parametrize(
    ("database", "ingest", "status", "reasons"),
    [
        ("ok", None, 200, []),
        ("ok", True, 200, []),
        ("ok", False, 503, ["MQTT ingest is not connected"]),
        ("broken", None, 503, ["the database does not answer"]),
        ("broken", False, 503, ["the database does not answer", "MQTT ingest is not connected"]),
    ],
)
def test_readyz(
    app: FastAPI,
    client: TestClient,
    tmp_path: Path,
    database: str,
    ingest: bool | None,
    status: int,
    reasons: list[str],
) -> None:
    if database == "broken":
        app.state.session_factory = broken_database(tmp_path)
    app.state.ingest = None if ingest is None else SimpleNamespace(connected=ingest)
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == status
    assert body["ready"] is (status == 200)
    assert len(body["reasons"]) == len(reasons)
    for got, want in zip(body["reasons"], reasons, strict=True):
        assert want in got


def test_the_old_health_still_answers(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("address", "who", "status"),
    [
        (LOOPBACK, None, 200),
        (("::1", 40000), None, 200),
        (REMOTE, None, 401),
        (REMOTE, "admin", 200),
        (REMOTE, "reviewer", 200),
        (REMOTE, "dispatcher", 200),
        (REMOTE, "unit", 200),
        (REMOTE, "public", 403),
        (REMOTE, "detector", 403),
        (LOOPBACK, "public", 403),  # a credential, where given, must be staff's
    ],
)
def test_who_may_read_the_metrics(
    app: FastAPI, address: tuple[str, int], who: str | None, status: int
) -> None:
    with TestClient(app, client=address) as c:
        response = c.get("/metrics", headers=auth(who) if who else {})
    assert response.status_code == status, response.text
    if status == 200:
        assert response.headers["content-type"].startswith("text/plain")
        assert "citywatch_api_request_seconds" in response.text


@pytest.mark.parametrize(
    ("method", "path", "who", "route", "status"),
    [
        ("GET", "/healthz", None, "/healthz", "200"),
        ("GET", "/cases/17", "reviewer", "/cases/{case_id}", "404"),
        ("GET", "/cases/18", None, "/cases/{case_id}", "401"),
        ("GET", "/cases/17/evidence", "reviewer", "/cases/{case_id}/evidence", "404"),
        ("POST", "/cases/17/dispose", None, "/cases/{case_id}/dispose", "401"),  # refused by the guard
        ("DELETE", "/healthz", None, "/healthz", "405"),
        ("GET", "/no/such/path/4711", None, "unmatched", "404"),
    ],
)
def test_request_latency_is_labelled_by_the_route_template(
    local: TestClient, method: str, path: str, who: str | None, route: str, status: str
) -> None:
    local.request(method, path, headers=auth(who) if who else {})
    text = local.get("/metrics").text
    count = value(text, "citywatch_api_request_seconds_count", method=method, route=route, status=status)
    assert count == 1
    if path != route:  # never the raw path
        assert path not in {v for _, labels in samples(text) for _, v in labels}
    assert "4711" not in text and "/cases/17" not in text


@pytest.mark.parametrize(
    ("cases", "expected"),
    [
        ([], {}),
        (
            [
                ("illegal_parking", "candidate"),
                ("illegal_parking", "candidate"),
                ("unclean_road", "rejected"),
            ],
            {
                ("candidate", "illegal_parking"): 2,
                ("rejected", "unclean_road"): 1,
                ("closed", "illegal_parking"): 0,  # every status of a rule present, 0 included
                ("candidate", "unclean_road"): 0,
            },
        ),
        (
            [("street_vending", "registered"), ("street_vending", "closed"), ("street_vending", "closed")],
            {("registered", "street_vending"): 1, ("closed", "street_vending"): 2},
        ),
    ],
)
def test_cases_by_status_and_rule(
    app: FastAPI, local: TestClient, cases: list[tuple[str, str]], expected: dict[tuple[str, str], int]
) -> None:
    from api.models import Case

    for rule, status in cases:
        case_id = ingest_sample(app, sample_event(rule=rule, label=LABELS[rule]))
        with app.state.session_factory() as session:
            session.get(Case, case_id).status = status
            session.commit()
    text = local.get("/metrics").text
    assert value(text, "citywatch_api_database_up") == 1
    for (status, rule), n in expected.items():
        assert value(text, "citywatch_api_cases", status=status, rule=rule) == n
    rules = {dict(k[1]).get("rule") for k in samples(text) if k[0] == "citywatch_api_cases"}
    assert rules == {rule for rule, _ in cases}


def test_a_database_that_does_not_answer_is_database_up_0(
    app: FastAPI, local: TestClient, tmp_path: Path
) -> None:
    app.state.session_factory = broken_database(tmp_path)
    text = local.get("/metrics").text
    assert value(text, "citywatch_api_database_up") == 0
    assert not [k for k in samples(text) if k[0] == "citywatch_api_cases"]


def ingest_stats(created: int = 0, dead: int = 0, received: int = 0, queued: int = 0) -> dict[str, Any]:
    counts = {"created": created, "updated": 1, "stale": 0, "duplicate": 2, "received": received}
    return {"connected": True, "counts": counts, "dead_letters": dead, "queued": queued}


@pytest.mark.parametrize(
    ("stats", "name", "labels", "expected"),
    [
        (ingest_stats(created=5), "citywatch_api_ingest_events_total", {"outcome": "created"}, 5),
        (ingest_stats(), "citywatch_api_ingest_events_total", {"outcome": "duplicate"}, 2),
        (ingest_stats(), "citywatch_api_ingest_events_total", {"outcome": "dead_letter"}, None),
        (ingest_stats(dead=3), "citywatch_api_ingest_dead_letters_total", {}, 3),
        (ingest_stats(received=11), "citywatch_api_ingest_received_total", {}, 11),
        (ingest_stats(queued=4), "citywatch_api_ingest_queued", {}, 4),
        ({}, "citywatch_api_ingest_dead_letters_total", {}, 0),
    ],
)
def test_ingest_families(
    stats: dict[str, Any], name: str, labels: dict[str, str], expected: float | None
) -> None:
    registry = CollectorRegistry(auto_describe=False)

    class Fixed:
        def collect(self) -> Any:
            return ingest_families(stats)

    registry.register(Fixed())  # type: ignore[arg-type]
    assert registry.get_sample_value(name, labels) == expected


class FakeIngest:
    def __init__(self, connected: bool) -> None:
        self.connected = connected

    def stats(self) -> dict[str, Any]:
        return {**ingest_stats(created=7), "connected": self.connected}


@pytest.mark.parametrize(
    ("ingest", "recheck", "expected"),
    [
        (None, None, {}),
        (True, None, {"ingest": 1}),
        (False, True, {"ingest": 0, "recheck": 1}),
    ],
)
def test_mqtt_connected_and_ingest_counters_from_the_running_parts(
    app: FastAPI, local: TestClient, ingest: bool | None, recheck: bool | None, expected: dict[str, int]
) -> None:
    app.state.ingest = None if ingest is None else FakeIngest(ingest)
    app.state.recheck_mqtt = None if recheck is None else SimpleNamespace(connected=recheck)
    text = local.get("/metrics").text
    got = {
        dict(k[1])["client"]: v for k, v in samples(text).items() if k[0] == "citywatch_api_mqtt_connected"
    }
    assert got == expected
    created = value(text, "citywatch_api_ingest_events_total", outcome="created")
    assert created == (7 if ingest is not None else None)
