"""Fixtures of the case API's integration tests: a database per backend, a running API with its
MQTT ingest on a real broker, a QoS 1 publisher, and polling helpers."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from api.core.config import Settings
from api.main import create_app
from tests.api_support import TEST_KEYS


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database per backend; on PostgreSQL the session database is shared, so tests keep to
    their own streams and topic prefixes."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'api.db'}"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """``wait_until(predicate, timeout=20, what=...)``: poll until truthy, return the value."""
    return wait_until


def forget_session(host: str, port: int, client_id: str) -> None:
    """Drop the broker's persistent session of ``client_id`` (connect once with clean_session)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        client.disconnect()
        client.loop_stop()
    except OSError:
        pass


@pytest.fixture
def make_client_id(mqtt_broker: tuple[str, int]) -> Iterator[Callable[[], str]]:
    """Unique MQTT client ids whose persistent sessions are dropped after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(f"citywatch-api-test-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    for client_id in made:
        forget_session(*mqtt_broker, client_id)


@pytest.fixture
def api_settings(
    db_url: str,
    mqtt_broker: tuple[str, int],
    topic_prefix: str,
    tmp_path: Path,
    make_client_id: Callable[[], str],
) -> Settings:
    host, port = mqtt_broker
    return Settings(
        database_url=db_url,
        evidence_dir=tmp_path / "evidence",
        mqtt_host=host,
        mqtt_port=port,
        mqtt_topic_prefix=topic_prefix,
        mqtt_client_id=make_client_id(),
        ingest_enabled=True,
        api_keys=list(TEST_KEYS.values()),
        anonymous_read=True,  # the tests read /cases without a credential
    )


def _connected(client: TestClient) -> bool:
    return bool(client.get("/health").json()["ingest"].get("connected"))


class ApiRunner:
    """Start APIs (lifespan and ingest included) and stop them; whatever runs at the end stops."""

    def __init__(self) -> None:
        self.running: list[TestClient] = []

    def start(self, settings: Settings, *, wait_connected: bool = True) -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()
        self.running.append(client)
        if wait_connected:
            wait_until(lambda: _connected(client), 15, "the ingest to connect")
            time.sleep(0.3)  # the SUBSCRIBE round trip follows the CONNACK
        return client

    def stop(self, client: TestClient) -> None:
        self.running.remove(client)
        client.__exit__(None, None, None)

    def stop_all(self) -> None:
        for client in reversed(self.running[:]):
            self.stop(client)


@pytest.fixture
def runner() -> Iterator[ApiRunner]:
    r = ApiRunner()
    yield r
    r.stop_all()


@pytest.fixture
def api(api_settings: Settings, runner: ApiRunner) -> TestClient:
    return runner.start(api_settings)


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Publisher:
    """QoS 1 publisher that waits for every PUBACK."""

    def __init__(self, host: str, port: int) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"citywatch-test-pub-{uuid.uuid4().hex[:10]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self._client.max_inflight_messages_set(100)
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for a message on {topic}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def publisher(mqtt_broker: tuple[str, int]) -> Iterator[Publisher]:
    pub = Publisher(*mqtt_broker)
    yield pub
    pub.close()
