"""Secrets never leave the process: not in logs, ``/health``, error answers or the MQTT stream state.

The API runs with every secret it knows set to a recognisable value (API keys, the token secret, the
MQTT password, a database password), on the real Mosquitto; the test sends the requests an attacker
or a confused operator would (wrong keys, wrong passwords, malformed tokens, probes of /health and
/openapi.json) and greps every answer and every log record for the secrets. A camera whose URL holds
a password fails to connect and its published states and log lines are greped the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from api.main import create_app
from detector.config import StreamConfig
from detector.sources.worker import StreamWorker
from tests.api_support import TEST_KEYS, key_of, make_settings

TOKEN_SECRET = "tok-SECRET-4f1b9c2e7d"
MQTT_PASSWORD = "mqtt-SECRET-93ac51f0"
DB_PASSWORD = "db-SECRET-58e2aa71"
CAMERA_PASSWORD = "cam-SECRET-2b7d0c9e"


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in text]


@pytest.fixture
def client(
    mqtt_broker: tuple[str, int], pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[TestClient]:
    host, port = mqtt_broker
    # PostgreSQL here trusts local connections, so a password in the URL is accepted and ignored: the
    # API carries it through start-up, migrations and /health exactly as it would a real one.
    db_url = make_url(pg_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    settings = make_settings(
        db_url,
        tmp_path,
        token_secret=TOKEN_SECRET,
        ingest_enabled=True,
        mqtt_host=host,
        mqtt_port=port,
        mqtt_username="citywatch-api",
        mqtt_password=MQTT_PASSWORD,
        mqtt_client_id=f"secrets-test-{time.monotonic_ns()}",
    )
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings)) as c:
        yield c


def all_keys() -> list[str]:
    return [str(entry["key"]) for entry in TEST_KEYS.values()]


def test_no_secret_in_answers_or_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    secrets = [TOKEN_SECRET, MQTT_PASSWORD, DB_PASSWORD, *all_keys()]
    almost = key_of("admin")[:-1] + "x"  # a near-miss of a real key
    answers = [
        client.get("/health"),
        client.get("/openapi.json"),
        client.get("/cases", headers={"X-API-Key": almost}),
        client.get("/auth/me", headers={"Authorization": "Bearer not.a.token"}),
        client.get("/auth/me", headers={"Authorization": f"Bearer {TOKEN_SECRET}"}),
        client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "client_id": "t-admin", "client_secret": almost},
        ),
        client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "nobody", "password": key_of("reviewer")},
        ),
        client.post("/reports", headers={"X-API-Key": key_of("public")}, data={"description": "x"}),
        client.get("/cases/999999", headers={"X-API-Key": key_of("admin")}),
    ]
    statuses = [a.status_code for a in answers]
    assert statuses[0] in (200, 503) and statuses[2] == 401 and statuses[5] == 401 and statuses[6] == 401
    for answer in answers:
        text = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        # the caller's own credential may not come back either, right or wrong
        assert leaks(text, [*secrets, almost]) == [], (answer.request.url, answer.status_code)
    good = client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "t-admin", "client_secret": key_of("admin")},
    )
    assert good.status_code == 200 and leaks(good.text, secrets) == []
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert caplog.records, "the API logged nothing: the check would prove nothing"
    assert leaks(logged, [*secrets, almost]) == []
    health = client.get("/health").json()
    assert leaks(repr(health), secrets) == []


def test_no_camera_password_in_states_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:9/Streaming/Channels/101?token={CAMERA_PASSWORD}"
    stream = StreamConfig.model_validate(
        {
            "id": "cam-secret",
            "url": url,
            "sample_interval_s": 1.0,
            "ingest": {"reconnect_min_s": 0.1, "reconnect_max_s": 0.2, "open_timeout_s": 2},
        }
    )
    states: list[dict[str, Any]] = []
    stop = threading.Event()
    worker = StreamWorker(
        stream, tmp_path, lambda f, b: None, lambda s, st: states.append(st), stop, state_every_s=0.1
    )
    worker.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(s.get("last_error") for s in states):
        time.sleep(0.05)
    stop.set()
    worker.join(10)
    assert any(s.get("last_error") for s in states), f"the camera never failed: {states[-1:]}"
    published = "\n".join(repr(s) for s in states)
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "***" in published
    assert leaks(published, [CAMERA_PASSWORD]) == [] and leaks(logged, [CAMERA_PASSWORD]) == []
