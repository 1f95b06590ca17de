"""The console's side of the API: the static files at /console/, GET /live (server-sent events),
GET /cases/{id}/actions (per role and status, from the lifecycle's own table) and GET /models."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.ingest.sample import sample_event
from api.models import utcnow
from api.services.live import publish_stream
from tests.api_support import auth, ingest_sample

HGC = {"lat": 30.6381, "lon": 114.3902, "grid": "红钢城-03", "road": "和平大道"}


def camera_case(app: FastAPI, stream: str = "cam-101") -> int:
    return ingest_sample(app, sample_event(stream=stream, location=HGC, bbox=[0.1, 0.2, 0.3, 0.4]))


# -- the static files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "media_type", "words"),
    [
        ("/console/", "text/html", "js/app.js"),
        ("/console/index.html", "text/html", "css/console.css"),
        ("/console/js/app.js", "text/javascript", "export const PAGES"),
        ("/console/js/api.js", "text/javascript", "Authorization"),
        ("/console/js/live.js", "text/javascript", "Last-Event-ID"),
        ("/console/css/console.css", "text/css", "@media"),
        ("/console/i18n/zh.json", "application/json", "案件"),
        ("/console/js/pages/case.js", "text/javascript", "/actions"),
        ("/console/data/map.json", "application/json", '"roads"'),
    ],
)
def test_the_console_files(client: TestClient, path: str, media_type: str, words: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert words in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_console_redirects_to_its_folder_and_hides_the_rest(client: TestClient) -> None:
    response = client.get("/console", follow_redirects=False)
    assert response.status_code == 308 and response.headers["location"] == "/console/"
    assert client.get("/console/js/nothing-here.js").status_code == 404
    assert client.get("/console/../api/main.py").status_code == 404


def test_the_translations_have_the_same_keys(client: TestClient) -> None:
    en, zh = (client.get(f"/console/i18n/{lang}.json").json() for lang in ("en", "zh"))
    assert set(en) == set(zh)
    assert all(isinstance(v, str) and v for v in zh.values())


# -- GET /live --------------------------------------------------------------------------------


@pytest.fixture
def clock() -> Callable[[], datetime]:
    return utcnow  # /live compares the database's updated_at: the ingest writes real times


@pytest.fixture
def api_settings_overrides() -> dict[str, Any]:
    return {"live_poll_s": 0.05, "live_heartbeat_s": 0.2}


def _events(
    lines: Iterator[str], want: Callable[[str, dict[str, Any]], bool], deadline_s: float = 20
) -> dict[str, Any]:
    """Read SSE lines until an event ``want`` accepts (heartbeats keep lines coming)."""
    deadline = time.monotonic() + deadline_s
    kind = None
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind is not None:
            data = json.loads(line.removeprefix("data: "))
            if want(kind, data):
                return data
            kind = None
    raise AssertionError("the awaited event did not come")


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("detector", 403), ("public", 403)])
def test_live_needs_a_staff_credential(client: TestClient, who: str | None, status: int) -> None:
    response = client.get("/live", headers=auth(who) if who else {})
    assert response.status_code == status


def test_live_sends_a_case_event_when_a_case_is_created(app: FastAPI, client: TestClient) -> None:
    with client.stream("GET", "/live", headers=auth("reviewer")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")  # subscribed: what happens from here on comes
        case_id = camera_case(app)
        data = _events(lines, lambda kind, d: kind == "case" and d["id"] == case_id)
        assert data["status"] == "candidate" and data["stream"] == "cam-101"
        client.post(f"/cases/{case_id}/register", headers=auth("reviewer")).raise_for_status()
        data = _events(lines, lambda kind, d: kind == "case" and d["id"] == case_id)
        assert data["status"] == "registered"


def test_live_sends_the_stream_states_published(client: TestClient) -> None:
    with client.stream("GET", "/live", headers=auth("dispatcher")) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        assert publish_stream({"id": "cam-101", "state": "live", "lag_s": 0.4}) >= 1
        data = _events(lines, lambda kind, d: kind == "stream")
        assert data == {"id": "cam-101", "state": "live", "lag_s": 0.4}


def test_a_field_unit_follows_only_its_own_cases(app: FastAPI, client: TestClient) -> None:
    with client.stream("GET", "/live", headers=auth("unit")) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        theirs, ours = camera_case(app, "cam-1"), camera_case(app, "cam-2")
        admin = auth("admin")
        for action, body in (("register", None), ("dispatch", {"unit": "hgc-squad"})):
            client.post(f"/cases/{ours}/{action}", headers=admin, json=body).raise_for_status()
        seen: list[int] = []

        def until_ours(kind: str, data: dict[str, Any]) -> bool:
            seen.append(data["id"])
            return kind == "case" and data["id"] == ours and data["unit"] == "hgc-squad"

        _events(lines, until_ours)
        assert theirs not in seen  # created before ours: it would have come first


# -- GET /cases/{id}/actions -------------------------------------------------------------------


def force(app: FastAPI, case_id: int, **values: Any) -> None:
    """Put the case in a state directly (the actions endpoint only reads it)."""
    from api.models import Case

    with app.state.session_factory() as session, session.begin():
        case = session.get(Case, case_id)
        assert case is not None
        for name, value in values.items():
            setattr(case, name, value)


UNIT = {"unit": "hgc-squad"}
DESK_ACTIONS = {
    # status: (reviewer, dispatcher)
    "candidate": (["register", "reject", "merge", "recheck", "correct", "comment"], ["correct", "comment"]),
    "registered": (["reject", "merge", "correct", "comment"], ["dispatch", "correct", "comment"]),
    "dispatched": (["correct", "comment"], ["postpone", "hold", "correct", "comment"]),
    "in_progress": (["correct", "comment"], ["postpone", "hold", "correct", "comment"]),
    "disposed": (["verify", "close", "rework", "recheck", "correct", "comment"], ["correct", "comment"]),
    "verifying": (["close", "rework", "recheck", "correct", "comment"], ["correct", "comment"]),
    "closed": (["correct", "comment"], ["correct", "comment"]),
    "rejected": (["correct", "comment"], ["correct", "comment"]),
    "merged": (["comment"], ["comment"]),
}
UNIT_ACTIONS = {
    "dispatched": ["return", "accept", "comment"],
    "in_progress": ["dispose", "comment"],
    "disposed": ["comment"],
    "verifying": ["comment"],
    "closed": ["comment"],
}
ADMIN_ACTIONS = {
    "candidate": ["register", "reject", "merge", "recheck", "correct", "comment"],
    "registered": ["reject", "merge", "dispatch", "correct", "comment"],
    "dispatched": ["return", "accept", "postpone", "hold", "correct", "comment"],
    "in_progress": ["postpone", "hold", "dispose", "correct", "comment"],
    "verifying": ["close", "rework", "recheck", "correct", "comment"],
}
ACTION_TABLE = [
    *[(status, "reviewer", {}, acts[0]) for status, acts in DESK_ACTIONS.items()],
    *[(status, "dispatcher", {}, acts[1]) for status, acts in DESK_ACTIONS.items()],
    *[(status, "unit", UNIT, acts) for status, acts in UNIT_ACTIONS.items()],
    *[(status, "admin", UNIT, acts) for status, acts in ADMIN_ACTIONS.items()],
    ("in_progress", "other_unit", UNIT, 403),  # another unit's case: not even readable
    ("registered", "unit", {}, 403),  # not dispatched to anyone yet
    ("dispatched", "detector", UNIT, 403),
    ("dispatched", "public", UNIT, 403),
    ("dispatched", None, UNIT, 401),
    ("dispatched", "dispatcher", {**UNIT, "on_hold": True}, ["postpone", "correct", "comment"]),  # held once
]


@pytest.mark.parametrize(("status", "who", "values", "expected"), ACTION_TABLE)
def test_actions_per_role_and_status(
    app: FastAPI, client: TestClient, status: str, who: str | None, values: dict[str, Any], expected: Any
) -> None:
    case_id = camera_case(app)
    force(app, case_id, status=status, **values)
    response = client.get(f"/cases/{case_id}/actions", headers=auth(who) if who else {})
    if isinstance(expected, int):
        assert response.status_code == expected, response.text
        return
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == status
    assert [a["action"] for a in body["data"]] == expected
    assert all(a["path"] == f"/cases/{case_id}/{a['action']}" for a in body["data"])


def test_a_citizen_report_has_no_recheck_and_no_correction(client: TestClient) -> None:
    from api.ingest.sample import sample_jpeg

    response = client.post(
        "/reports",
        headers=auth("public"),
        files={"photo": ("p.jpg", sample_jpeg("c"), "image/jpeg")},
        data={"rule": "unclean_road", "lat": "30.64", "lon": "114.39", "description": "litter"},
    )
    case_id = response.json()["id"]
    actions = client.get(f"/cases/{case_id}/actions", headers=auth("reviewer")).json()["data"]
    assert [a["action"] for a in actions] == ["register", "reject", "merge", "comment"]


def test_the_fields_each_action_needs(app: FastAPI, client: TestClient) -> None:
    case_id = camera_case(app)
    force(app, case_id, status="registered")
    fields = {
        a["action"]: {f["name"]: f for f in a["fields"]}
        for a in client.get(f"/cases/{case_id}/actions", headers=auth("admin")).json()["data"]
    }
    reason = fields["reject"]["reason"]
    assert reason["kind"] == "choice" and reason["required"]
    assert reason["choices"] == ["false_positive", "out_of_scope", "self_resolved"]
    unit = fields["dispatch"]["unit"]
    assert unit["kind"] == "choice" and "hgc-squad" in unit["choices"] and unit["labels"]["hgc-squad"]
    assert unit["default"] == app.state.desk.routing.route("illegal_parking", HGC["grid"], HGC["road"]).unit
    assert fields["merge"]["into"]["kind"] == "integer" and fields["merge"]["into"]["required"]
    assert fields["correct"]["bbox"]["kind"] == "box" and fields["correct"]["label"]["choices"]
    force(app, case_id, status="in_progress", unit="hgc-squad")
    actions = {
        a["action"]: a for a in client.get(f"/cases/{case_id}/actions", headers=auth("unit")).json()["data"]
    }
    dispose = actions["dispose"]
    assert dispose["content_type"] == "multipart/form-data"
    assert {f["name"]: f["kind"] for f in dispose["fields"]} == {"note": "text", "photo": "file"}
    force(app, case_id, status="dispatched")
    actions = {
        a["action"]: a
        for a in client.get(f"/cases/{case_id}/actions", headers=auth("dispatcher")).json()["data"]
    }
    hours = {f["name"]: f for f in actions["postpone"]["fields"]}["hours"]
    assert hours["kind"] == "number" and hours["minimum"] == 0 and hours["exclusive_minimum"]


def test_the_action_fields_are_the_routes_own(client: TestClient) -> None:
    """BODIES (api/services/actions.py) names each route's body as the OpenAPI documents it."""
    from api.services.actions import BODIES, DISPOSE_FIELDS, body_fields

    spec = client.get("/openapi.json").json()

    def properties(path: str) -> set[str]:
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        schema = next(iter(content.values()))["schema"]
        ref = schema.get("$ref") or next(s["$ref"] for s in schema.get("anyOf", []) if "$ref" in s)
        return set(spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"])

    for action, model in BODIES.items():
        assert {f.name for f in body_fields(model)} == properties(f"/cases/{{case_id}}/{action}"), action
    assert {f.name for f in DISPOSE_FIELDS} == properties("/cases/{case_id}/dispose")


# -- GET /models -------------------------------------------------------------------------------

STREAMS_YAML = """\
version: 1
model: {name: null}
rule_models:
  illegal_parking: {name: yolov8n-coco}
streams:
  - id: cam-a
    url: a.mp4
    rule_models: {illegal_parking: {name: citywatch-synth}}
"""


def _sidecar(root: Path, stream: str, n: int, review: str | None = None, labelled: bool = False) -> None:
    from detector.contracts.frames import FrameRecord, Review, frame_id, write_record

    ts = 1_780_000_000.0 + n
    record = FrameRecord(
        id=frame_id(stream, ts, "uniform"),
        stream=stream,
        captured_at=datetime.fromtimestamp(ts, UTC),
        width=640,
        height=360,
        reasons=["uniform"],
        review=Review(verdict=review, case_id=n) if review else None,
        labels=[] if labelled else None,
    )
    write_record(root / stream / "2026-06-01" / f"{record.id}.json", record)


def test_models_view(app: FastAPI, client: TestClient, tmp_path: Path) -> None:
    from detector.contracts.manifest import load_manifest

    streams = tmp_path / "streams.yaml"
    streams.write_text(STREAMS_YAML, encoding="utf-8")
    collect = tmp_path / "collect"
    _sidecar(collect, "cam-a", 1)
    _sidecar(collect, "cam-a", 2, review="rejected", labelled=True)
    _sidecar(collect, "cam-b", 3, review="confirmed")
    app.state.settings.streams_file, app.state.settings.collect_dir = streams, collect
    manifest = load_manifest()
    default = manifest.get().ref
    body = client.get("/models", headers=auth("reviewer")).json()
    assert body["error"] is None and body["default_ref"] == default
    assert [m["ref"] for m in body["models"]] == [m.ref for m in manifest.models]
    assert [m["ref"] for m in body["models"] if m["default"]] == [default]
    assert all(m["card"] for m in body["models"])
    rules = {r["rule"]: r for r in body["rules"]["rules"]}
    assert rules["illegal_parking"]["model"] == manifest.get("yolov8n-coco").ref
    assert rules["illegal_parking"]["streams"] == {"cam-a": manifest.get("citywatch-synth").ref}
    assert rules["unclean_road"]["model"] == default and rules["unclean_road"]["streams"] == {}
    counts = body["collection"]
    assert counts["frames"] == 3 and counts["unreadable"] == 0
    assert counts["streams"]["cam-a"]["verdicts"] == {"rejected": 1}
    assert counts["streams"]["cam-a"]["labelled"] == 1
    assert counts["streams"]["cam-b"]["reasons"] == {"uniform": 1}


def test_models_without_a_streams_file_or_a_collection(client: TestClient) -> None:
    body = client.get("/models", headers=auth("dispatcher")).json()
    assert body["rules"]["source"] is None and body["collection"] is None
    assert {r["rule"] for r in body["rules"]["rules"]} == {
        "illegal_parking",
        "street_vending",
        "illegal_structure",
        "unclean_road",
    }


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("unit", 403), ("detector", 403), ("public", 403)])
def test_models_is_the_desks(client: TestClient, who: str | None, status: int) -> None:
    assert client.get("/models", headers=auth(who) if who else {}).status_code == status
