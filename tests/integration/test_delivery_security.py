"""Delivery through a secured Mosquitto: TLS with client certificates, username/password, and the
MQTT 5 properties of an event. The publisher (outbox first) and the API's ingest both connect;
a refused connection loses nothing — the event waits in the outbox."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from detector.delivery.mqtt import MqttSettings, PahoCommunicator
from detector.delivery.outbox import Outbox
from detector.delivery.publisher import Publisher
from tests.integration.test_publisher_mqtt import make_event

pytestmark = pytest.mark.mqtt

USER, PASSWORD = "detector-7", "s3cret-pass"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, cn: str, cwd: Path, server: bool) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd)  # fmt: skip
    ext = cwd / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else "extendedKeyUsage=clientAuth\n"
    )
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=cwd)  # fmt: skip


@dataclass
class SecureBroker:
    tls_port: int
    password_port: int
    certs: Path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("the TLS tests need openssl and mosquitto_passwd (apt-get install openssl mosquitto)")
    d = tmp_path_factory.mktemp("secure-broker")
    ca = ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=citywatch-test-ca"]
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", *ca, cwd=d
    )
    _issue("server", "localhost", d, server=True)
    _issue("client", "detector-tls", d, server=False)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), USER, PASSWORD], check=True)
    broker = SecureBroker(_free_port(), _free_port(), d)
    conf = d / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings true\npersistence false\n"
        + ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {broker.tls_port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\n"
        f"keyfile {d}/server.key\nrequire_certificate true\nuse_identity_as_username true\n"
        "allow_anonymous false\n"
        f"listener {broker.password_port} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwd\n"
    )
    log = (d / "mosquitto.log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", broker.password_port), timeout=0.2).close()
                return True
            except OSError:
                return False

        if not wait_for(listening, 10):
            pytest.fail(f"mosquitto did not start: {(d / 'mosquitto.log').read_text()[-2000:]}")
        yield broker
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def subscribe(broker: SecureBroker, topic: str) -> tuple[paho.Client, list[paho.MQTTMessage]]:
    """An MQTT 5 subscriber on the password listener (sees the publisher's properties)."""
    got: list[paho.MQTTMessage] = []
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"sec-sub-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
    )
    client.username_pw_set(USER, PASSWORD)
    client.on_message = lambda _c, _u, msg: got.append(msg)
    client.connect("127.0.0.1", broker.password_port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    time.sleep(0.5)
    return client, got


def publisher(tmp_path: Path, prefix: str, **settings: Any) -> tuple[PahoCommunicator, Outbox, Publisher]:
    worker = f"sec-{uuid.uuid4().hex[:8]}"
    comm = PahoCommunicator(MqttSettings(worker=worker, topic_prefix=prefix, **settings)).start()
    outbox = Outbox(tmp_path / f"{worker}.sqlite3")
    return comm, outbox, Publisher(comm, outbox, topic_prefix=prefix, poll_s=0.1, event_expiry_s=3600)


def close(comm: PahoCommunicator, outbox: Outbox, pub: Publisher) -> None:
    pub.stop()
    comm.stop()
    outbox.close()


def tls_settings(broker: SecureBroker, *, client_cert: bool = True) -> dict[str, Any]:
    c = broker.certs
    files = {"certfile": str(c / "client.crt"), "keyfile": str(c / "client.key")} if client_cert else {}
    return {"port": broker.tls_port, "tls": True, "ca_certs": str(c / "ca.crt"), **files}


def test_tls_with_a_client_certificate_delivers_with_mqtt5_properties(
    secure_broker: SecureBroker, tmp_path: Path, topic_prefix: str
) -> None:
    sub, got = subscribe(secure_broker, f"{topic_prefix}/violations/#")
    comm, outbox, pub = publisher(tmp_path, topic_prefix, **tls_settings(secure_broker))
    try:
        event = make_event(1)
        pub.publish_event(event)
        assert pub.flush(20), "the event was not acknowledged over TLS"
        assert comm.protocol == paho.MQTTv5
        msg = wait_for(lambda: got and got[0], 10)
        assert msg, "the subscriber got nothing"
        assert json.loads(msg.payload)["violation_id"] == event["violation_id"]
        props = msg.properties
        assert ("schema", "citywatch.violation/1") in props.UserProperty
        assert props.ContentType == "application/json"
        assert 3500 < props.MessageExpiryInterval <= 3600
    finally:
        close(comm, outbox, pub)
        sub.disconnect()
        sub.loop_stop()


def test_tls_without_a_client_certificate_is_refused_and_the_event_waits(
    secure_broker: SecureBroker, tmp_path: Path, topic_prefix: str
) -> None:
    comm, outbox, pub = publisher(tmp_path, topic_prefix, **tls_settings(secure_broker, client_cert=False))
    try:
        pub.publish_event(make_event(2))
        assert not pub.flush(3)
        assert not comm.is_connected()
        assert outbox.count() == 1
    finally:
        close(comm, outbox, pub)


@pytest.mark.parametrize(("password", "delivered"), [(PASSWORD, True), ("wrong", False)])
def test_username_and_password(
    secure_broker: SecureBroker, tmp_path: Path, topic_prefix: str, password: str, delivered: bool
) -> None:
    creds = {"port": secure_broker.password_port, "username": USER, "password": password}
    comm, outbox, pub = publisher(tmp_path, topic_prefix, **creds)
    try:
        pub.publish_event(make_event(3))
        assert pub.flush(10 if delivered else 3) is delivered
        assert outbox.count() == (0 if delivered else 1)
    finally:
        close(comm, outbox, pub)


def test_api_ingest_over_tls_with_a_client_certificate(
    secure_broker: SecureBroker, tmp_path: Path, topic_prefix: str
) -> None:
    c = secure_broker.certs
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        evidence_dir=tmp_path / "evidence",
        mqtt_port=secure_broker.tls_port,
        mqtt_topic_prefix=topic_prefix,
        mqtt_client_id=f"sec-api-{uuid.uuid4().hex[:8]}",
        mqtt_tls=True,
        mqtt_ca_file=c / "ca.crt",
        mqtt_cert_file=c / "client.crt",
        mqtt_key_file=c / "client.key",
    )
    engine = create_db_engine(settings.database_url)
    run_migrations(engine)
    store = EvidenceStore(settings.evidence_dir)
    store.ensure_writable()
    ingest = MqttIngest(settings, create_session_factory(engine), store)
    ingest.start()
    comm, outbox, pub = publisher(tmp_path, topic_prefix, **tls_settings(secure_broker))
    try:
        assert wait_for(lambda: ingest.connected, 15), ingest.stats()["last_error"]
        time.sleep(0.5)  # the SUBACK
        pub.publish_event(make_event(4, stream="cam-tls"))  # detector -> TLS -> broker -> TLS -> API
        assert pub.flush(20)
        assert wait_for(lambda: ingest.stats()["counts"]["created"] == 1, 15), ingest.stats()
        assert ingest.stats()["protocol"] == "5"
    finally:
        close(comm, outbox, pub)
        ingest.stop()
        engine.dispose()
