"""Camera re-check over a real Mosquitto, on SQLite and PostgreSQL.

A disposed camera case makes the API publish ``<prefix>/commands/recheck/{stream}``; a simulated
detector (a small paho client: the real detector's side comes later) checks the command against
``detector/contracts/recheck.v1.schema.json`` and answers on the command's ``reply_topic``: absent
closes the case with the fresh frame, present sends it back for rework (rework +1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from api.core.config import Settings
from api.ingest.sample import encode, sample_event, sample_jpeg
from detector.contracts.recheck import command_validator
from tests.api_support import TEST_KEYS, auth

pytestmark = pytest.mark.mqtt
Wait = Callable[..., Any]


class FakeDetector:
    """Answers every re-check command with what ``answers[case_id]`` says (present / absent)."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.answers: dict[int, str] = {}
        self.commands: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"fake-detector-{uuid.uuid4().hex[:8]}"
        )
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.subscribe(f"{prefix}/commands/recheck/+", qos=1)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        command = json.loads(message.payload)
        problems = [e.message for e in command_validator().iter_errors(command)]
        if not message.topic.endswith(f"/{command.get('stream')}"):
            problems.append(f"topic {message.topic} is not the command's stream")
        with self._lock:
            self.commands.append(command)
            self.errors.extend(problems)
            result = self.answers.get(command["case_id"])
        if result is None or problems:
            return
        jpeg = sample_jpeg(f"after-{command['request_id']}-{result}")
        answer = {
            "schema": "citywatch.recheck-result/1",
            "request_id": command["request_id"],
            "case_id": command["case_id"],
            "stream": command["stream"],
            "result": result,
            "score": 0.9 if result == "present" else None,
            "bbox": command["bbox"] if result == "present" else None,
            "evidence": {
                "jpeg": base64.b64encode(jpeg).decode(),
                "sha256": hashlib.sha256(jpeg).hexdigest(),
                "captured_at": "2026-03-02T02:00:00+00:00",
                "width": 8,
                "height": 8,
            },
            "checked_at": "2026-03-02T02:00:01+00:00",
            "detector": "fake-detector/citywatch-synth@1.0.0",
        }
        client.publish(command["reply_topic"], json.dumps(answer), qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def forget_session(host: str, port: int, client_id: str) -> None:
    """Drop the broker's persistent session of the API's re-check client."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect(host, port, keepalive=10)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def settings(api_settings: Settings) -> Iterator[Settings]:
    yield api_settings.model_copy(update={"api_keys": list(TEST_KEYS.values()), "recheck_poll_s": 0.2})
    forget_session(api_settings.mqtt_host, api_settings.mqtt_port, f"{api_settings.mqtt_client_id}-recheck")


@pytest.fixture
def detector(mqtt_broker: tuple[str, int], settings: Settings) -> Iterator[FakeDetector]:
    fake = FakeDetector(*mqtt_broker, settings.mqtt_topic_prefix)
    yield fake
    fake.close()


def case_from_mqtt(api: TestClient, settings: Settings, publisher: Any, wait_until: Wait) -> int:
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    lat = 30.0 + uuid.uuid4().int % 10**6 / 10**6  # far from every other test's case: no duplicate merging
    body = sample_event(stream=stream, location={"lat": lat, "lon": 114.3902, "grid": "红钢城-03"})
    publisher.publish(f"{settings.mqtt_topic_prefix}/violations/{stream}", encode(body))
    rows = wait_until(
        lambda: api.get("/cases", params={"stream": stream}, headers=auth("reviewer")).json()["data"],
        what="the case",
    )
    cid: int = rows[0]["id"]
    for who, action in (("reviewer", "register"), ("dispatcher", "dispatch"), ("unit", "accept")):
        assert api.post(f"/cases/{cid}/{action}", headers=auth(who)).status_code == 200
    return cid


def dispose(api: TestClient, cid: int) -> None:
    response = api.post(f"/cases/{cid}/dispose", headers=auth("unit"), data={"note": "done"})
    assert response.status_code == 200 and response.json()["recheck_queued"] is True


def case_of(api: TestClient, cid: int) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/cases/{cid}", headers=auth("reviewer")).json()
    return body


def test_object_gone_closes_still_there_is_rework(
    runner: Any, settings: Settings, detector: FakeDetector, publisher: Any, wait_until: Wait
) -> None:
    api = runner.start(settings)
    wait_until(lambda: api.app.state.recheck_mqtt.connected, what="the re-check client to connect")
    gone, still = (case_from_mqtt(api, settings, publisher, wait_until) for _ in range(2))
    detector.answers.update({gone: "absent", still: "present"})
    dispose(api, gone)
    dispose(api, still)

    closed = wait_until(
        lambda: case_of(api, gone)["status"] == "closed" and case_of(api, gone), what="closed"
    )
    assert closed["resolution"] == "verified" and closed["after_evidence_sha256"]
    after = api.get(closed["after_evidence_url"], headers=auth("reviewer"))
    assert hashlib.sha256(after.content).hexdigest() == closed["after_evidence_sha256"]
    reworked = wait_until(
        lambda: case_of(api, still)["rework_count"] == 1 and case_of(api, still), what="rework"
    )
    assert reworked["status"] == "in_progress"

    detector.answers[still] = "absent"  # the unit tries again, and this time it holds
    dispose(api, still)
    wait_until(lambda: case_of(api, still)["status"] == "closed", what="the second disposal to close")
    kinds = [e["kind"] for e in api.get(f"/cases/{still}/events", headers=auth("reviewer")).json()["data"]]
    assert kinds == [
        "opened",
        "register",
        "dispatch",
        "accept",
        "dispose",
        "verify",
        "rework",
        "dispose",
        "verify",
        "close",
    ]
    assert detector.errors == []
    assert sorted({c["case_id"] for c in detector.commands}) == sorted([gone, still])
    rechecks = api.get(f"/cases/{still}/rechecks", headers=auth("reviewer")).json()
    assert [(r["status"], r["result"]) for r in rechecks] == [("answered", "present"), ("answered", "absent")]


def test_commands_wait_in_the_outbox_while_nobody_answers(
    runner: Any, settings: Settings, publisher: Any, wait_until: Wait
) -> None:
    api = runner.start(settings)
    cid = case_from_mqtt(api, settings, publisher, wait_until)
    dispose(api, cid)
    rows = wait_until(
        lambda: [
            r
            for r in api.get(f"/cases/{cid}/rechecks", headers=auth("reviewer")).json()
            if r["status"] == "sent"
        ],
        what="the command to be PUBACKed",
    )
    assert rows[0]["attempts"] == 1 and case_of(api, cid)["status"] == "verifying"
