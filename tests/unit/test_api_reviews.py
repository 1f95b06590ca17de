"""The data team's loop on the case API (issue 14), on SQLite and PostgreSQL: ``POST /cases/{id}/correct``
(roles, strict bodies, the frame's bounds, the history event, reports and duplicates refused) and
``GET /reviews`` (roles, the verdict of each kind of judgement, keyset pages that neither split nor
repeat cases judged at the same instant). The pure parts as tables: test_api_reviews_tables.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.ingest.sample import sample_event, sample_jpeg
from tests.api_support import FakeClock, auth, db_url, ingest_sample, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures

W, H = 1280, 720
BOX = [100.0, 200.0, 300.0, 400.0]
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # the FakeClock's start


def frame_jpeg(width: int = W, height: int = H, tag: int = 0) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), tag % 256, np.uint8))
    assert ok
    return bytes(buf.tobytes())


_made = iter(range(10_000))


def camera_case(app: FastAPI, *, jpeg: bytes | None = None) -> int:
    """A candidate camera case on its own stream and place (no dedup), its evidence a 1280x720 frame."""
    n = next(_made)
    location = {"lat": 20.0 + n * 0.1, "lon": 114.0, "grid": f"G-{n}", "road": "R", "address": "A"}
    body = sample_event(
        stream=f"cam-r{n}", location=location, jpeg=jpeg if jpeg is not None else frame_jpeg(tag=n)
    )
    return ingest_sample(app, body)


def citizen_case(client: TestClient) -> int:
    response = client.post(
        "/reports",
        headers=auth("public"),
        files={"photo": ("p.jpg", sample_jpeg("c"), "image/jpeg")},
        data={"rule": "unclean_road", "lat": "30.64", "lon": "114.39", "description": "litter"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def post(client: TestClient, who: str, case_id: int, action: str, body: Any = None) -> dict[str, Any]:
    response = client.post(f"/cases/{case_id}/{action}", headers=auth(who), json=body)
    assert response.status_code == 200, f"{who} {action}: {response.status_code} {response.text}"
    out: dict[str, Any] = response.json()
    return out


def reviews(client: TestClient, who: str = "reviewer", **params: Any) -> dict[str, Any]:
    response = client.get("/reviews", headers=auth(who), params=params)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


# -- POST /cases/{id}/correct --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("admin", 200),
        ("reviewer", 200),
        ("dispatcher", 200),
        ("unit", 403),
        ("detector", 403),
        ("public", 403),
        (None, 401),
    ],
)
def test_who_may_correct(client: TestClient, app: FastAPI, who: str | None, code: int) -> None:
    cid = camera_case(app)
    headers = auth(who) if who else {}
    response = client.post(f"/cases/{cid}/correct", headers=headers, json={"label": "vendor", "bbox": BOX})
    assert response.status_code == code, response.text
    case = client.get(f"/cases/{cid}", headers=auth("admin")).json()
    assert (case["corrected_label"] is not None) is (code == 200)


def test_a_correction_keeps_the_detection_and_is_in_the_history(
    client: TestClient, app: FastAPI, clock: FakeClock
) -> None:
    cid = camera_case(app)
    clock.advance(minutes=5)
    out = post(client, "reviewer", cid, "correct", {"label": "vendor", "bbox": BOX})
    case = out["case"]
    assert (case["label"], case["bbox"], case["status"]) == ("vehicle", [0.1, 0.2, 0.3, 0.4], "candidate")
    assert (case["corrected_label"], case["corrected_bbox"]) == ("vendor", BOX)
    assert case["corrected_at"] == case["reviewed_at"] == "2026-03-02T01:05:00Z"
    assert case["corrected_by"] == case["reviewed_by"] == "reviewer:t-reviewer"
    (event,) = out["events"]
    assert (event["kind"], event["from_status"], event["to_status"]) == (
        "corrected",
        "candidate",
        "candidate",
    )
    # the detector's box in pixels of the 1280x720 evidence frame
    assert event["note"] == "label vehicle → vendor; box [128, 144, 384, 288] px → [100, 200, 300, 400] px"
    assert event["data"] == {
        "from": {"label": "vehicle", "bbox": [128.0, 144.0, 384.0, 288.0], "unit": "px"},
        "to": {"label": "vendor", "bbox": BOX, "unit": "px"},
        "frame": [W, H],
    }

    clock.advance(minutes=1)
    again = post(client, "dispatcher", cid, "correct", {"label": "litter", "bbox": [0, 0, 1280, 720]})
    assert (
        again["events"][0]["note"]
        == "label vendor → litter; box [100, 200, 300, 400] px → [0, 0, 1280, 720] px"
    )
    assert again["case"]["corrected_by"] == "dispatcher:t-dispatcher"
    history = client.get(f"/cases/{cid}/events", headers=auth("reviewer")).json()["data"]
    assert [e["kind"] for e in history] == ["opened", "corrected", "corrected"]


def test_without_the_evidence_image_the_box_is_not_bounded_and_the_old_one_is_normalised(
    client: TestClient, app: FastAPI
) -> None:
    cid = camera_case(app, jpeg=frame_jpeg(tag=255))
    case = client.get(f"/cases/{cid}", headers=auth("admin")).json()
    app.state.evidence_store.remove(case["evidence_sha256"])  # retention took it
    out = post(client, "reviewer", cid, "correct", {"label": "vehicle", "bbox": [10, 10, 5000, 4000]})
    assert (
        out["events"][0]["note"]
        == "label vehicle → vehicle; box [0.1, 0.2, 0.3, 0.4] normalised → [10, 10, 5000, 4000] px"
    )
    assert out["events"][0]["data"]["frame"] is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            '{"label": "vehicle", "bbox": [100, 200, 1281, 400]}',
            "outside the case's evidence frame of 1280x720",
        ),
        (
            '{"label": "vehicle", "bbox": [100, 200, 300, 720.5]}',
            "outside the case's evidence frame of 1280x720",
        ),
        ('{"label": "vehicle", "bbox": [100, 200, 300, NaN]}', "finite number"),
        ('{"label": "vehicle", "bbox": [100, 200, Infinity, 400]}', "finite number"),
        ('{"label": "bicycle", "bbox": [100, 200, 300, 400]}', "Input should be"),
        ('{"label": "vehicle", "bbox": [300, 200, 100, 400]}', "x1 < x2"),
        ('{"label": "vehicle", "bbox": [100, 200, 300, 400], "note": "x"}', "Extra inputs"),
        ('{"label": "vehicle", "bbox": "100,200,300,400"}', "valid list"),
    ],
)
def test_invalid_corrections_are_422_and_change_nothing(
    client: TestClient, app: FastAPI, raw: str, message: str
) -> None:
    cid = camera_case(app)
    headers = {**auth("reviewer"), "Content-Type": "application/json"}
    response = client.post(f"/cases/{cid}/correct", headers=headers, content=raw)
    assert response.status_code == 422 and message in response.text, response.text
    case = client.get(f"/cases/{cid}", headers=auth("admin")).json()
    assert (case["corrected_label"], case["reviewed_at"]) == (None, None)


def test_a_report_a_duplicate_and_an_unknown_case_cannot_be_corrected(
    client: TestClient, app: FastAPI
) -> None:
    body = {"label": "litter", "bbox": BOX}
    report = citizen_case(client)
    response = client.post(f"/cases/{report}/correct", headers=auth("reviewer"), json=body)
    assert response.status_code == 409 and "citizen report: it has no detection" in response.json()["detail"]
    target, dup = camera_case(app), camera_case(app)
    post(client, "reviewer", target, "register")
    post(client, "reviewer", dup, "merge", {"into": target})
    response = client.post(f"/cases/{dup}/correct", headers=auth("reviewer"), json=body)
    assert response.status_code == 409
    assert (
        response.json()["detail"]
        == f"case {dup} is a duplicate merged into case {target}: correct that case instead"
    )
    assert client.post("/cases/999999/correct", headers=auth("reviewer"), json=body).status_code == 404
    rejected = camera_case(app)
    post(client, "reviewer", rejected, "reject", {"reason": "false_positive"})
    assert post(client, "reviewer", rejected, "correct", body)["case"]["status"] == "rejected"


# -- GET /reviews --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("admin", 200),
        ("reviewer", 200),
        ("dispatcher", 200),
        ("unit", 403),
        ("detector", 403),
        ("public", 403),
        (None, 401),
    ],
)
def test_who_may_read_reviews(client: TestClient, who: str | None, code: int) -> None:
    response = client.get("/reviews", headers=auth(who) if who else {})
    assert response.status_code == code, response.text


CORRECT = ("reviewer", "correct", {"label": "vendor", "bbox": BOX})
REGISTER = ("reviewer", "register", None)


@pytest.mark.parametrize(
    ("steps", "verdict", "reason", "by"),
    [
        ([], None, None, None),
        ([REGISTER], "confirmed", None, "reviewer:t-reviewer"),
        (
            [("admin", "register", None), ("dispatcher", "dispatch", {"unit": "hgc-squad"})],
            "confirmed",
            None,
            "admin:t-admin",
        ),
        (
            [("reviewer", "reject", {"reason": "false_positive"})],
            "rejected",
            "false_positive",
            "reviewer:t-reviewer",
        ),
        (
            [REGISTER, ("admin", "reject", {"reason": "out_of_scope"})],
            "rejected",
            "out_of_scope",
            "admin:t-admin",
        ),
        ([CORRECT], "corrected", None, "reviewer:t-reviewer"),
        ([REGISTER, ("dispatcher", "correct", CORRECT[2])], "corrected", None, "dispatcher:t-dispatcher"),
        ([CORRECT, ("admin", "register", None)], "corrected", None, "admin:t-admin"),
        (
            [CORRECT, ("admin", "reject", {"reason": "false_positive"})],
            "rejected",
            "false_positive",
            "admin:t-admin",
        ),
        (
            [("reviewer", "reject", {"reason": "out_of_scope"}), CORRECT],
            "rejected",
            "out_of_scope",
            "reviewer:t-reviewer",
        ),
    ],
    ids=[
        "untouched",
        "registered",
        "dispatched",
        "rejected",
        "registered-then-rejected",
        "corrected-candidate",
        "registered-then-corrected",
        "corrected-then-registered",
        "corrected-then-rejected",
        "rejected-then-corrected",
    ],
)
def test_the_verdict_of_each_judgement(
    client: TestClient,
    app: FastAPI,
    clock: FakeClock,
    steps: list[tuple[str, str, Any]],
    verdict: str | None,
    reason: str | None,
    by: str | None,
) -> None:
    cid = camera_case(app)
    for who, action, body in steps:
        clock.advance(minutes=1)
        post(client, who, cid, action, body)
    items = [i for i in reviews(client)["items"] if i["case_id"] == cid]
    if verdict is None:
        assert items == []
        return
    (item,) = items
    corrected = any(action == "correct" for _, action, _ in steps)
    last = max(i + 1 for i, (_, a, _) in enumerate(steps) if a in ("register", "reject", "correct"))
    case = client.get(f"/cases/{cid}", headers=auth("admin")).json()
    assert item == {
        "case_id": cid,
        "violation_id": case["violation_id"],
        "stream": case["stream"],
        "rule": "illegal_parking",
        "label": "vehicle",
        "bbox": [0.1, 0.2, 0.3, 0.4],
        "verdict": verdict,
        "reason": reason,
        "corrected_label": "vendor" if corrected else None,
        "corrected_bbox": BOX if corrected else None,
        "model": {"name": "citywatch-synth", "version": "1.0.0", "sha256": "0" * 64},
        "reviewed_at": (T0 + timedelta(minutes=last)).isoformat().replace("+00:00", "Z"),
        "reviewed_by": by,
    }


def test_reports_and_duplicates_are_not_reviews(client: TestClient, app: FastAPI) -> None:
    report = citizen_case(client)
    post(client, "reviewer", report, "register")
    target, dup = camera_case(app), camera_case(app)
    post(client, "reviewer", target, "register")
    post(client, "reviewer", dup, "merge", {"into": target})
    assert [i["case_id"] for i in reviews(client)["items"]] == [target]


def test_pages_never_split_or_repeat_cases_judged_at_the_same_instant(
    client: TestClient, app: FastAPI, clock: FakeClock
) -> None:
    ids = [camera_case(app) for _ in range(7)]
    for cid in ids[:5]:  # five at one instant
        post(client, "reviewer", cid, "register")
    clock.advance(seconds=1)
    for cid in ids[5:]:  # two at the next
        post(client, "reviewer", cid, "reject", {"reason": "false_positive"})
    clock.advance(seconds=1)
    post(client, "reviewer", ids[0], "correct", CORRECT[2])  # judged again: it moves to the end
    pages, since = [], None
    while True:
        page = reviews(client, limit=3, **({"since": since} if since else {}))
        pages.append([(i["case_id"], i["verdict"]) for i in page["items"]])
        if not page["items"]:
            assert page["next_since"] == since  # an empty page keeps the place
            break
        since = page["next_since"]
    assert pages == [
        [(ids[1], "confirmed"), (ids[2], "confirmed"), (ids[3], "confirmed")],
        [(ids[4], "confirmed"), (ids[5], "rejected"), (ids[6], "rejected")],
        [(ids[0], "corrected")],
        [],
    ]
    assert since == f"2026-03-02T01:00:02.000000Z~{ids[0]}"
    # a plain time: at or after it; a moment later: after it
    assert [i["case_id"] for i in reviews(client, since="2026-03-02T09:00:01+08:00")["items"]] == [
        *ids[5:],
        ids[0],
    ]
    later = reviews(client, since="2026-03-02T01:00:01.000001Z")
    assert [i["case_id"] for i in later["items"]] == [ids[0]]
    assert reviews(client)["next_since"] == since
    empty = reviews(client, since="2026-03-03T00:00:00")
    assert empty == {"items": [], "next_since": "2026-03-03T00:00:00"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "last tuesday"}, "neither an ISO 8601 time"),
        ({"since": "2026-03-02T01:00:00Z~abc"}, "neither an ISO 8601 time"),
        ({"limit": "0"}, "greater than or equal to 1"),
        ({"limit": "501"}, "less than or equal to 500"),
        ({"after": "3"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_review_queries_are_422(client: TestClient, params: dict[str, str], message: str) -> None:
    response = client.get("/reviews", headers=auth("reviewer"), params=params)
    assert response.status_code == 422 and message in json.dumps(response.json()), response.text


def test_no_reviews_yet(client: TestClient) -> None:
    assert reviews(client) == {"items": [], "next_since": None}
