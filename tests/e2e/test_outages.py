"""Nothing is lost and nothing doubles when the broker, the detector or the API goes away in the
middle of a scenario replay (`citywatch run` on the demo clip at 4x → a private Mosquitto → the
API in its own process).

- the broker is stopped for 30 s and started again;
- the detector is killed (SIGKILL) with an event in its outbox and started again: the clip replays
  from the start (the same violation ids), the outbox entries from before the kill are delivered;
- the API is stopped (SIGKILL) for 60 s while the detector goes on, and started again.
Each time every expected case exists exactly once. The Mosquitto keeps its sessions on disk
(``persistence true``), so the QoS 1 events queued for the API's session survive its restart.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import REPO, make_test_config

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]

STREAM = "cam-demo-01"
EXPECTED = sorted(
    [
        ("illegal_parking", "no-parking-east"),
        ("street_vending", "no-vending-east"),
        ("unclean_road", "roadway"),
    ]
)
SPEED = 3.5  # the 210 s clip in ~60 s: events from ~20 s to ~50 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


class Mosquitto:
    """A private Mosquitto on a free port that keeps its sessions on disk across restarts."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.dir}/\n"
            "max_queued_messages 0\n" + ("user root\n" if os.geteuid() == 0 else "")
            # as root, mosquitto switches to its own user, which cannot write pytest's tmp_path
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        log = (self.dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(lambda: port_answers(self.port), 10, "mosquitto to listen", 0.05)
        return self

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its sessions and queued messages to disk, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class Api:
    """``python -m api`` against the private broker, a SQLite or PostgreSQL database; restartable."""

    def __init__(self, tmp: Path, broker: Mosquitto, prefix: str, database_url: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "CITYWATCH_DATABASE_URL": database_url,
                "CITYWATCH_EVIDENCE_DIR": str(tmp / "api-evidence"),
                "CITYWATCH_MQTT_HOST": "127.0.0.1",
                "CITYWATCH_MQTT_PORT": str(broker.port),
                "CITYWATCH_MQTT_TOPIC_PREFIX": prefix,
                "CITYWATCH_MQTT_CLIENT_ID": f"outage-api-{uuid.uuid4().hex[:8]}",
                "CITYWATCH_MQTT_RECONNECT_MAX_DELAY_S": "2",
                "CITYWATCH_DEV_MODE": "true",  # loopback only
                "CITYWATCH_ANONYMOUS_READ": "true",  # cases() reads without a key
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Api:
        self.starts += 1
        log = (self.tmp / f"api-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--port", str(self.port)],
            env=self.env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.connected, 90, "the API's ingest to connect", 0.3)
        return self

    def connected(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            log = (self.tmp / f"api-{self.starts}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the API exited:\n{log}")
        try:
            return bool(httpx.get(f"{self.url}/health", timeout=2).json()["ingest"].get("connected"))
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)
        self.proc = None

    def ingest(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=5).json()["ingest"]
        return data

    def cases(self) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"stream": STREAM, "page_size": 100}
        data: list[dict[str, Any]] = httpx.get(f"{self.url}/cases", params=params, timeout=10).json()["data"]
        return data

    def settled(self, want: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The stream's cases once ``want`` exist and nothing has changed for 3 s."""
        deadline = time.monotonic() + timeout
        last: list[tuple[Any, ...]] = []
        since = time.monotonic()
        while time.monotonic() < deadline:
            now = self.cases()
            key = sorted((c["id"], c["updated_at"]) for c in now)
            if key != last:
                last, since = key, time.monotonic()
            elif len(now) >= want and time.monotonic() - since > 3.0:
                return now
            time.sleep(0.3)
        return self.cases()


class Detector:
    """``python -m detector.commands.cli run --exit-when-done`` on the demo clip."""

    def __init__(self, tmp: Path, broker: Mosquitto, prefix: str) -> None:
        self.tmp = tmp
        self.worker = f"outage-{uuid.uuid4().hex[:8]}"
        self.prefix = prefix
        self.broker = broker
        self.outbox = tmp / "outbox" / f"{self.worker}.sqlite3"
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self, speed: float) -> Path:
        host, port = "127.0.0.1", self.broker.port
        path = make_test_config(
            self.tmp, [STREAM], host=host, port=port, prefix=self.prefix, worker=self.worker, file_speed=speed
        )
        named = self.tmp / f"streams-{speed:g}x.yaml"
        path.rename(named)
        return named

    def start(self, speed: float = SPEED, wait_for_broker: float = 0.0) -> Detector:
        self.runs += 1
        log = (self.tmp / f"detector-{self.runs}.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "detector.commands.cli",
            "run",
            "--config",
            str(self.config(speed)),
            "--exit-when-done",
            "--wait-for-broker",
            str(wait_for_broker),
        ]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return (self.tmp / f"detector-{self.runs}.log").read_text(errors="replace")

    def wait(self, timeout: float = 240) -> None:
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        assert rc == 0, self.log()[-3000:]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)

    def pending(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every outbox entry not acknowledged yet (read-only, works mid-run)."""
        if not self.outbox.exists():
            return []
        with sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
        return [(str(t), bytes(p)) for t, p in rows]


@pytest.fixture
def rig(
    tmp_path: Path, topic_prefix: str, default_model_ready: None
) -> Iterator[tuple[Mosquitto, Detector, Callable[[str], Api]]]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    detector = Detector(tmp_path, broker, topic_prefix)
    apis: list[Api] = []

    def make_api(database_url: str) -> Api:
        apis.append(Api(tmp_path, broker, topic_prefix, database_url).start())
        return apis[-1]

    try:
        yield broker, detector, make_api
    finally:
        if detector.proc is not None and detector.proc.poll() is None:
            detector.proc.kill()
        for api in apis:
            api.kill()
        if broker.proc is not None:
            broker.resume()
        broker.stop()


def assert_each_case_once(api: Api) -> list[dict[str, Any]]:
    got = api.settled(len(EXPECTED))
    assert sorted((c["rule"], c["zone"]) for c in got) == EXPECTED, got
    assert len({c["violation_id"] for c in got}) == len(got)
    for case in got:
        assert case["evidence_sha256"], case
    return got


def test_broker_down_30s_mid_replay(rig: Any, tmp_path: Path) -> None:
    broker, detector, make_api = rig
    api = make_api(f"sqlite:///{tmp_path / 'cases.db'}")
    detector.start()
    wait_for(api.cases, 120, "the first case")
    broker.stop()
    held = 0
    t_down = time.monotonic()
    while time.monotonic() - t_down < 30:
        held = max(held, len(detector.pending()))
        time.sleep(0.5)
    broker.start()
    assert held >= 1, "no event was produced while the broker was down: the outage missed the replay"
    detector.wait()
    assert detector.pending() == [], "the detector exited with events it could not deliver"
    assert_each_case_once(api)


def test_detector_killed_and_restarted(rig: Any, tmp_path: Path) -> None:
    broker, detector, make_api = rig
    db = tmp_path / "cases.db"
    api = make_api(f"sqlite:///{db}")
    detector.start()
    wait_for(api.cases, 120, "the first case")
    broker.pause()  # no PUBACK reaches the detector: its next event stays in the outbox
    try:
        wait_for(detector.pending, 90, "an event in the outbox", 0.05)
        detector.kill()
        left = detector.pending()
    finally:
        broker.resume()
    assert left, "the outbox lost its entries in the SIGKILL"
    detector.start(speed=0)  # the clip again from the start, as fast as possible: the same ids
    detector.wait()
    assert "outbox entries pending" in detector.log()
    assert detector.pending() == []
    assert_each_case_once(api)
    with sqlite3.connect(db) as conn:
        ingested = {str(r[0]) for r in conn.execute("SELECT payload_sha256 FROM case_events")}
    for topic, payload in left:
        assert hashlib.sha256(payload).hexdigest() in ingested, f"an outbox entry for {topic} never arrived"


@pytest.mark.postgres
def test_api_down_60s_mid_replay(rig: Any, pg_url: str) -> None:
    _broker, detector, make_api = rig
    api = make_api(pg_url)
    detector.start()
    wait_for(api.cases, 120, "the first case")
    api.kill()
    t_down = time.monotonic()
    detector.wait()  # the detector finishes its replay while the API is away
    assert detector.pending() == []
    time.sleep(max(0.0, 60 - (time.monotonic() - t_down)))
    api.start()
    assert_each_case_once(api)
    ingest = api.ingest()
    assert ingest["events_ingested"] > 0, "no event waited for the API: the outage missed the replay"
