"""Duplicates are merged into an open case of the same rule nearby; a recurrence after closing is
linked to the earlier case (routing file ``dedup``: illegal_parking 15 m / 4 h / 30 days,
unclean_road 20 m / 24 h / 14 days). On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.ingest.sample import sample_event, sample_jpeg
from api.services.dedup import haversine_m, iou
from tests.api_support import auth, db_url, ingest_sample, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures

PREFIX = "citywatch/v1"
LAT, LON = 30.6381, 114.3902
M_PER_DEG_LAT = 111_195.0


def ingest(app: FastAPI, **kwargs: Any) -> int:
    kwargs.setdefault("location", {"lat": LAT, "lon": LON, "grid": "红钢城-03"})
    return ingest_sample(app, sample_event(**kwargs))


def get(client: TestClient, cid: int) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/cases/{cid}", headers=auth("admin")).json()
    return body


def walk(client: TestClient, cid: int, *steps: str) -> None:
    who = {
        "register": "reviewer",
        "dispatch": "dispatcher",
        "accept": "admin",
        "dispose": "admin",
        "close": "reviewer",
    }
    for step in steps:
        assert client.post(f"/cases/{cid}/{step}", headers=auth(who[step])).status_code == 200, step


def report(client: TestClient, lat: float, rule: str = "unclean_road") -> dict[str, Any]:
    response = client.post(
        "/reports",
        headers=auth("public"),
        files={"photo": ("p.jpg", sample_jpeg(), "image/jpeg")},
        data={"rule": rule, "lat": str(lat), "lon": str(LON), "description": "litter"},
    )
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


def test_same_view_while_open_is_merged(client: TestClient, app: FastAPI) -> None:
    first = ingest(app, stream="cam-d1")
    walk(client, first, "register")
    again = ingest(
        app,
        stream="cam-d1",
        bbox=[0.12, 0.21, 0.31, 0.41],
        first_seen="2026-01-01T10:00:00+00:00",
        last_seen="2026-01-01T10:10:00+00:00",
    )
    case = get(client, again)
    assert (case["status"], case["merged_into_id"], case["resolution"]) == ("merged", first, "duplicate")
    assert get(client, first)["duplicate_count"] == 1
    events = client.get(f"/cases/{again}/events", headers=auth("admin")).json()["data"]
    assert [(e["kind"], e["role"], e["to_status"]) for e in events] == [
        ("opened", "detector", "candidate"),
        ("merge", "system", "merged"),
    ]
    assert events[1]["data"]["into"] == first
    target_events = client.get(f"/cases/{first}/events", headers=auth("admin")).json()["data"]
    assert target_events[-1]["kind"] == "duplicate" and target_events[-1]["data"] == {"case": again}


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"bbox": [0.6, 0.6, 0.8, 0.8]}, "another place in the same view"),
        ({"zone": "no-parking-2"}, "another zone"),
        ({"rule": "street_vending", "label": "vendor"}, "another rule"),
        (
            {"first_seen": "2026-01-01T12:06:00+00:00", "last_seen": "2026-01-01T12:30:00+00:00"},
            "over 4 h later",
        ),
    ],
)
def test_not_a_duplicate(client: TestClient, app: FastAPI, overrides: dict[str, Any], why: str) -> None:
    first = ingest(app, stream="cam-d2")
    walk(client, first, "register")
    other = ingest(app, stream="cam-d2", **overrides)
    assert get(client, other)["status"] == "candidate", why


def test_candidates_and_ended_cases_take_no_duplicates(client: TestClient, app: FastAPI) -> None:
    candidate = ingest(app, stream="cam-d3")
    assert get(client, ingest(app, stream="cam-d3"))["status"] == "candidate"  # the first is not confirmed
    assert (
        client.post(
            f"/cases/{candidate}/reject", headers=auth("reviewer"), json={"reason": "false_positive"}
        ).status_code
        == 200
    )
    assert get(client, ingest(app, stream="cam-d3"))["status"] == "candidate"


def test_citizen_reports_merge_by_distance(client: TestClient, app: FastAPI) -> None:
    open_case = report(client, LAT)["id"]
    walk(client, open_case, "register")
    near = report(client, LAT + 10 / M_PER_DEG_LAT)  # 10 m north
    far = report(client, LAT + 40 / M_PER_DEG_LAT)  # 40 m north
    assert (near["status"], near["merged_into_id"]) == ("merged", open_case)
    assert far["status"] == "candidate"
    camera = ingest(
        app,
        stream="cam-d4",
        rule="unclean_road",
        label="litter",
        location={"lat": LAT + 5 / M_PER_DEG_LAT, "lon": LON},
        first_seen="2026-03-02T01:30:00+00:00",
        last_seen="2026-03-02T01:40:00+00:00",
    )
    assert get(client, camera)["merged_into_id"] == open_case  # a camera 5 m away sees the same litter


def test_a_recurrence_after_closing_is_linked(client: TestClient, app: FastAPI) -> None:
    first = ingest(app, stream="cam-d5")
    walk(client, first, "register", "dispatch", "accept", "dispose", "close")
    later = ingest(
        app, stream="cam-d5", first_seen="2026-01-20T08:00:00+00:00", last_seen="2026-01-20T08:10:00+00:00"
    )
    case = get(client, later)
    assert (case["status"], case["recurrence_of_id"]) == ("candidate", first)
    events = client.get(f"/cases/{later}/events", headers=auth("admin")).json()["data"]
    assert events[-1]["kind"] == "recurrence" and events[-1]["data"]["of"] == first


def test_geometry() -> None:
    assert haversine_m(LAT, LON, LAT + 10 / M_PER_DEG_LAT, LON) == pytest.approx(10, abs=0.05)
    assert haversine_m(0, 0, 0, 1) == pytest.approx(111_195, rel=1e-3)
    assert iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    assert iou([0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]) == 0.0
    assert iou([0, 0, 0.5, 1], [0.25, 0, 0.75, 1]) == pytest.approx(1 / 3)
