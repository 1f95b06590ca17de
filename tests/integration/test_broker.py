"""The embedded MQTT broker, exercised with real paho clients (no Mosquitto needed)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from detector.contracts.events import EventError, build_event, violation_id
from detector.delivery.broker import BrokerError, EmbeddedBroker, broker_answers, ensure_broker, topic_matches
from detector.delivery.mqtt import MqttConfigError, MqttSettings, PahoCommunicator
from detector.delivery.outbox import Outbox
from detector.delivery.publisher import Publisher
from detector.evidence import render_evidence

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker("127.0.0.1", 0) as running:
        yield running


class Client:
    """A paho 3.1.1 client that records what it receives."""

    def __init__(
        self, port: int, client_id: str | None = None, *, clean: bool = True, will: Any = None
    ) -> None:
        self.got: list[tuple[str, bytes, int, bool]] = []
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"c-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
            clean_session=clean,
        )
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload), m.qos, m.retain))
        if will is not None:
            self.c.will_set(*will)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        assert done.wait(5), "no SUBACK"

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("+/+", "a/b", True),
        ("+", "/a", False),
        ("+/a", "/a", True),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b/c", "a/b", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_qos1_exchange_in_order_exactly_once(broker: EmbeddedBroker) -> None:
    sub, pub = Client(broker.port), Client(broker.port)
    sub.subscribe("cw/+/events")
    infos = [pub.c.publish(f"cw/{i % 3}/events", f"m{i}", qos=1) for i in range(200)]
    for info in infos:
        info.wait_for_publish(5)
    assert all(info.is_published() for info in infos)  # every PUBLISH got its PUBACK
    assert wait_for(lambda: len(sub.got) >= 200, 5)
    time.sleep(0.2)
    assert [p for _, p, _, _ in sub.got] == [f"m{i}".encode() for i in range(200)]
    assert {q for _, _, q, _ in sub.got} == {1}
    pub.c.publish("cw/x/events", "q0", qos=0).wait_for_publish(5)
    pub.c.publish("cw/x/events", "q2", qos=2).wait_for_publish(5)  # accepted, delivered as QoS 1
    assert wait_for(lambda: len(sub.got) == 202, 5)
    assert [(p, q) for _, p, q, _ in sub.got[-2:]] == [(b"q0", 0), (b"q2", 1)]
    sub.close()
    pub.close()


def test_retained_messages(broker: EmbeddedBroker) -> None:
    pub = Client(broker.port)
    pub.c.publish("cw/streams/cam-1/state", b'{"fps": 5}', qos=1, retain=True).wait_for_publish(5)
    pub.c.publish("cw/other", b"x", qos=1, retain=True).wait_for_publish(5)
    sub = Client(broker.port)
    sub.subscribe("cw/streams/+/state")
    assert wait_for(lambda: len(sub.got) == 1, 5)
    assert sub.got == [("cw/streams/cam-1/state", b'{"fps": 5}', 1, True)]
    pub.c.publish("cw/streams/cam-1/state", b'{"fps": 6}', qos=1, retain=True).wait_for_publish(5)
    assert wait_for(lambda: len(sub.got) == 2, 5)
    assert sub.got[1][3] is False  # live delivery to an existing subscriber: retain flag cleared
    pub.c.publish("cw/streams/cam-1/state", b"", qos=1, retain=True).wait_for_publish(5)  # clears it
    late = Client(broker.port)
    late.subscribe("cw/#")
    assert wait_for(lambda: len(late.got) == 1, 5)
    time.sleep(0.2)
    assert late.got == [("cw/other", b"x", 1, True)]
    for c in (pub, sub, late):
        c.close()


_WILL_CLIENT = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="willer", protocol=paho.MQTTv311)
    c.will_set("cw/status/w1", "offline", qos=1, retain=True)
    c.connect("127.0.0.1", int(sys.argv[1]))
    c.loop_start()
    c.publish("cw/status/w1", "online", qos=1, retain=True).wait_for_publish(5)
    print("up", flush=True)
    time.sleep(60)
    """
)


def test_last_will_on_a_killed_client_and_none_on_disconnect(broker: EmbeddedBroker) -> None:
    sub = Client(broker.port)
    sub.subscribe("cw/status/+")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WILL_CLIENT, str(broker.port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_for(lambda: [p for _, p, _, _ in sub.got] == [b"online", b"offline"], 5)
    finally:
        proc.kill()
        proc.wait()
    late = Client(broker.port)
    late.subscribe("cw/status/w1")
    assert wait_for(lambda: late.got == [("cw/status/w1", b"offline", 1, True)], 5)
    polite = Client(broker.port, will=("cw/status/w2", "offline", 1, True))
    polite.close()  # a DISCONNECT packet: the will is discarded
    time.sleep(0.3)
    assert all(t != "cw/status/w2" for t, _, _, _ in sub.got)
    sub.close()
    late.close()


def _raw_connect(port: int, keepalive: int, will_topic: str) -> socket.socket:
    def s(text: str) -> bytes:
        return struct.pack("!H", len(text)) + text.encode()

    body = s("MQTT") + bytes([4, 0x02 | 0x04 | 0x08]) + struct.pack("!H", keepalive)
    body += s("raw-" + uuid.uuid4().hex[:6]) + s(will_topic) + s("gone")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(bytes([0x10, len(body)]) + body)
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    return sock


def test_keepalive_timeout_publishes_the_will(broker: EmbeddedBroker) -> None:
    sub = Client(broker.port)
    sub.subscribe("cw/raw/#")
    sock = _raw_connect(broker.port, keepalive=1, will_topic="cw/raw/will")
    try:
        assert wait_for(lambda: sub.got == [("cw/raw/will", b"gone", 1, False)], 5)  # after 1.5 s of silence
    finally:
        sock.close()
        sub.close()


def test_persistent_session_queues_qos1_while_offline(broker: EmbeddedBroker) -> None:
    sub = Client(broker.port, "persistent-1", clean=False)
    assert sub.session_present is False
    sub.subscribe("cw/cases/#")
    sub.close()
    pub = Client(broker.port)
    for i in range(10):
        pub.c.publish(f"cw/cases/{i}", f"c{i}", qos=1).wait_for_publish(5)
    pub.c.publish("cw/cases/q0", "dropped", qos=0).wait_for_publish(5)
    back = Client(broker.port, "persistent-1", clean=False)
    assert back.session_present is True
    assert wait_for(lambda: len(back.got) >= 10, 5)
    time.sleep(0.2)
    assert [p for _, p, _, _ in back.got] == [f"c{i}".encode() for i in range(10)]
    back.close()
    fresh = Client(broker.port, "persistent-1", clean=True)  # clean session: the old one is gone
    assert fresh.session_present is False
    fresh.close()
    pub.close()


def test_unsubscribe_stops_delivery(broker: EmbeddedBroker) -> None:
    sub, pub = Client(broker.port), Client(broker.port)
    sub.subscribe("cw/u")
    done = threading.Event()
    sub.c.on_unsubscribe = lambda *a: done.set()
    sub.c.unsubscribe("cw/u")
    assert done.wait(5)
    pub.c.publish("cw/u", "x", qos=1).wait_for_publish(5)
    time.sleep(0.3)
    assert sub.got == []
    sub.close()
    pub.close()


def make_event(i: int) -> dict[str, Any]:
    frame = np.full((48, 64, 3), 80, np.uint8)
    return build_event(
        "opened",
        violation_id=violation_id("cam-001", i, 1767254420.0),
        seq=0,
        rule="street_vending",
        label="vendor",
        stream="cam-001",
        zone="z1",
        bbox_norm=(0.1, 0.2, 0.3, 0.4),
        score_median=0.7,
        score_top=0.8,
        first_seen=1767254420.0,
        last_seen=1767254480.0,
        evidence=render_evidence(frame, (8, 8, 40, 40), None, "vendor"),
        model={"name": "m", "version": "1"},
        location={},
    )


def test_communicator_falls_back_to_311_and_publisher_delivers(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    sub = Client(broker.port)
    sub.subscribe("citywatch/v1/#")
    comm = PahoCommunicator(MqttSettings(port=broker.port, worker="demo-1")).start()
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(comm, outbox, poll_s=0.1)
    try:
        assert comm.wait_connected(10)
        assert comm.protocol == paho.MQTTv311
        for i in range(20):
            publisher.publish_event(make_event(i))
        assert publisher.flush(10)
        assert wait_for(lambda: len([t for t, *_ in sub.got if "/violations/" in t]) == 20, 5)
        assert ("citywatch/v1/status/demo-1", b"online", 1, False) in sub.got
    finally:
        publisher.stop()
        comm.stop()
        outbox.close()
    assert wait_for(lambda: sub.got[-1][:2] == ("citywatch/v1/status/demo-1", b"offline"), 5)
    sub.close()


def test_broker_answers_and_ensure_broker() -> None:
    port = free_port()
    assert broker_answers("127.0.0.1", port, timeout=0.5) is False
    started = ensure_broker("127.0.0.1", port)
    assert started is not None
    try:
        assert broker_answers("127.0.0.1", port) is True
        assert ensure_broker("127.0.0.1", port) is None  # something answers: nothing started
        with pytest.raises(BrokerError, match="cannot listen"):
            EmbeddedBroker("127.0.0.1", port).start()
    finally:
        started.stop()
    assert broker_answers("127.0.0.1", port, timeout=0.5) is False


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "broker.example", ""])
def test_the_embedded_broker_listens_on_loopback_only(host: str) -> None:
    with pytest.raises(BrokerError, match="loopback only"):
        EmbeddedBroker(host, 0)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_the_embedded_broker_takes_a_loopback_host(host: str) -> None:
    assert EmbeddedBroker(host, 0).host == host  # constructed; not started


def test_citywatch_run_never_starts_a_broker(tmp_path: Path) -> None:
    """No broker answers: `citywatch run` exits with code 2 and says so, and starts none."""
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"version: 1\nworker_id: w1\nmqtt: {{host: 127.0.0.1, port: {port}}}\n"
        f"outbox: {{dir: {tmp_path / 'outbox'}}}\nstreams: [{{id: cam-1, url: {tmp_path / 'none.mp4'}}}]\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "detector.commands.cli", "run", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"no MQTT broker answers at 127.0.0.1:{port}" in run.stderr
    assert "never starts one" in run.stderr
    assert broker_answers("127.0.0.1", port, timeout=0.5) is False


def test_citywatch_run_waits_for_its_broker_when_asked(tmp_path: Path) -> None:
    """`--wait-for-broker S`: it waits (saying so), then gives up with code 2; SIGTERM ends the wait: 0."""
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"version: 1\nworker_id: w1\nmqtt: {{host: 127.0.0.1, port: {port}}}\n"
        f"outbox: {{dir: {tmp_path / 'outbox'}}}\nstreams: [{{id: cam-1, url: {tmp_path / 'none.mp4'}}}]\n"
    )
    cmd = [sys.executable, "-m", "detector.commands.cli", "run", "--config", str(config), "--wait-for-broker"]
    run = subprocess.run([*cmd, "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "waiting for it" in run.stderr
    assert f"no MQTT broker answered at 127.0.0.1:{port} within 2 s" in run.stderr
    proc = subprocess.Popen([*cmd, "-1"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "waiting for it" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline() if proc.stderr else ""
        assert "waiting for it" in seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_stop_disconnects_clients(broker: EmbeddedBroker) -> None:
    sub = Client(broker.port)
    gone = threading.Event()
    sub.c.on_disconnect = lambda *a: gone.set()
    broker.stop()
    assert gone.wait(5)
    sub.c.loop_stop()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 0}, "port"),
        ({"keepalive_s": 1}, "keepalive"),
        ({"max_inflight": 0}, "max_inflight"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 2}, "reconnect"),
        ({"keyfile": "client.key"}, "keyfile given without certfile"),
        ({"tls": True, "ca_certs": "/nonexistent/ca.pem"}, "cannot set up MQTT TLS"),
        ({"worker": "bad/worker"}, "not valid"),
    ],
)
def test_bad_mqtt_settings_are_refused_before_connecting(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((MqttConfigError, EventError), match=match):
        PahoCommunicator(MqttSettings(**kwargs))
