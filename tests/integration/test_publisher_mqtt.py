"""Publisher + PahoCommunicator against a real Mosquitto: nothing lost, nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import paho.mqtt.publish as mqtt_publish
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from detector.contracts.events import EventSchemaError, build_event, violation_id
from detector.delivery.broker import broker_answers
from detector.delivery.mqtt import MqttSettings, PahoCommunicator
from detector.delivery.outbox import Outbox, OutboxFullError
from detector.delivery.publisher import JsonlSink, Publisher, PublisherStoppedError
from detector.evidence import render_evidence

REPO = Path(__file__).resolve().parents[2]
T0 = 1767254420.0
_FRAME = np.full((48, 64, 3), 80, np.uint8)
_EVIDENCE = render_evidence(_FRAME, (8, 8, 40, 40), [(0, 0), (1, 0), (1, 1)], "vehicle", captured_at=T0)


def make_event(i: int, stream: str = "cam-001") -> dict[str, Any]:
    return build_event(
        "opened",
        violation_id=violation_id(stream, f"track-{i}", T0 + i),
        seq=0,
        rule="illegal_parking",
        label="vehicle",
        stream=stream,
        zone="no-parking-1",
        bbox_norm=(0.1, 0.2, 0.3, 0.4),
        score_median=0.8,
        score_top=0.9,
        first_seen=T0 + i,
        last_seen=T0 + i + 60,
        evidence=_EVIDENCE,
        model={"name": "citywatch-synth", "version": "1.0.0"},
        location={"grid": "G-1"},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Mosquitto:
    """A mosquitto on ``port`` with on-disk persistence, so sessions survive its restarts."""

    def __init__(self, port: int, workdir: Path) -> None:
        exe = shutil.which("mosquitto")
        if exe is None:
            pytest.fail("mosquitto is not installed: apt-get install mosquitto")
        self.exe, self.port, self.dir = exe, port, workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nmax_queued_messages 10000\n"
            # as root, mosquitto would switch to its own user, which cannot write pytest's tmp_path
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        if not wait_for(lambda: broker_answers("127.0.0.1", self.port, 0.2), 10):
            self.stop()
            pytest.fail(f"mosquitto did not start: {(self.dir / 'mosquitto.log').read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """A plain paho subscriber that records every message it gets."""

    def __init__(
        self, host: str, port: int, topic: str, *, client_id: str | None = None, clean: bool = True
    ) -> None:
        self.messages: list[paho.MQTTMessage] = []
        cid = client_id or f"sub-{uuid.uuid4().hex[:8]}"
        if clean:  # MQTT 5, to see the publisher's properties
            self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
        else:  # a persistent session
            self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5), "subscriber got no SUBACK"

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in list(self.messages)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def worker(request: pytest.FixtureRequest, topic_prefix: str) -> Iterator[str]:
    """A unique worker name; its retained status / state topics are cleared after the test."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    if "mqtt_broker" in request.fixturenames:
        host, port = request.getfixturevalue("mqtt_broker")
        topics = [f"{topic_prefix}/status/{name}", f"{topic_prefix}/streams/cam-001/state"]
        msgs: Any = [{"topic": t, "payload": None, "qos": 1, "retain": True} for t in topics]
        mqtt_publish.multiple(msgs, hostname=host, port=port)


def _comm(host: str, port: int, worker: str, prefix: str, **kw: Any) -> PahoCommunicator:
    return PahoCommunicator(
        MqttSettings(host=host, port=port, worker=worker, topic_prefix=prefix, **kw)
    ).start()


@pytest.fixture
def pipeline(mqtt_broker: tuple[str, int], topic_prefix: str, worker: str, tmp_path: Path) -> Iterator[Any]:
    host, port = mqtt_broker
    comm = _comm(host, port, worker, topic_prefix)
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(comm, outbox, topic_prefix=topic_prefix, poll_s=0.1)
    yield comm, outbox, publisher
    publisher.stop()
    comm.stop()
    outbox.close()


# ---------------------------------------------------------------------------------------- with a broker
@pytest.mark.mqtt
def test_fifty_events_are_received_exactly_once(
    pipeline: Any, mqtt_broker: tuple[str, int], topic_prefix: str
) -> None:
    comm, outbox, publisher = pipeline
    sub = Subscriber(*mqtt_broker, f"{topic_prefix}/violations/#")
    try:
        assert comm.wait_connected(10)
        events = [make_event(i) for i in range(50)]
        for event in events:
            publisher.publish_event(event)
        assert publisher.flush(20), publisher.stats()
        assert wait_for(lambda: len(sub.messages) >= 50, 10)
        time.sleep(0.3)  # a duplicate would arrive now
        received = Counter(p["violation_id"] for p in sub.payloads())
        assert received == Counter(e["violation_id"] for e in events)
        assert sub.payloads() == events  # in order, byte-for-byte the same payloads
        assert {m.topic for m in sub.messages} == {f"{topic_prefix}/violations/cam-001"}
        assert all(m.qos == 1 for m in sub.messages)
        props: Any = sub.messages[0].properties
        assert props.ContentType == "application/json"
        assert ("schema", "citywatch.violation/1") in props.UserProperty
        assert len(outbox) == 0 and publisher.stats()["acked"] == 50
    finally:
        sub.close()


@pytest.mark.mqtt
def test_state_is_retained_and_only_the_latest_kept(
    pipeline: Any, mqtt_broker: tuple[str, int], topic_prefix: str
) -> None:
    comm, outbox, publisher = pipeline
    assert comm.wait_connected(10)
    state = {"stream": "cam-001", "state": "live", "since": T0, "connected": True, "last_frame_ts": T0}
    state |= {"last_error": None, "samples": 1, "reconnects": 0, "sample_fps": 4.0, "url": "rtsp://c/1"}
    publisher.publish_state("cam-001", state)
    publisher.publish_state("cam-001", {**state, "samples": 2, "sample_fps": 5.0})
    time.sleep(0.8)
    sub = Subscriber(*mqtt_broker, f"{topic_prefix}/streams/+/state")
    try:
        assert wait_for(lambda: len(sub.messages) >= 1, 5)
        msg = sub.messages[-1]
        assert msg.retain and msg.topic == f"{topic_prefix}/streams/cam-001/state"
        assert json.loads(msg.payload) == {**state, "samples": 2, "sample_fps": 5.0}
        assert len(outbox) == 0  # states never go through the outbox
    finally:
        sub.close()


_KILLED_WORKER = textwrap.dedent(
    """
    import sys, time
    from detector.delivery.mqtt import MqttSettings, PahoCommunicator
    host, port, worker, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    comm = PahoCommunicator(MqttSettings(host=host, port=port, worker=worker, topic_prefix=prefix)).start()
    comm.wait_connected(10)
    print("up", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.mqtt
def test_last_will_offline_when_the_process_dies(
    mqtt_broker: tuple[str, int], topic_prefix: str, worker: str
) -> None:
    host, port = mqtt_broker
    sub = Subscriber(host, port, f"{topic_prefix}/status/{worker}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", _KILLED_WORKER, host, str(port), worker, topic_prefix]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        assert wait_for(lambda: [m.payload for m in sub.messages] == [b"online"], 5)
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_for(lambda: [m.payload for m in sub.messages] == [b"online", b"offline"], 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        sub.close()


@pytest.fixture
def own_broker(
    tmp_path: Path, topic_prefix: str, worker: str
) -> Iterator[tuple[Mosquitto, Callable[[], Subscriber]]]:
    """A stopped mosquitto on a free port that already knows a persistent subscriber session,
    so the subscriber cannot miss messages that arrive before it (re)connects."""
    broker = Mosquitto(free_port(), tmp_path).start()
    topic = f"{topic_prefix}/violations/#"

    def subscriber() -> Subscriber:
        return Subscriber("127.0.0.1", broker.port, topic, client_id=f"{worker}-sub", clean=False)

    subscriber().close()
    broker.stop()
    yield broker, subscriber
    broker.stop()


@pytest.fixture
def own_pipeline(own_broker: Any, topic_prefix: str, worker: str, tmp_path: Path) -> Iterator[Any]:
    broker, _ = own_broker
    comm = _comm("127.0.0.1", broker.port, worker, topic_prefix, reconnect_min_s=1, reconnect_max_s=2)
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(comm, outbox, topic_prefix=topic_prefix, poll_s=0.1)
    yield comm, outbox, publisher
    publisher.stop()
    comm.stop()
    outbox.close()


def _ids(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["violation_id"] for e in events)


@pytest.mark.mqtt
def test_broker_unreachable_then_up_loses_nothing(own_broker: Any, own_pipeline: Any) -> None:
    (broker, subscriber), (comm, outbox, publisher) = own_broker, own_pipeline
    events = [make_event(i) for i in range(30)]
    for event in events:
        publisher.publish_event(event)
    time.sleep(3.0)
    assert not comm.is_connected()
    assert len(outbox) == 30  # all waiting durably on disk
    broker.start()
    assert publisher.flush(30), publisher.stats()
    sub = subscriber()
    try:
        assert wait_for(lambda: len(sub.messages) >= 30, 10)
        time.sleep(0.3)
        assert _ids(sub.payloads()) == _ids(events)
        assert len(outbox) == 0
    finally:
        sub.close()


@pytest.mark.mqtt
def test_broker_restart_mid_stream_loses_nothing(own_broker: Any, own_pipeline: Any) -> None:
    (broker, subscriber), (comm, outbox, publisher) = own_broker, own_pipeline
    broker.start()
    assert comm.wait_connected(10)
    before, during = [make_event(i) for i in range(20)], [make_event(i) for i in range(20, 40)]
    for event in before:
        publisher.publish_event(event)
    broker.stop()  # while events may still be in flight
    for event in during:
        publisher.publish_event(event)
    assert wait_for(lambda: not comm.is_connected(), 5)
    broker.start()
    assert publisher.flush(30), publisher.stats()
    sub = subscriber()
    try:
        assert wait_for(lambda: set(_ids(sub.payloads())) == set(_ids(before + during)), 10)
        assert len(outbox) == 0
    finally:
        sub.close()


@pytest.mark.mqtt
def test_entries_left_by_a_previous_process_are_sent_at_start(
    mqtt_broker: tuple[str, int], topic_prefix: str, worker: str, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    dead = _comm("127.0.0.1", free_port(), worker, topic_prefix)  # nothing listens there
    with Outbox(path) as outbox:
        first = Publisher(dead, outbox, topic_prefix=topic_prefix)
        events = [make_event(i, "cam-002") for i in range(5)]
        for event in events:
            first.publish_event(event)
        first.stop()
    dead.stop()

    sub = Subscriber(*mqtt_broker, f"{topic_prefix}/violations/#")
    comm = _comm(*mqtt_broker, worker, topic_prefix)
    with Outbox(path) as outbox:
        assert len(outbox) == 5
        publisher = Publisher(comm, outbox, topic_prefix=topic_prefix, poll_s=0.1)
        try:
            assert publisher.flush(20)
            assert wait_for(lambda: len(sub.messages) >= 5, 10)
            assert [p["violation_id"] for p in sub.payloads()] == [e["violation_id"] for e in events]
        finally:
            publisher.stop()
            comm.stop()
            sub.close()


# ---------------------------------------------------------------------------------------- without a broker
def test_invalid_event_is_refused_before_the_outbox(tmp_path: Path, worker: str) -> None:
    comm = PahoCommunicator(MqttSettings(port=free_port(), worker=worker))  # never started
    with Outbox(tmp_path / "o.db", max_events=2) as outbox:
        publisher = Publisher(comm, outbox, start=False)
        bad = make_event(0)
        bad["rule"] = "speeding"
        with pytest.raises(EventSchemaError, match=r"\$\.rule"):
            publisher.publish_event(bad)
        assert len(outbox) == 0
        publisher.publish_event(make_event(1))
        publisher.publish_event(make_event(2))
        with pytest.raises(OutboxFullError):
            publisher.publish_event(make_event(3))
        assert publisher.flush(0.2) is False  # not sent: never connected
        publisher.stop()
        with pytest.raises(PublisherStoppedError):
            publisher.publish_event(make_event(4))


def test_jsonl_sink_writes_one_validated_event_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    with JsonlSink(path) as sink:
        for i in range(3):
            assert sink.publish_event(make_event(i)) == i + 1
        sink.publish_state("cam-001", {"fps": 1})
        bad = make_event(9)
        del bad["zone"]
        with pytest.raises(EventSchemaError):
            sink.publish_event(bad)
        assert sink.flush(1.0)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["violation_id"] for line in lines] == [
        make_event(i)["violation_id"] for i in range(3)
    ]
    with pytest.raises(PublisherStoppedError):
        sink.publish_event(make_event(0))
