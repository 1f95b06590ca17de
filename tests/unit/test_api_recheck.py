"""Camera re-check without a broker: the command's contract, the outbox sender (publish, retry,
expiry) and every kind of answer (applied, duplicate, stale, dead letter)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.ingest.sample import encode, sample_event, sample_jpeg
from api.ingest.service import IngestOutcome, ingest_event
from api.models import DeadLetter, RecheckRequest
from api.services.recheck import RecheckSender
from api.services.recheck_answers import handle_result
from detector.contracts.recheck import command_validator
from tests.api_support import FakeClock, auth

PREFIX = "citywatch/v1"


@pytest.fixture
def api_settings_overrides() -> dict[str, Any]:
    return {"recheck_retry_s": 60, "recheck_timeout_s": 600}


def verifying_case(client: TestClient, app: FastAPI, stream: str = "cam-r1") -> int:
    body = sample_event(stream=stream, location={"lat": 30.6, "lon": 114.39, "grid": "红钢城-01"})
    with app.state.session_factory() as s:
        cid = ingest_event(s, f"{PREFIX}/violations/{stream}", encode(body), app.state.evidence_store).case_id
    assert cid is not None
    for who, action in (
        ("reviewer", "register"),
        ("dispatcher", "dispatch"),
        ("unit", "accept"),
        ("unit", "dispose"),
    ):
        assert client.post(f"/cases/{cid}/{action}", headers=auth(who)).status_code == 200
    return cid


def requests_of(app: FastAPI, cid: int) -> list[RecheckRequest]:
    with app.state.session_factory() as s:
        return list(
            s.scalars(select(RecheckRequest).where(RecheckRequest.case_id == cid).order_by(RecheckRequest.id))
        )


def answer_body(request_id: str, cid: int, result: str = "absent", **changes: Any) -> dict[str, Any]:
    jpeg = sample_jpeg(f"{request_id}-{result}")
    body: dict[str, Any] = {
        "schema": "citywatch.recheck-result/1",
        "request_id": request_id,
        "case_id": cid,
        "result": result,
        "checked_at": "2026-03-02T02:00:00+00:00",
        "detector": "detector-1",
        "evidence": {
            "jpeg": base64.b64encode(jpeg).decode(),
            "sha256": hashlib.sha256(jpeg).hexdigest(),
            "captured_at": "2026-03-02T01:59:58+00:00",
            "width": 8,
            "height": 8,
        },
    }
    body.update(changes)
    return body


def deliver(app: FastAPI, body: dict[str, Any] | bytes, stream: str = "cam-r1") -> Any:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    with app.state.session_factory() as s:
        return handle_result(s, app.state.desk, f"{PREFIX}/recheck-results/{stream}", payload)


def test_the_command_follows_the_contract(client: TestClient, app: FastAPI) -> None:
    cid = verifying_case(client, app)
    (row,) = requests_of(app, cid)
    assert list(command_validator().iter_errors(row.payload)) == []
    assert row.payload["bbox"] == [0.1, 0.2, 0.3, 0.4] and row.payload["zone"] == "no-parking-1"
    assert row.payload["reply_topic"] == f"{PREFIX}/recheck-results/cam-r1"
    assert row.payload["purpose"] == "verify" and row.status == "pending"


def test_sender_publishes_retries_and_expires(client: TestClient, app: FastAPI, clock: FakeClock) -> None:
    cid = verifying_case(client, app)
    sent: list[tuple[str, dict[str, Any]]] = []
    broker_up = [False]

    def publish(topic: str, payload: bytes) -> bool:
        if broker_up[0]:
            sent.append((topic, json.loads(payload)))
        return broker_up[0]

    sender = RecheckSender(app.state.settings, app.state.session_factory, publish, clock)
    assert sender.run_once() == 0 and requests_of(app, cid)[0].status == "pending"  # broker away: kept
    broker_up[0] = True
    assert sender.run_once() == 1
    assert sent[0][0] == f"{PREFIX}/commands/recheck/cam-r1" and sent[0][1]["case_id"] == cid
    assert sender.run_once() == 0  # sent, not due again yet
    clock.advance(seconds=61)
    assert sender.run_once() == 1 and requests_of(app, cid)[0].attempts == 2  # re-sent: no answer came
    clock.advance(seconds=600)
    sender.run_once()
    assert requests_of(app, cid)[0].status == "expired"
    events = client.get(f"/cases/{cid}/events", headers=auth("reviewer")).json()["data"]
    assert events[-1]["kind"] == "recheck_expired" and "a person verifies" in events[-1]["note"]
    case = client.get(f"/cases/{cid}", headers=auth("reviewer")).json()
    assert case["status"] == "verifying"  # a reviewer closes or reworks it now
    assert client.post(f"/cases/{cid}/close", headers=auth("reviewer")).status_code == 200


def test_an_answer_counts_once(client: TestClient, app: FastAPI) -> None:
    cid = verifying_case(client, app)
    body = answer_body(requests_of(app, cid)[0].request_id, cid)
    assert deliver(app, body).outcome is IngestOutcome.updated
    assert deliver(app, body).outcome is IngestOutcome.duplicate
    case = client.get(f"/cases/{cid}", headers=auth("reviewer")).json()
    assert case["status"] == "closed" and case["after_evidence_sha256"] == body["evidence"]["sha256"]
    (row,) = requests_of(app, cid)
    assert (row.status, row.result, row.detector) == ("answered", "absent", "detector-1")


def test_late_answers_change_nothing(client: TestClient, app: FastAPI) -> None:
    cid = verifying_case(client, app)
    first = requests_of(app, cid)[0].request_id
    assert client.post(f"/cases/{cid}/recheck", headers=auth("reviewer")).status_code == 200  # a second look
    assert deliver(app, answer_body(first, cid, "present")).outcome is IngestOutcome.stale  # superseded
    assert client.get(f"/cases/{cid}", headers=auth("reviewer")).json()["status"] == "verifying"
    second = requests_of(app, cid)[1].request_id
    assert (
        client.post(f"/cases/{cid}/close", headers=auth("reviewer")).status_code == 200
    )  # a person was faster
    assert deliver(app, answer_body(second, cid, "present")).outcome is IngestOutcome.stale
    case = client.get(f"/cases/{cid}", headers=auth("reviewer")).json()
    assert (case["status"], case["rework_count"]) == ("closed", 0)


@pytest.mark.parametrize(
    ("change", "stream", "words"),
    [
        ({"request_id": "rc-" + "0" * 24}, "cam-r1", "no re-check rc-000"),
        ({"case_id": 999}, "cam-r1", "for case 999"),
        ({}, "cam-other", "on stream cam-other"),
        ({"result": "maybe"}, "cam-r1", "$.result"),
        ({"schema": "citywatch.recheck-result/2"}, "cam-r1", "unsupported schema"),
        ({"checked_at": "yesterday"}, "cam-r1", "checked_at"),
        (
            {"evidence": {"jpeg": "AAAA", "sha256": "0" * 64, "captured_at": "2026-03-02T02:00:00Z"}},
            "cam-r1",
            "not a JPEG",
        ),
        ({"stream": "cam-zzz"}, "cam-r1", "does not match payload stream"),
        ({"colour": "red"}, "cam-r1", "Additional properties"),
    ],
)
def test_bad_answers_are_dead_lettered(
    client: TestClient, app: FastAPI, change: dict[str, Any], stream: str, words: str
) -> None:
    cid = verifying_case(client, app)
    body = {**answer_body(requests_of(app, cid)[0].request_id, cid), **change}
    result = deliver(app, body, stream=stream)
    assert result.outcome is IngestOutcome.dead_letter and words in (result.reason or ""), result.reason
    with app.state.session_factory() as s:
        assert (
            s.scalar(select(DeadLetter.reason).where(DeadLetter.id == result.dead_letter_id)) == result.reason
        )
    assert client.get(f"/cases/{cid}", headers=auth("reviewer")).json()["status"] == "verifying"


def test_only_the_detector_answers_over_http(client: TestClient, app: FastAPI) -> None:
    cid = verifying_case(client, app)
    body = answer_body(requests_of(app, cid)[0].request_id, cid)
    assert client.post("/recheck-results/cam-r1", headers=auth("reviewer"), json=body).status_code == 403
    bad = client.post("/recheck-results/cam-r1", headers=auth("detector"), json={**body, "case_id": 5})
    assert bad.status_code == 400 and bad.json()["outcome"] == "dead_letter"
    ok = client.post("/recheck-results/cam-r1", headers=auth("detector"), json=body)
    assert ok.status_code == 200 and ok.json() == {"outcome": "updated", "case_id": cid, "reason": None}
