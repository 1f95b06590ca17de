"""The console's side of the API: the static files at /console/, GET /live (server-sent events),
GET /cases/{id}/actions (per role and status, from the lifecycle's own table) and GET /models."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
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
