"""The shipped Mosquitto ACL (deploy/mosquitto/acl) on a real mosquitto with a password file per
role and no anonymous access: who may connect, publish and subscribe where — then the product's
own clients (detector publisher, API ingest, API re-check client) through it.

Publishing is judged by what a watching client receives (and the MQTT 5 PUBACK reason code);
an unseen message is told apart from a slow one by a sentinel published after it, which the
same subscriber may read and receives in order."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.core.db import create_db_engine, create_session_factory
from api.core.evidence import EvidenceStore
from api.core.migrate import run_migrations
from api.ingest.mqtt import MqttIngest
from api.ingest.service import IngestOutcome, IngestResult
from api.models import Case
from api.services.recheck_mqtt import RecheckMqtt
from detector.delivery.mqtt import MqttSettings, PahoCommunicator, ReceivedMessage
from detector.delivery.outbox import Outbox
from detector.delivery.publisher import Publisher
from tests.integration.test_delivery_security import _issue, _openssl
from tests.integration.test_publisher_mqtt import make_event
from tests.mosquitto import REPO, Broker, acl_broker, free_port, mosquitto, rewritten_acl, write_passwords

pytestmark = pytest.mark.mqtt

NOT_AUTHORIZED = 135  # MQTT 5 PUBACK reason code


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with acl_broker(tmp_path_factory.mktemp("acl-broker"), observer=True) as b:
        yield b


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


class Client:
    """An MQTT 5 client logged in as ``user`` (``None``: anonymous) that records what it gets."""

    def __init__(
        self, broker: Broker, user: str | None, password: str | None, *, port: int = 0, ca: Path | None = None
    ) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.connack: list[str] = []
        self.subacks = 0
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"acl-{uuid.uuid4().hex[:10]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca))
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(str(rc))
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.on_subscribe = lambda *_a: setattr(self, "subacks", self.subacks + 1)
        self.c.reconnect_delay_set(60, 60)  # a refused login is tried once here
        self.c.connect_async(broker.host, port or broker.port)
        self.c.loop_start()
        if not wait_for(lambda: self.connack):
            raise TimeoutError("no CONNACK")

    @property
    def connected(self) -> bool:
        return self.connack == ["Success"]

    def subscribe(self, topic_filter: str) -> None:
        before = self.subacks
        self.c.subscribe(topic_filter, qos=1)
        assert wait_for(lambda: self.subacks > before), f"no SUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes) -> int:
        """QoS 1; returns the PUBACK's reason code."""
        codes: list[int] = []
        self.c.on_publish = lambda _c, _u, _mid, rc, _p: codes.append(int(rc.value))
        info = self.c.publish(topic, payload, qos=1)
        assert wait_for(lambda: codes), f"no PUBACK for {topic}"
        assert info.rc == 0
        return codes[0]

    def saw(self, topic: str, payload: bytes) -> bool:
        return (topic, payload) in self.got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[Callable[[str | None], Client]]:
    made: list[Client] = []

    def make(role: str | None) -> Client:
        user, password = broker.accounts[role] if role else (None, None)
        made.append(Client(broker, user, password))
        return made[-1]

    yield make
    for client in made:
        client.close()


# (id, user name, password; ROLE: the role's own account, "role:x": that role with password x)
ROLE = "role"
CONNECTS = [
    ("anonymous", None, None, False),
    ("citizen with the public API key as password", "public", "citywatch-dev-public-key", False),
    ("citizen API key as user name", "citywatch-dev-public-key", None, False),
    ("api with a wrong password", "api", "wrong", False),
    ("detector password for the api account", "api", "role:detector", False),
    ("detector", "detector", ROLE, True),
    ("api", "api", ROLE, True),
    ("survey", "survey", ROLE, True),
]  # fmt: skip


@pytest.mark.parametrize(("user", "password", "accepted"), [pytest.param(*r[1:], id=r[0]) for r in CONNECTS])
def test_who_may_connect(broker: Broker, user: str | None, password: str | None, accepted: bool) -> None:
    if password == ROLE and user is not None:
        password = broker.accounts[user][1]
    elif password is not None and password.startswith("role:"):
        password = broker.accounts[password[5:]][1]
    client = Client(broker, user, password)
    try:
        assert client.connected is accepted, client.connack
        if not accepted:
            assert client.connack == ["Not authorized"]
    finally:
        client.close()


# (id, role, topic under the prefix ("/..." outside it), allowed)
PUBLISHES = [
    ("detector: violation event", "detector", "violations/cam-1", True),
    ("detector: stream state", "detector", "streams/cam-1/state", True),
    ("detector: stream snapshot", "detector", "streams/cam-1/snapshot", True),
    ("detector: worker status", "detector", "status/det-1", True),
    ("detector: re-check answer on the agreed topic", "detector", "recheck-results/cam-1", True),
    ("detector: re-check answer below the agreed topic", "detector", "recheck-results/cam-1/x", False),
    ("detector: answer on a command topic", "detector", "commands/recheck/cam-1", False),
    ("detector: answer outside the prefix", "detector", "/elsewhere/recheck-results/cam-1", False),
    ("detector: answer to another system", "detector", "/home/door/open", False),
    ("survey: violation event", "survey", "violations/drone-1", True),
    ("survey: re-check answer", "survey", "recheck-results/cam-1", False),
    ("survey: re-check command", "survey", "commands/recheck/cam-1", False),
    ("api: re-check command", "api", "commands/recheck/cam-1", True),
    ("api: forged violation event", "api", "violations/cam-1", False),
    ("api: forged re-check answer", "api", "recheck-results/cam-1", False),
    ("api: forged worker status", "api", "status/det-1", False),
    ("api: forged stream state", "api", "streams/cam-1/state", False),
    ("api: forged stream snapshot", "api", "streams/cam-1/snapshot", False),
    ("survey: stream snapshot", "survey", "streams/cam-1/snapshot", False),
]  # fmt: skip


def _topic(prefix: str, suffix: str) -> str:
    return suffix[1:] + f"/{uuid.uuid4().hex[:6]}" if suffix.startswith("/") else f"{prefix}/{suffix}"


@pytest.mark.parametrize(("role", "suffix", "allowed"), [pytest.param(*r[1:], id=r[0]) for r in PUBLISHES])
def test_who_may_publish_where(
    clients: Callable[[str | None], Client], topic_prefix: str, role: str, suffix: str, allowed: bool
) -> None:
    observer, sender = clients("observer"), clients(role)
    observer.subscribe("#")
    topic, payload = _topic(topic_prefix, suffix), uuid.uuid4().bytes
    code = sender.publish(topic, payload)
    sentinel = (f"{topic_prefix}/sentinel", uuid.uuid4().bytes)
    assert observer.publish(*sentinel) == 0
    assert wait_for(lambda: observer.saw(*sentinel)), "the observer got nothing"
    assert observer.saw(topic, payload) is allowed
    assert code == (0 if allowed else NOT_AUTHORIZED)


# (id, role, filter under the prefix, topic the observer publishes, delivered, a topic the role may read)
CMD = "commands/recheck/s"
SUBSCRIBES = [
    ("detector: re-check commands", "detector", "commands/recheck/+", "commands/recheck/cam-1", True, None),
    ("detector: others' answers", "detector", "recheck-results/+", "recheck-results/cam-2", False, CMD),
    ("detector: everything, gets no answers", "detector", "#", "recheck-results/cam-2", False, CMD),
    ("detector: violation events", "detector", "violations/+", "violations/cam-2", False, CMD),
    ("api: violation events", "api", "violations/+", "violations/cam-1", True, None),
    ("api: shared subscription", "api", "$share/g/{p}/violations/+", "violations/cam-1", True, None),
    ("api: re-check answers", "api", "recheck-results/+", "recheck-results/cam-1", True, None),
    ("api: re-check commands", "api", "commands/recheck/+", "commands/recheck/cam-1", False, "violations/s"),
    ("api: worker status", "api", "status/+", "status/det-1", False, "violations/s"),
    ("api: stream states", "api", "streams/+/state", "streams/cam-1/state", True, None),
    ("api: stream snapshots", "api", "streams/+/snapshot", "streams/cam-1/snapshot", True, None),
    ("survey: stream snapshots", "survey", "streams/+/snapshot", "streams/cam-1/snapshot", False, None),
    ("survey: violation events", "survey", "violations/+", "violations/cam-1", False, None),
    ("survey: everything", "survey", "#", "commands/recheck/cam-1", False, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "topic_filter", "suffix", "delivered", "readable"),
    [pytest.param(*r[1:], id=r[0]) for r in SUBSCRIBES],
)
def test_who_may_subscribe_where(
    clients: Callable[[str | None], Client],
    topic_prefix: str,
    role: str,
    topic_filter: str,
    suffix: str,
    delivered: bool,
    readable: str | None,
) -> None:
    observer, subscriber = clients("observer"), clients(role)
    full = (
        topic_filter.format(p=topic_prefix)
        if topic_filter.startswith("$")
        else f"{topic_prefix}/{topic_filter}"
    )
    subscriber.subscribe(full)
    if readable is not None:
        subscriber.subscribe(f"{topic_prefix}/{readable}")
    topic, payload = f"{topic_prefix}/{suffix}", uuid.uuid4().bytes
    assert observer.publish(topic, payload) == 0
    if delivered:
        assert wait_for(lambda: subscriber.saw(topic, payload))
        return
    if readable is not None:  # a later message it may read arrives after the first, had that come
        sentinel = (f"{topic_prefix}/{readable}", uuid.uuid4().bytes)
        assert observer.publish(*sentinel) == 0
        assert wait_for(lambda: subscriber.saw(*sentinel)), "the sentinel never came"
    else:  # this role may read nothing at all: give a denied message a generous second to show up
        time.sleep(1.0)
    assert not subscriber.saw(topic, payload)


# -- the product's clients through the ACL -----------------------------------------------------


def _api_settings(broker: Broker, tmp_path: Path, prefix: str, role: str = "api") -> Settings:
    user, password = broker.accounts[role]
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        evidence_dir=tmp_path / "evidence",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_username=user,
        mqtt_password=SecretStr(password),
        mqtt_topic_prefix=prefix,
        mqtt_client_id=f"acl-api-{uuid.uuid4().hex[:8]}",
    )


def _detector(
    broker: Broker, tmp_path: Path, prefix: str, role: str = "detector"
) -> tuple[PahoCommunicator, Outbox, Publisher]:
    user, password = broker.accounts[role]
    worker = f"acl-det-{uuid.uuid4().hex[:8]}"
    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        worker=worker,
        topic_prefix=prefix,
        username=user,
        password=password,
    )
    comm = PahoCommunicator(settings).start()
    outbox = Outbox(tmp_path / f"{worker}.sqlite3")
    return comm, outbox, Publisher(comm, outbox, topic_prefix=prefix, poll_s=0.1)


@pytest.mark.parametrize(
    ("publisher_role", "allowed"), [("detector", True), ("survey", True), ("api", False)]
)
def test_a_published_violation_becomes_a_case_through_the_acl(
    broker: Broker, tmp_path: Path, topic_prefix: str, publisher_role: str, allowed: bool
) -> None:
    """detector (or survey) account -> broker -> api account -> case. The api account cannot publish
    events: its event is refused (PUBACK 135), kept in its outbox, and makes no case, while a
    detector's event after it still does."""
    settings = _api_settings(broker, tmp_path, topic_prefix)
    engine = create_db_engine(settings.database_url)
    run_migrations(engine)
    sessions = create_session_factory(engine)
    store = EvidenceStore(settings.evidence_dir)
    store.ensure_writable()
    ingest = MqttIngest(settings, sessions, store)
    ingest.start()
    comm, outbox, pub = _detector(broker, tmp_path, topic_prefix, publisher_role)
    d_comm, d_outbox, d_pub = _detector(broker, tmp_path, topic_prefix, "detector")
    first, second = make_event(1, stream="cam-acl"), make_event(2, stream="cam-acl")
    try:
        assert wait_for(lambda: ingest.connected, 15), ingest.stats()["last_error"]
        assert comm.wait_connected(15) and d_comm.wait_connected(15)
        time.sleep(0.5)  # the ingest's SUBACK follows its CONNACK
        pub.publish_event(first)
        assert pub.flush(20 if allowed else 3) is allowed
        assert outbox.count() == (0 if allowed else 1)
        d_pub.publish_event(second)
        assert d_pub.flush(20)
        want = {first["violation_id"], second["violation_id"]} if allowed else {second["violation_id"]}
        assert wait_for(lambda: ingest.stats()["counts"]["created"] == len(want), 15), ingest.stats()
        with sessions() as session:
            assert set(session.scalars(select(Case.violation_id))) == want
    finally:
        for p, c, o in ((pub, comm, outbox), (d_pub, d_comm, d_outbox)):
            p.stop()
            c.stop()
            o.close()
        ingest.stop()
        engine.dispose()


def test_recheck_round_trip_through_the_acl(broker: Broker, tmp_path: Path, topic_prefix: str) -> None:
    """The API's re-check client (api account) sends a command, the detector account gets it and
    answers on the agreed topic; an answer the detector sends elsewhere never reaches anyone."""
    settings = _api_settings(broker, tmp_path, topic_prefix)
    engine = create_db_engine(settings.database_url)
    run_migrations(engine)
    answers: list[tuple[str, bytes]] = []

    def handler(_session: Session, topic: str, payload: bytes) -> IngestResult:
        answers.append((topic, payload))
        return IngestResult(IngestOutcome.updated)

    api = RecheckMqtt(settings, create_session_factory(engine), handler)
    api.start()
    comm, outbox, pub = _detector(broker, tmp_path, topic_prefix)
    commands: list[ReceivedMessage] = []
    try:
        assert wait_for(lambda: api.connected, 15) and comm.wait_connected(15)
        comm.subscribe(f"{topic_prefix}/commands/recheck/+", commands.append)
        time.sleep(0.5)  # both SUBACKs
        assert api.publish(f"{topic_prefix}/commands/recheck/cam-acl", b"command")
        assert wait_for(lambda: commands), "the detector got no command"
        # a forged reply_topic pointing at another stream's commands: the broker refuses it
        comm.publish(f"{topic_prefix}/commands/recheck/cam-other", b"answer elsewhere", qos=1).wait(5)
        comm.publish(f"{topic_prefix}/recheck-results/cam-acl", b"answer", qos=1).wait(5)
        assert wait_for(lambda: answers), "the API got no answer"
        assert answers == [(f"{topic_prefix}/recheck-results/cam-acl", b"answer")]
        assert api.publish(f"{topic_prefix}/commands/recheck/cam-acl", b"sentinel")
        assert wait_for(lambda: len(commands) == 2), "the detector got no second command"
        assert [m.payload for m in commands] == [b"command", b"sentinel"]  # nothing in between
    finally:
        pub.stop()
        comm.stop()
        outbox.close()
        api.stop()
        engine.dispose()


def test_the_example_mosquitto_conf_runs_as_shipped(tmp_path: Path, topic_prefix: str) -> None:
    """deploy/mosquitto/mosquitto.conf with only its paths and ports changed: no anonymous client on
    either listener; a detector's event published on loopback reaches the api account over TLS."""
    d = tmp_path
    ca = ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=citywatch-test-ca"]
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", *ca, cwd=d
    )
    _issue("server", "localhost", d, server=True)
    (d / "acl").write_text(rewritten_acl())
    accounts = write_passwords(d / "passwd")
    (d / "data").mkdir()
    plain, tls = free_port(), free_port()
    text = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for old, new in [
        ("listener 1883 127.0.0.1", f"listener {plain} 127.0.0.1"),
        ("listener 8883", f"listener {tls} 127.0.0.1"),
        ("/etc/mosquitto/certs/", f"{d}/"),
        ("/etc/mosquitto/passwd", str(d / "passwd")),
        ("/etc/mosquitto/acl", str(d / "acl")),
        ("/var/lib/mosquitto/", f"{d}/data/"),
        ("log_dest syslog", "log_dest stdout"),
    ]:
        assert old in text, f"{old!r} is no longer in mosquitto.conf: update this test"
        text = text.replace(old, new)
    with mosquitto(d / "broker", text, accounts, port=plain) as broker:
        clients = [
            Client(broker, None, None),
            Client(broker, None, None, port=tls, ca=d / "ca.crt"),
            Client(broker, *accounts["api"], port=tls, ca=d / "ca.crt"),
            Client(broker, *accounts["detector"]),
        ]
        anon_plain, anon_tls, api, detector = clients
        try:
            assert anon_plain.connack == anon_tls.connack == ["Not authorized"]
            assert api.connected and detector.connected, (api.connack, detector.connack)
            api.subscribe(f"{topic_prefix}/violations/+")
            event = (f"{topic_prefix}/violations/cam-1", uuid.uuid4().bytes)
            assert detector.publish(f"{topic_prefix}/commands/recheck/cam-1", b"forged") == NOT_AUTHORIZED
            assert detector.publish(*event) == 0
            assert wait_for(lambda: api.saw(*event))
        finally:
            for client in clients:
                client.close()
