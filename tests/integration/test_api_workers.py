"""Two API workers (real processes) on one PostgreSQL, in one MQTT shared subscription group.

They start at the same moment on a database created empty: the schema is migrated once (one
``alembic_version`` row at head; one worker logs ``migrated``, the other ``already at``). A real
detector run (both scenario clips, ``COPIES`` times each under other stream ids and places) goes to
the group while both are stopped: the broker queues each one's share in its persistent session, and
restarted together they ingest in concurrent batches, the events of one violation split between
them. Every violation of the ground truth is then exactly one case, in its final state, the same
through either worker; both ingested; the evidence (one store: ``CITYWATCH_EVIDENCE_DIR``) is
served by both.

Re-check across workers, deterministically: a case is disposed through worker A; once its command
is out, A stops and its re-check session is cleared from the broker, so the group's only member is
B and the answer reaches B. Then the same the other way round. Each request goes out exactly once
(a subscriber counts the commands), each answer closes its case with one history event, and both
workers (the stopped one restarted) read the case closed with the camera's after-image.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from api.core.evidence import jpeg_size
from api.core.migrate import head_revision
from api.ingest.sample import sample_jpeg
from detector.contracts.recheck import answer_topic, build_result
from tests.api_support import fresh_database
from tests.e2e.helpers import REPO, load_truth, make_test_config, scenario_truths, stream_for_video
from tests.e2e.test_end_to_end import run_detector
from tests.integration.conftest import wait_until
from tests.live_api import free_port
from tests.mosquitto import account

pytestmark = [pytest.mark.slow, pytest.mark.mqtt, pytest.mark.postgres]

COPIES = 2  # each clip under this many stream ids: 5 cases and ~16 events per copy


@dataclass
class Worker:
    """One ``python -m api`` process; ``start`` again after ``stop`` keeps its port, client id and log."""

    name: str
    env: dict[str, str]
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = self.env["CITYWATCH_MQTT_CLIENT_ID"]
        self.log = self.folder / f"api-{self.name}.log"

    def start(self) -> None:
        with self.log.open("a") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api", "--port", str(self.port), "--access-log", "off"],
                env={**os.environ, **self.env},
                cwd=self.folder,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=5).json()
        return body

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                metrics = httpx.get(f"{self.url}/metrics", timeout=2).text
                return bool(self.health()["ingest"].get("connected")) and (
                    'citywatch_api_mqtt_connected{client="recheck"} 1.0' in metrics
                )
            except (httpx.HTTPError, ValueError):
                return False

        wait_until(ready, timeout, f"worker {self.name} to be ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str, **kw: Any) -> Any:
        r = httpx.get(f"{self.url}{path}", timeout=10, **kw)
        assert r.status_code == 200, f"{self.name} GET {path}: {r.status_code} {r.text[:300]}"
        return r

    def post(self, path: str, role: str, **kw: Any) -> dict[str, Any]:
        r = httpx.post(
            f"{self.url}{path}", headers={"X-API-Key": f"citywatch-dev-{role}-key"}, timeout=10, **kw
        )
        assert r.status_code == 200, f"{self.name} POST {path}: {r.status_code} {r.text[:300]}"
        data: dict[str, Any] = r.json()
        return data

    def cases(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get("/cases", params={"page_size": 200}).json()["data"]
        return sorted(data, key=lambda c: c["id"])


@pytest.fixture
def empty_db(pg_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own, created empty (``pg_url``'s is shared and already migrated)."""
    with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def workers(
    tmp_path: Path, empty_db: str, mqtt_broker: tuple[str, int], topic_prefix: str
) -> Iterator[tuple[Worker, Worker]]:
    shared = {  # what a deployment gives every worker alike
        "CITYWATCH_DEV_MODE": "true",
        "CITYWATCH_ANONYMOUS_READ": "true",
        "CITYWATCH_DATABASE_URL": empty_db,
        "CITYWATCH_EVIDENCE_DIR": str(tmp_path / "evidence"),  # one store for all workers
        "CITYWATCH_MQTT_HOST": mqtt_broker[0],
        "CITYWATCH_MQTT_PORT": str(mqtt_broker[1]),
        "CITYWATCH_MQTT_TOPIC_PREFIX": topic_prefix,
        "CITYWATCH_MQTT_SHARED_GROUP": f"api-{uuid.uuid4().hex[:8]}",
        "CITYWATCH_TOKEN_SECRET": uuid.uuid4().hex,
    }
    login = account("api")  # CITYWATCH_TEST_BROKER=acl
    if login is not None:
        shared.update(CITYWATCH_MQTT_USERNAME=login[0], CITYWATCH_MQTT_PASSWORD=login[1])
    run = uuid.uuid4().hex[:8]
    pair = tuple(
        Worker(name, {**shared, "CITYWATCH_MQTT_CLIENT_ID": f"workers-{run}-{name}"}, tmp_path)
        for name in ("a", "b")
    )
    try:
        for w in pair:
            w.start()  # at the same moment: both migrate the empty database
        for w in pair:
            w.wait_ready()
        yield pair  # type: ignore[misc]
    finally:
        for w in pair:
            w.stop()
        for w in pair:  # the broker keeps persistent sessions: leave none behind
            for client_id in (w.client_id, f"{w.client_id}-recheck"):
                clear_session(mqtt_broker, client_id)


def clear_session(broker: tuple[str, int], client_id: str) -> None:
    """Connect as ``client_id`` with a clean session: the broker drops that session and its
    subscriptions (a retired worker's share of a shared subscription goes to the others)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    login = account("api")
    if login is not None:
        client.username_pw_set(login[0], login[1])
    client.connect(*broker)
    client.loop_start()
    try:
        wait_until(client.is_connected, 10, f"a connection as {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


class CommandLog:
    """Every re-check command the API workers publish, and a publisher of the camera's answers
    (the detector's side of detector/contracts/RECHECK.md)."""

    def __init__(self, broker: tuple[str, int], prefix: str) -> None:
        self.prefix = prefix
        self.commands: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"workers-cmd-{uuid.uuid4().hex[:8]}"
        )
        login = account("detector")
        if login is not None:
            self._client.username_pw_set(login[0], login[1])
        self._client.on_connect = lambda c, *_a: c.subscribe(f"{prefix}/commands/recheck/+", qos=1)
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(*broker)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the command subscription was not granted"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.commands.append(json.loads(message.payload))

    def for_case(self, case_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.commands if c["case_id"] == case_id]

    def answer_absent(self, command: dict[str, Any]) -> str:
        """Publish the camera's ``absent`` answer; returns the after-image's sha256."""
        jpeg = sample_jpeg(command["request_id"])
        digest = hashlib.sha256(jpeg).hexdigest()
        size = jpeg_size(jpeg)
        assert size is not None
        answer = build_result(
            request_id=command["request_id"],
            case_id=command["case_id"],
            stream=command["stream"],
            present=False,
            score=None,
            bbox=None,
            jpeg=jpeg,
            sha256=digest,
            captured_at=time.time(),
            width=size[0],
            height=size[1],
            checked_at=datetime.now(UTC),
            detector="workers-test-camera",
        )
        info = self._client.publish(answer_topic(self.prefix, command["stream"]), json.dumps(answer), qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
        return digest

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def detector_config(tmp_path: Path, broker: tuple[str, int], prefix: str) -> tuple[Path, dict[str, set[Any]]]:
    """streams.yaml with both clips ``COPIES`` times (copies ~1 km apart: the desk's duplicate check
    keeps them apart), and per stream the (rule, zone, leaves) of its clip's ground truth."""
    truths = {stream_for_video(load_truth(p)["video"]): load_truth(p) for p in scenario_truths()}
    base = yaml.safe_load((REPO / "streams.yaml").read_text())["streams"]
    copies = []
    for n in range(1, COPIES):
        for s in (s for s in base if s["id"] in truths):
            loc = dict(s["location"], lat=s["location"]["lat"] + 0.01 * n)
            url = str((REPO / s["url"]).resolve())
            copies.append({**s, "id": f"{s['id']}-copy{n}", "url": url, "file_speed": 0, "location": loc})
    cfg = make_test_config(
        tmp_path,
        sorted(truths),
        host=broker[0],
        port=broker[1],
        prefix=prefix,
        worker=f"workers-det-{uuid.uuid4().hex[:8]}",
        extra_streams=tuple(copies),
    )
    data = yaml.safe_load(cfg.read_text())
    data["collect"]["enabled"] = False
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    expected = {}
    for s in data["streams"]:
        truth = truths[s["id"].split("-copy")[0]]
        expected[s["id"]] = {(v["rule"], v["zone"], v["leaves"]) for v in truth["violations"]}
    return cfg, expected


def settled(pair: tuple[Worker, Worker], want: int) -> list[dict[str, Any]]:
    """The cases once both workers agree on them, hold no message and nothing changed for 2 s."""
    last: list[Any] = []
    since = time.monotonic()

    def quiet() -> list[dict[str, Any]] | None:
        nonlocal last, since
        views = [w.cases() for w in pair]
        queued = sum(w.health()["ingest"]["queued"] for w in pair)
        key = [[(c["id"], c["updated_at"]) for c in v] for v in views]
        if key != last or queued:
            last, since = key, time.monotonic()
            return None
        done = views[0] == views[1] and len(views[0]) >= want and time.monotonic() - since > 2.0
        return views[0] if done else None

    result: list[dict[str, Any]] = wait_until(quiet, 60, f"{want} cases on both workers")
    return result


def test_two_workers_share_a_run_and_each_others_rechecks(
    workers: tuple[Worker, Worker],
    empty_db: str,
    mqtt_broker: tuple[str, int],
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    a, b = workers
    # -- the migration ran once, on the empty database
    import psycopg

    with psycopg.connect(empty_db.replace("+psycopg", "")) as conn:
        versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    assert versions == [head_revision()]
    said = sorted(
        (w.log.read_text().count("database migrated from"), w.log.read_text().count("schema already at"))
        for w in workers
    )
    assert said == [(0, 1), (1, 0)], said  # one worker migrated, the other found it done

    # -- one detector run, ingested by both. Both are away while it runs: the broker queues each
    # one's share in its session, and on their return they ingest together, in batches of events
    # whose violations are split between them (a live run trickles in one event at a time)
    config, expected = detector_config(tmp_path, mqtt_broker, topic_prefix)
    for w in workers:
        w.stop()
    run_detector(config, tmp_path, "detector")
    for w in workers:
        w.start()
    for w in workers:
        w.wait_ready()
    want = sum(len(v) for v in expected.values())
    cases = settled(workers, want)
    assert len({c["violation_id"] for c in cases}) == len(cases) == want, cases
    got: dict[str, set[Any]] = {}
    for c in cases:
        assert c["source"] == "camera" and c["status"] == "candidate", c
        got.setdefault(c["stream"], set()).add((c["rule"], c["zone"], c["violation_state"] == "cleared"))
    assert got == expected
    ingested = {w.name: w.health()["ingest"] for w in workers}
    assert all(i["events_ingested"] > 0 for i in ingested.values()), ingested
    assert all(i["dead_letters"] == 0 for i in ingested.values()), ingested
    for c in cases:  # written by whichever worker took the event, served by both
        for w in workers:
            jpeg = w.get(f"/cases/{c['id']}/evidence").content
            assert hashlib.sha256(jpeg).hexdigest() == c["evidence_sha256"], (w.name, c)

    # -- re-check: disposed through one worker, answered to the other (and the other way round)
    parking = [c for c in cases if c["rule"] == "illegal_parking" and c["stream"].startswith("cam-demo-01")]
    assert len(parking) >= 2, cases
    commands = CommandLog(mqtt_broker, topic_prefix)
    try:
        recheck_across(int(parking[0]["id"]), a, b, commands, mqtt_broker)
        recheck_across(int(parking[1]["id"]), b, a, commands, mqtt_broker)
        time.sleep(1.5)  # both senders have polled the outbox since (recheck_poll_s = 1)
        for case in parking[:2]:
            assert len(commands.for_case(int(case["id"]))) == 1, commands.commands
        assert len(commands.commands) == 2, commands.commands
    finally:
        commands.close()


def recheck_across(
    cid: int, asked: Worker, answering: Worker, commands: CommandLog, broker: tuple[str, int]
) -> None:
    """Dispose ``cid`` through ``asked``; once its command is out, stop ``asked`` and clear its
    re-check session, so the answer reaches ``answering`` only; then read the outcome through both
    (``asked`` restarted)."""
    asked.post(f"/cases/{cid}/register", "reviewer", json={})
    asked.post(f"/cases/{cid}/dispatch", "dispatcher", json={"unit": "hgc-squad"})
    asked.post(f"/cases/{cid}/accept", "unit", json={})
    out = asked.post(f"/cases/{cid}/dispose", "unit", data={"note": "towed"})
    assert out["recheck_queued"] and out["case"]["status"] == "verifying"

    def statuses() -> list[str]:
        return [r["status"] for r in answering.get(f"/cases/{cid}/rechecks").json()]

    sent = wait_until(lambda: commands.for_case(cid), 20, f"the re-check command of case {cid}")
    wait_until(lambda: statuses() == ["sent"], 20, "the command marked sent")
    asked.stop()
    clear_session(broker, f"{asked.client_id}-recheck")
    after = commands.answer_absent(sent[0])
    wait_until(
        lambda: answering.get(f"/cases/{cid}").json()["status"] == "closed",
        20,
        f"case {cid} closed by worker {answering.name}",
    )
    asked.start()
    asked.wait_ready()
    for w in (asked, answering):
        closed = w.get(f"/cases/{cid}").json()
        assert closed["status"] == "closed" and closed["after_evidence_sha256"] == after, closed
        events = w.get(f"/cases/{cid}/events").json()["data"]
        by_camera = [e for e in events if e["actor"] == "detector:workers-test-camera"]
        assert len(by_camera) == 1 and by_camera[0]["to_status"] == "closed", events
        image = w.get(f"/cases/{cid}/events/{by_camera[0]['id']}/evidence").content
        assert hashlib.sha256(image).hexdigest() == after  # written by one worker, served by both
        rechecks = w.get(f"/cases/{cid}/rechecks").json()
        assert [r["status"] for r in rechecks] == ["answered"], rechecks
