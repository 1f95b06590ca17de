"""The MQTT ingest's bounds on a real mosquitto (its own, with unlimited queues so the broker keeps
everything the API does not take): a flood while the database is blocked fills the inbox to its
bound and no further — the rest waits at the broker, unacked, and all of it becomes cases once the
database is back; an oversized message is dead-lettered with the reason, one over the MQTT 5
Maximum Packet Size never reaches the API; a reconnect during an outage drops the old
connection's queued copies instead of piling them up. Memory (RSS) is measured by
``bench/mqtt_flood.py``, not asserted here."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import select

import api.ingest.mqtt as api_mqtt
from api.core.config import Settings
from api.core.db import create_db_engine, create_session_factory
from api.core.evidence import EvidenceStore
from api.core.migrate import run_migrations
from api.ingest.mqtt import MqttIngest
from api.ingest.sample import encode, sample_event
from api.models import DeadLetter
from detector.delivery.mqtt import MqttSettings, PahoCommunicator, ReceivedMessage
from tests.mosquitto import Broker, mosquitto

pytestmark = pytest.mark.mqtt

UNLIMITED = "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 1000\n"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with mosquitto(tmp_path_factory.mktemp("bounds-broker"), UNLIMITED) as b:
        yield b


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


class Gate:
    """A database that blocks every write until opened (patched over the consumer's two paths)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        for name in ("commit_batch", "ingest_event"):
            real = getattr(api_mqtt, name)
            monkeypatch.setattr(api_mqtt, name, self._gated(real))

    def _gated(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def wait_then(*args: Any, **kwargs: Any) -> Any:
            self.open.wait()
            return real(*args, **kwargs)

        return wait_then


class Running:
    def __init__(self, broker: Broker, tmp_path: Path, prefix: str, **overrides: Any) -> None:
        self.settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'api.db'}",
            evidence_dir=tmp_path / "evidence",
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            mqtt_topic_prefix=prefix,
            mqtt_client_id=f"bounds-api-{uuid.uuid4().hex[:8]}",
            **overrides,
        )
        self.engine = create_db_engine(self.settings.database_url)
        run_migrations(self.engine)
        self.sessions = create_session_factory(self.engine)
        store = EvidenceStore(self.settings.evidence_dir)
        store.ensure_writable()
        self.ingest = MqttIngest(self.settings, self.sessions, store)
        self.ingest.start()
        wait_for(lambda: self.ingest.connected, 15, "the ingest to connect")
        time.sleep(0.5)  # the SUBACK follows the CONNACK

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.ingest.stats()["counts"]
        return counts

    def inbox(self) -> dict[str, int]:
        inbox: dict[str, int] = self.ingest.stats()["inbox"]
        return inbox

    def close(self) -> None:
        self.ingest.stop()
        self.engine.dispose()


@pytest.fixture
def running(broker: Broker, tmp_path: Path, topic_prefix: str) -> Iterator[Callable[..., Running]]:
    made: list[Running] = []

    def start(**overrides: Any) -> Running:
        made.append(Running(broker, tmp_path, topic_prefix, **overrides))
        return made[-1]

    yield start
    for r in made:
        r.close()


def publish_all(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    """QoS 1, as fast as the broker takes them; returns once every PUBACK is in."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"flood-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def events(prefix: str, n: int) -> list[tuple[str, bytes]]:
    stream = f"cam-{uuid.uuid4().hex[:6]}"
    return [
        (f"{prefix}/violations/{stream}", encode(sample_event(stream=stream, jpeg=None))) for _ in range(n)
    ]


def test_a_flood_while_the_database_is_blocked_stays_within_the_bound(
    broker: Broker, running: Callable[..., Running], topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)
    api = running(ingest_queue_max=50, ingest_batch_max=10)
    try:
        publish_all(broker, events(topic_prefix, 2000))
        # 50 held (queued or in the workers' hands) and one more in the network thread, waiting
        full = lambda: api.counts()["received"] == 51 and api.inbox()["waits"] >= 1  # noqa: E731
        wait_for(full, what="the inbox to fill and the network thread to wait")
        inbox = api.inbox()
        assert (inbox["held"], inbox["high_water"]) == (50, 50)
        time.sleep(1.0)  # nothing more is taken in while the database stays blocked
        assert api.counts()["received"] == 51 and api.inbox()["held"] == 50
    finally:
        gate.open.set()
    done = lambda: api.counts()["acked"] == 2000 and api.inbox()["held"] == 0  # noqa: E731
    wait_for(done, 120, "every event to become a case, acked")
    counts, inbox = api.counts(), api.inbox()
    assert inbox["high_water"] <= 50 and inbox["held"] == 0
    assert (counts["created"], counts["dead_letter"], counts["received"]) == (2000, 0, 2000)


def test_oversized_messages_are_dead_lettered_or_never_sent(
    broker: Broker, running: Callable[..., Running], topic_prefix: str
) -> None:
    """Payload limit 64 KiB, Maximum Packet Size 128 KiB (twice the limit)."""
    api = running(ingest_max_payload_bytes=64 * 1024)
    stream = f"cam-{uuid.uuid4().hex[:6]}"
    topic = f"{topic_prefix}/violations/{stream}"
    over_limit = encode({**sample_event(stream=stream), "pad": "x" * 100_000})
    over_packet = encode({**sample_event(stream=stream), "pad": "x" * 1_000_000})
    publish_all(
        broker, [(topic, over_limit), (topic, over_packet), (topic, encode(sample_event(stream=stream)))]
    )
    wait_for(lambda: api.counts()["created"] == 1, what="the valid event's case")
    counts = api.counts()
    assert (counts["received"], counts["dead_letter"]) == (2, 1)  # the 1 MB one never came
    with api.sessions() as session:
        (row,) = session.scalars(select(DeadLetter).where(DeadLetter.topic == topic)).all()
    assert row.reason == f"payload is {len(over_limit)} bytes, over the 65536 byte limit"
    assert row.payload_size == len(over_limit)


def test_a_reconnect_during_an_outage_drops_the_queued_copies_of_the_old_connection(
    broker: Broker, running: Callable[..., Running], topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)
    api = running(ingest_queue_max=100, ingest_batch_max=5)
    try:
        publish_all(broker, events(topic_prefix, 30))
        wait_for(lambda: api.inbox()["held"] == 30, what="all 30 held")
        wait_for(lambda: api.inbox()["queued"] < 30, what="a batch in the workers' hands")
        sock = api.ingest._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the connection drops
        wait_for(lambda: api.inbox()["stale_dropped"] > 0, what="the reconnect")
        # at most 3 batches of 5 are in hand (one committing, one prepared, one being handed over)
        dropped = api.inbox()["stale_dropped"]
        assert 15 <= dropped < 30
    finally:
        gate.open.set()
    wait_for(lambda: api.counts()["acked"] == 30, what="the broker's copies to be acked")
    counts = api.counts()
    # each event made one case; only the copies already in hand were handled twice
    assert (counts["created"], counts["duplicate"], counts["not_acked"]) == (30, 30 - dropped, 30 - dropped)


def test_the_detector_never_receives_a_message_over_its_maximum_packet_size(
    broker: Broker, topic_prefix: str
) -> None:
    comm = PahoCommunicator(
        MqttSettings(
            host=broker.host, port=broker.port, worker=f"big-{uuid.uuid4().hex[:6]}", max_packet_bytes=2048
        )
    ).start()
    got: list[ReceivedMessage] = []
    try:
        assert comm.wait_connected(10)
        comm.subscribe(f"{topic_prefix}/commands/recheck/cam-1", got.append)
        time.sleep(0.5)  # the SUBACK
        topic = f"{topic_prefix}/commands/recheck/cam-1"
        publish_all(broker, [(topic, b"x" * 10_000), (topic, b"small")])
        wait_for(lambda: got, 10, "the small message")
        assert [m.payload for m in got] == [b"small"]
    finally:
        comm.stop()
