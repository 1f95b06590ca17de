"""The API's ingest speaks MQTT 5 where the broker does and 3.1.1 otherwise: against the embedded
3.1.1 broker of ``citywatch demo`` it falls back, keeps a persistent session and ingests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.core.config import Settings
from api.core.db import create_db_engine, create_session_factory
from api.core.evidence import EvidenceStore
from api.core.migrate import run_migrations
from api.ingest.mqtt import MqttIngest
from api.ingest.sample import encode, sample_event
from detector.delivery.broker import EmbeddedBroker


def wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.fixture
def embedded() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker("127.0.0.1", 0).start()
    yield broker
    broker.stop()


def publish(port: int, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fb-pub-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_ingest_falls_back_to_311_and_keeps_its_session(embedded: EmbeddedBroker, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        evidence_dir=tmp_path / "evidence",
        mqtt_port=embedded.port,
        mqtt_client_id=f"fb-api-{uuid.uuid4().hex[:8]}",
    )
    engine = create_db_engine(settings.database_url)
    run_migrations(engine)
    store = EvidenceStore(settings.evidence_dir)
    store.ensure_writable()
    sessions = create_session_factory(engine)
    topic = f"{settings.mqtt_topic_prefix}/violations/cam-fb"
    try:
        ingest = MqttIngest(settings, sessions, store)
        ingest.start()
        assert wait_for(lambda: ingest.connected, 15), ingest.stats()
        assert ingest.stats()["protocol"] == "3.1.1"
        time.sleep(0.3)  # the SUBACK
        publish(embedded.port, topic, encode(sample_event(stream="cam-fb")))
        assert wait_for(lambda: ingest.stats()["counts"]["created"] == 1, 15), ingest.stats()
        ingest.stop()

        publish(embedded.port, topic, encode(sample_event(stream="cam-fb")))  # while the API is away
        again = MqttIngest(settings, sessions, store)
        again.start()
        assert wait_for(lambda: again.stats()["counts"]["created"] == 1, 15), again.stats()
        again.stop()
    finally:
        engine.dispose()
