"""The case lifecycle over HTTP, on SQLite and PostgreSQL: a case walked through every transition
by the right roles; every wrong role (403) and wrong order (409) refused; the event log replays
into the case's state and history."""

from __future__ import annotations

import base64
import hashlib
import itertools
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.ingest.sample import sample_event, sample_jpeg
from api.models import CaseStatus
from api.services.auth import Role
from api.services.history import fold
from api.services.lifecycle import TRANSITIONS, Action
from tests.api_support import TEST_KEYS, FakeClock, auth, db_url, ingest_sample, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures

PREFIX = "citywatch/v1"
HGC = {
    "lat": 30.6381,
    "lon": 114.3902,
    "grid": "红钢城-03",
    "road": "和平大道",
    "address": "和平大道 1168 号",
}


def camera_case(app: FastAPI, stream: str = "cam-101", **location: Any) -> int:
    body = sample_event(stream=stream, location={**HGC, **location}, bbox=[0.1, 0.2, 0.3, 0.4])
    return ingest_sample(app, body)


def citizen_case(client: TestClient) -> int:
    response = client.post(
        "/reports",
        headers=auth("public"),
        files={"photo": ("p.jpg", sample_jpeg("c"), "image/jpeg")},
        data={
            "rule": "unclean_road",
            "lat": "30.64",
            "lon": "114.39",
            "description": "垃圾 on the pavement",
            "grid": "红钢城-05",
        },
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def act(
    client: TestClient, who: str, case_id: int, action: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = client.post(f"/cases/{case_id}/{action}", headers=auth(who), json=body)
    assert response.status_code == 200, f"{who} {action}: {response.status_code} {response.text}"
    result: dict[str, Any] = response.json()
    return result


def answer(client: TestClient, case_id: int, result: str, who: str = "detector") -> dict[str, Any]:
    """The detector's answer to the case's latest re-check, over HTTP."""
    rechecks = client.get(f"/cases/{case_id}/rechecks", headers=auth("reviewer")).json()
    jpeg = sample_jpeg(f"recheck-{case_id}-{len(rechecks)}-{result}")
    body = {
        "schema": "citywatch.recheck-result/1",
        "request_id": rechecks[-1]["request_id"],
        "case_id": case_id,
        "result": result,
        "checked_at": "2026-03-02T03:00:00Z",
        "detector": "detector-1/citywatch-synth@1.0.0",
        "evidence": {
            "jpeg": base64.b64encode(jpeg).decode(),
            "sha256": hashlib.sha256(jpeg).hexdigest(),
            "captured_at": "2026-03-02T02:59:58Z",
        },
    }
    response = client.post(f"/recheck-results/{rechecks[-1]['stream']}", headers=auth(who), json=body)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def events_of(client: TestClient, case_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.get(f"/cases/{case_id}/events", headers=auth("reviewer")).json()[
        "data"
    ]
    return rows


def test_a_camera_case_through_every_transition(client: TestClient, app: FastAPI, clock: FakeClock) -> None:
    cid = camera_case(app)
    act(client, "reviewer", cid, "register", {"note": "confirmed on the image"})
    out = act(client, "dispatcher", cid, "dispatch")
    assert (
        out["case"]["unit"] == "hgc-squad"
        and out["case"]["tier"] == "street"
        and out["case"]["street"] == "hgc"
    )
    assert out["case"]["deadline_at"] == "2026-03-02T03:00:00Z"  # Mon 09:00 +08 + 2 working hours
    act(client, "unit", cid, "return", {"note": "this block is the grid's"})
    act(client, "dispatcher", cid, "dispatch", {"unit": "hgc-squad"})
    clock.advance(minutes=20)
    act(client, "unit", cid, "accept")
    out = act(client, "dispatcher", cid, "postpone", {"hours": 3, "note": "tow truck booked"})
    assert out["case"]["deadline_at"] == "2026-03-02T08:00:00Z"  # +3 working hours from 11:00 +08: 16:00 +08
    act(client, "dispatcher", cid, "hold", {"note": "owner abroad, vehicle sealed"})
    clock.advance(hours=1)
    photo = sample_jpeg("rectified")
    response = client.post(
        f"/cases/{cid}/dispose",
        headers=auth("unit"),
        data={"note": "towed"},
        files={"photo": ("after.jpg", photo, "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    out = response.json()
    assert [e["kind"] for e in out["events"]] == ["dispose", "verify"] and out["recheck_queued"] is True
    assert out["case"]["status"] == "verifying"
    assert out["events"][0]["evidence_sha256"] == hashlib.sha256(photo).hexdigest()
    assert client.get(out["events"][0]["evidence_url"], headers=auth("unit")).content == photo
    assert answer(client, cid, "present")["outcome"] == "updated"  # still there: rework
    case = client.get(f"/cases/{cid}", headers=auth("reviewer")).json()
    assert (case["status"], case["rework_count"]) == ("in_progress", 1)
    client.post(f"/cases/{cid}/dispose", headers=auth("unit"), data={"note": "towed, really"})
    assert answer(client, cid, "absent")["outcome"] == "updated"
    case = client.get(f"/cases/{cid}", headers=auth("reviewer")).json()
    assert (case["status"], case["resolution"], case["rework_count"], case["postpone_count"]) == (
        "closed",
        "verified",
        1,
        1,
    )
    after = client.get(case["after_evidence_url"], headers=auth("reviewer"))
    assert (
        after.status_code == 200
        and hashlib.sha256(after.content).hexdigest() == case["after_evidence_sha256"]
    )

    events = events_of(client, cid)
    assert [(e["kind"], e["role"], e["to_status"]) for e in events] == [
        ("opened", "detector", "candidate"),
        ("register", "reviewer", "registered"),
        ("dispatch", "dispatcher", "dispatched"),
        ("return", "field_unit", "registered"),
        ("dispatch", "dispatcher", "dispatched"),
        ("accept", "field_unit", "in_progress"),
        ("postpone", "dispatcher", "in_progress"),
        ("hold", "dispatcher", "in_progress"),
        ("dispose", "field_unit", "disposed"),
        ("verify", "system", "verifying"),
        ("rework", "detector", "in_progress"),
        ("dispose", "field_unit", "disposed"),
        ("verify", "system", "verifying"),
        ("close", "detector", "closed"),
    ]
    assert events[1]["actor"] == "reviewer:t-reviewer" and events[1]["note"] == "confirmed on the image"
    assert_replays(events, case)


def assert_replays(events: list[dict[str, Any]], case: dict[str, Any]) -> None:
    """The event log alone gives the case's status, unit, deadline and counters."""

    class E:
        def __init__(self, row: dict[str, Any]) -> None:
            self.kind, self.from_status, self.to_status, self.data = (
                row["kind"],
                row["from_status"],
                row["to_status"],
                row["data"],
            )
            from detector.contracts.schemas import parse_datetime

            self.at = parse_datetime(row["at"].replace("Z", "+00:00"))

    h = fold([E(r) for r in events])
    assert h.status == case["status"]
    assert (h.rework_count, h.postpone_count, h.return_count, h.on_hold) == (
        case["rework_count"],
        case["postpone_count"],
        case["return_count"],
        case["on_hold"],
    )
    assert h.unit == case["unit"]
    deadline = h.deadline_at.isoformat().replace("+00:00", "Z") if h.deadline_at else None
    assert deadline == case["deadline_at"]
    for before, after in itertools.pairwise(events):
        assert after["from_status"] in (before["to_status"], None), (before, after)


def test_citizen_report_waits_for_a_person_to_verify(client: TestClient) -> None:
    cid = citizen_case(client)
    act(client, "reviewer", cid, "register")
    out = act(client, "dispatcher", cid, "dispatch")
    assert out["case"]["unit"] == "district-sanitation"  # unclean_road off 和平大道 → sanitation, 7 h
    act(client, "admin", cid, "accept")
    out = act(client, "admin", cid, "dispose")
    assert out["case"]["status"] == "disposed" and out["recheck_queued"] is False
    response = client.post(f"/cases/{cid}/recheck", headers=auth("reviewer"))
    assert response.status_code == 409 and "no camera" in response.json()["detail"]
    act(client, "reviewer", cid, "verify")
    act(client, "reviewer", cid, "rework", {"note": "still dirty on site"})
    act(client, "admin", cid, "dispose")
    out = act(client, "reviewer", cid, "close", {"note": "checked on site"})
    assert out["case"]["status"] == "closed" and out["case"]["rework_count"] == 1
    assert_replays(events_of(client, cid), out["case"])


def test_reject_merge_and_triage_end_a_case(client: TestClient, app: FastAPI) -> None:
    a, b, c, d = (camera_case(app, stream=f"cam-2{i}") for i in range(4))
    out = act(client, "reviewer", a, "reject", {"reason": "false_positive"})
    assert (out["case"]["status"], out["case"]["resolution"]) == ("rejected", "false_positive")
    act(client, "reviewer", b, "register")
    out = act(client, "reviewer", c, "merge", {"into": b})
    assert (out["case"]["status"], out["case"]["merged_into_id"]) == ("merged", b)
    assert client.get(f"/cases/{b}", headers=auth("reviewer")).json()["duplicate_count"] == 1
    response = client.post(f"/cases/{d}/merge", headers=auth("reviewer"), json={"into": a})
    assert response.status_code == 422 and "rejected" in response.text  # not into an ended case
    out = act(client, "reviewer", d, "recheck")
    assert out["recheck_queued"] and out["case"]["status"] == "candidate"
    answer(client, d, "absent")
    case = client.get(f"/cases/{d}", headers=auth("reviewer")).json()
    assert (case["status"], case["resolution"]) == ("rejected", "self_resolved")


# -- every wrong role and wrong order -----------------------------------------------------------
BODIES: dict[Action, dict[str, Any] | None] = {
    Action.reject: {"reason": "out_of_scope"},
    Action.merge: {"into": 1},
    Action.postpone: {"hours": 1, "note": "n"},
    Action.return_: {"note": "n"},
    Action.hold: {"note": "n"},
    Action.rework: {"note": "n"},
    Action.comment: {"note": "n"},
}
ROLES = ["admin", "reviewer", "dispatcher", "unit", "detector", "public"]
PATHS: dict[CaseStatus, list[tuple[str, str]]] = {
    CaseStatus.candidate: [],
    CaseStatus.registered: [("reviewer", "register")],
    CaseStatus.dispatched: [("reviewer", "register"), ("dispatcher", "dispatch")],
    CaseStatus.in_progress: [("reviewer", "register"), ("dispatcher", "dispatch"), ("unit", "accept")],
    CaseStatus.disposed: [
        ("reviewer", "register"),
        ("dispatcher", "dispatch"),
        ("admin", "accept"),
        ("admin", "dispose"),
    ],  # a citizen report: no camera re-check
    CaseStatus.verifying: [
        ("reviewer", "register"),
        ("dispatcher", "dispatch"),
        ("unit", "accept"),
        ("unit", "dispose"),
    ],
    CaseStatus.closed: [
        ("reviewer", "register"),
        ("dispatcher", "dispatch"),
        ("unit", "accept"),
        ("unit", "dispose"),
        ("reviewer", "close"),
    ],
    CaseStatus.rejected: [("reviewer", "reject")],
}


def expected_refusal(who: str, action: Action, status: CaseStatus, case_unit: str | None) -> int | None:
    t = TRANSITIONS[action]
    role = Role(TEST_KEYS[who]["role"])
    if role not in t.roles or (
        role is Role.field_unit and t.own_unit and case_unit != TEST_KEYS[who]["unit"]
    ):
        return 403
    return None if status in t.sources else 409


@pytest.mark.parametrize("status", list(PATHS), ids=str)
def test_every_wrong_role_is_403_and_every_wrong_order_409(
    client: TestClient, app: FastAPI, status: CaseStatus
) -> None:
    cid = (
        citizen_case(client)
        if status is CaseStatus.disposed
        else camera_case(app, stream=f"cam-{status.value}")
    )
    for who, action in PATHS[status]:
        act(client, who, cid, action, BODIES.get(Action(action)))
    case = client.get(f"/cases/{cid}", headers=auth("admin")).json()
    assert case["status"] == status
    tried = 0
    for action in Action:
        for who in ROLES:
            code = expected_refusal(who, action, status, case["unit"])
            if code is None:
                continue
            response = client.post(f"/cases/{cid}/{action.value}", headers=auth(who), json=BODIES.get(action))
            assert response.status_code == code, (who, action, status, response.text)
            if code == 409:
                assert response.json()["allowed"] == [
                    a.value for a, t in TRANSITIONS.items() if status in t.sources and a is not Action.comment
                ]
            tried += 1
    assert tried >= 40
    assert client.get(f"/cases/{cid}", headers=auth("admin")).json()["updated_at"] == case["updated_at"]


@pytest.mark.parametrize(
    ("who", "action", "status", "code"),
    [
        ("unit", "register", "candidate", 403),  # a field unit never reviews
        ("dispatcher", "register", "candidate", 403),
        ("reviewer", "dispatch", "registered", 403),  # dispatching is the dispatcher's
        ("dispatcher", "dispatch", "candidate", 409),  # not before review
        ("unit", "dispose", "dispatched", 409),  # accept first
        ("other_unit", "accept", "dispatched", 403),  # another unit's case
        ("detector", "close", "verifying", 403),  # the detector only answers re-checks
        ("public", "register", "candidate", 403),
        ("reviewer", "close", "in_progress", 409),  # nothing disposed yet
        ("admin", "register", "closed", 409),  # an ended case stays ended
    ],
)
def test_refusal_table(
    client: TestClient, app: FastAPI, who: str, action: str, status: str, code: int
) -> None:
    cid = camera_case(app, stream="cam-table")
    for step_who, step in PATHS[CaseStatus(status)]:
        act(client, step_who, cid, step)
    response = client.post(f"/cases/{cid}/{action}", headers=auth(who), json=BODIES.get(Action(action)))
    assert response.status_code == code, response.text


def test_no_credential_is_401_and_a_bad_one_too(client: TestClient, app: FastAPI) -> None:
    cid = camera_case(app)
    assert client.post(f"/cases/{cid}/register").status_code == 401
    bad = client.post(f"/cases/{cid}/register", headers={"X-API-Key": "not-a-key-at-all-0000"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("action", "body", "words"),
    [
        ("reject", {}, "reason"),
        ("reject", {"reason": "because"}, "reason"),
        ("merge", {"into": 0}, "into"),
        ("postpone", {"hours": 0, "note": "x"}, "hours"),
        ("return", {"note": ""}, "note"),
        ("register", {"note": "x", "colour": "red"}, "colour"),
    ],
)
def test_bad_bodies_are_422(
    client: TestClient, app: FastAPI, action: str, body: dict[str, Any], words: str
) -> None:
    cid = camera_case(app)
    response = client.post(f"/cases/{cid}/{action}", headers=auth("admin"), json=body)
    assert response.status_code == 422 and words in response.text


def test_dispatch_to_an_unknown_unit_is_422(client: TestClient, app: FastAPI) -> None:
    cid = camera_case(app)
    act(client, "reviewer", cid, "register")
    response = client.post(f"/cases/{cid}/dispatch", headers=auth("dispatcher"), json={"unit": "nobody"})
    assert response.status_code == 422 and "unknown unit 'nobody'" in response.text
    assert client.get(f"/cases/{cid}", headers=auth("admin")).json()["status"] == "registered"


def overdue_ids(client: TestClient, value: str) -> list[int]:
    response = client.get("/cases", params={"overdue": value}, headers=auth("reviewer"))
    assert response.status_code == 200, response.text
    return sorted(c["id"] for c in response.json()["data"])


def test_overdue_is_computed_shown_and_filterable(client: TestClient, app: FastAPI, clock: FakeClock) -> None:
    late, held, on_time, fresh = (camera_case(app, stream=f"cam-o{i}", lat=30.0 + i) for i in range(4))
    for cid in (late, held, on_time):
        act(client, "reviewer", cid, "register")
        act(client, "dispatcher", cid, "dispatch")  # deadline 11:00 +08
        act(client, "unit", cid, "accept")
    act(client, "unit", on_time, "dispose")
    act(client, "dispatcher", held, "hold", {"note": "挂账"})
    assert overdue_ids(client, "true") == []
    clock.advance(hours=2, minutes=1)  # 11:01 +08
    assert overdue_ids(client, "true") == [late]
    assert overdue_ids(client, "false") == sorted([held, on_time, fresh])
    assert client.get(f"/cases/{late}", headers=auth("reviewer")).json()["overdue"] is True
    listed = client.get(
        "/cases", params={"overdue": "true", "unit": "hgc-squad"}, headers=auth("unit")
    ).json()
    assert [c["id"] for c in listed["data"]] == [late] and listed["data"][0]["overdue"] is True
    act(client, "unit", late, "dispose")  # disposed late: no longer overdue, but marked disposed_late
    act(client, "reviewer", late, "close")
    assert overdue_ids(client, "true") == []
    case = client.get(f"/cases/{late}", headers=auth("reviewer")).json()
    assert (case["status"], case["overdue"], case["disposed_late"]) == ("closed", False, True)
    late_ones = client.get("/cases", params={"disposed_late": "true"}, headers=auth("reviewer")).json()[
        "data"
    ]
    assert [c["id"] for c in late_ones] == [late]
    assert client.get(f"/cases/{on_time}", headers=auth("reviewer")).json()["disposed_late"] is False
