"""A detector's stream worker reads a bundled clip and publishes its state and snapshot (as `citywatch run`
wires them: detector/commands/run.py) on a real broker; a case API started afterwards gets both
(retained) and serves them on GET /streams and GET /streams/{id}/snapshot. With
CITYWATCH_TEST_BROKER=acl both log in with their own accounts of the shipped ACL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.core.config import Settings
from api.main import create_app
from detector.config import load_config_text
from detector.delivery.mqtt import MqttSettings, PahoCommunicator
from detector.delivery.outbox import Outbox
from detector.delivery.publisher import Publisher
from detector.delivery.snapshots import Snapshots
from detector.sources import Frame
from detector.sources.worker import StreamWorker
from tests.api_support import auth
from tests.mosquitto import account

pytestmark = pytest.mark.mqtt

CLIP = Path(__file__).resolve().parents[2] / "training" / "synth" / "scenarios" / "street-demo.mp4"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'api.db'}"


@pytest.fixture
def detector(
    mqtt_broker: tuple[str, int], topic_prefix: str, tmp_path: Path
) -> Iterator[tuple[str, Snapshots, Callable[[], None]]]:
    """A stream worker on the clip, its frames to the snapshots, its states to the publisher."""
    stream_id = f"cam-{uuid.uuid4().hex[:6]}"
    text = (
        f"version: 1\nsnapshot_s: 60\nstreams:\n  - id: {stream_id}\n    url: {CLIP}\n"
        "    sample_interval_s: 0.5\n    file_speed: 1\n"
    )
    cfg = load_config_text(text, environ={}).config
    login = account("detector")
    user, password = (login[0], login[1]) if login else (None, None)
    settings = MqttSettings(
        host=mqtt_broker[0],
        port=mqtt_broker[1],
        worker=f"det-{stream_id}",
        topic_prefix=topic_prefix,
        username=user,
        password=password,
    )
    comm = PahoCommunicator(settings).start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    publisher = Publisher(comm, outbox, topic_prefix=topic_prefix, poll_s=0.1)
    snapshots = Snapshots(comm, lambda _sid: cfg.snapshot_s, topic_prefix=topic_prefix)

    def on_frame(frame: Frame, _block: bool) -> None:  # Detector._submit, without inference
        snapshots.on_frame(frame.stream_id, frame.image)

    def on_state(sid: str, state: dict[str, Any]) -> None:  # Detector._state
        snapshots.on_state(sid, state)
        publisher.publish_state(sid, state)

    stop = threading.Event()
    worker = StreamWorker(cfg.streams[0], tmp_path, on_frame, on_state, stop)

    def start() -> None:
        assert comm.wait_connected(15), "the detector did not connect"
        worker.start()

    try:
        yield stream_id, snapshots, start
    finally:
        worker.stop()
        worker.join(10)
        publisher.stop()
        comm.stop()
        outbox.close()


def api_login(settings: Settings) -> Settings:
    login = account("api")
    if login is None:
        return settings
    return settings.model_copy(update={"mqtt_username": login[0], "mqtt_password": SecretStr(login[1])})


def test_the_api_serves_the_snapshot_the_detector_published(
    detector: tuple[str, Snapshots, Callable[[], None]],
    api_settings: Settings,
    wait_until: Callable[..., Any],
) -> None:
    stream_id, snapshots, start = detector
    start()
    wait_until(lambda: snapshots.published >= 1, 20, "the detector's first snapshot")
    # the API starts only now: what it gets is what the broker retained
    with TestClient(create_app(api_login(api_settings))) as api:
        headers = auth("reviewer")
        url = f"/streams/{stream_id}/snapshot"
        answer = wait_until(
            lambda: (r := api.get(url, headers=headers)).status_code == 200 and r,
            20,
            "the API to get the retained snapshot",
        )
        assert answer.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[1] <= 640 and image.shape[:2] == (360, 640)

        def listed() -> dict[str, Any] | None:
            body = api.get("/streams", headers=headers).json()
            found = [s for s in body["data"] if s["id"] == stream_id and s["state"]]
            return found[0] if found else None

        stream = wait_until(listed, 20, "the stream's state in GET /streams")
        assert stream["state"]["state"] in ("live", "finished")
        assert stream["state"]["sample_interval_s"] == 0.5 and stream["snapshot_at"] is not None
        assert stream["in_file"] is False and stream["zones"] is None  # no CITYWATCH_STREAMS_FILE here
