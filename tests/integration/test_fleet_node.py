"""One fleet node (detector/fleet/node.py) driven directly, without Ray, on the test broker and the scenario
clips (cam-demo-01 / cam-demo-02 of streams.yaml):

1. a node starts with no stream, runs the streams it is handed (each state says which node), hands back a
   checkpoint for a stream it stops, and stops;
2. a stream moved with its checkpoint to a second node goes on where it stopped: no frame judged twice, no
   event sent twice, and the violation ids of a run that was never interrupted;
3. the outbox a dead node left on the disk is adopted (its WAL with it) and delivered; a living node's is not.

The model is a test double that sees one parked car in cam-demo-01's no-parking zone on every frame (so a
violation opens after the stream's 60 s dwell): what is tested is the node, not the model, and a model
that answers the same for every frame keeps the two runs comparable whatever the batching.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.commands import run
from detector.commands.run import load
from detector.config import LoadedConfig, StreamConfig
from detector.config.model import ModelConfig
from detector.contracts.detections import Detections
from detector.contracts.manifest import load_manifest
from detector.delivery.outbox import Outbox
from detector.fleet.node import CLAIMED, FleetNode, worker_name
from detector.inference import InferenceBackend
from detector.inference.model import LoadedModel
from detector.inference.rule_models import load_rule_models
from detector.pipeline import SEQ_PER_S, ModelInfo
from tests.conftest import unique_topic_prefix
from tests.e2e.helpers import make_test_config
from tests.integration.rtsp_helpers import MqttRecorder

pytestmark = pytest.mark.mqtt

WORKER = "cw-fleet"
PARKED = "cam-demo-01"  # the double's car stands in its zone no-parking-east
OTHER = "cam-demo-02"
CAR = (0.58, 0.58, 0.64, 0.72)  # x1, y1, x2, y2 over the frame: bottom centre (0.61, 0.72) in no-parking-east


class ParkedCar(InferenceBackend):
    """Sees the same parked car on every frame, as its model's vehicle class."""

    name = "onnx"

    def __init__(self, class_names: Sequence[str], vehicle: str) -> None:
        self.class_names, self.imgsz, self.conf, self.iou = list(class_names), 64, 0.25, 0.5
        self.vehicle = self.class_names.index(vehicle)

    def infer(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for img in images:
            h, w = img.shape[:2]
            box = np.array([[CAR[0] * w, CAR[1] * h, CAR[2] * w, CAR[3] * h]], np.float32)
            out.append(
                Detections.from_arrays(box, np.array([0.9], np.float32), [self.vehicle], self.class_names)
            )
        return out

    def close(self) -> None:
        pass


def fake_load(cfg: ModelConfig, threads: int | None, base_dir: Path | None) -> LoadedModel:
    entry = load_manifest().get(cfg.name)
    vehicle = next(c for c in entry.classes if entry.rule_labels.get(c) == "vehicle")
    info = ModelInfo(entry.name, entry.version, "0" * 64, tuple(entry.classes), dict(entry.rule_labels))
    return LoadedModel(ParkedCar(entry.classes, vehicle), info, Path("/nowhere"), "onnx")


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[LoadedConfig, str], FleetNode]]:
    """Makes fleet nodes (on the model double); every node made is shut down at the end."""
    monkeypatch.setattr(run, "load_rule_models", partial(load_rule_models, loader=fake_load))
    made: list[FleetNode] = []

    def make(loaded: LoadedConfig, node: str) -> FleetNode:
        made.append(FleetNode(loaded, node, threads=1))
        return made[-1]

    yield make
    for node in made:
        if not node.det.stop_event.is_set():
            node.shutdown(within_s=15)


def config(tmp_path: Path, broker: tuple[str, int], prefix: str) -> LoadedConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = make_test_config(
        tmp_path, [PARKED, OTHER], host=broker[0], port=broker[1], prefix=prefix, worker=WORKER
    )
    return load(path)


def stream(loaded: LoadedConfig, sid: str, speed: float) -> StreamConfig:
    """The stream of the config, played at ``speed`` times real time (0: as fast as it decodes)."""
    s = next(s for s in loaded.config.enabled_streams if s.id == sid)
    return s.model_copy(update={"file_speed": speed})


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.02)
    return value


def frame_time(event: dict[str, Any]) -> float:
    """The frame time of the sample that made ``event`` (``seq``: tenths of a second since first seen)."""
    first_seen = datetime.fromisoformat(str(event["first_seen"])).timestamp()
    return first_seen + int(event["seq"]) // 2 / SEQ_PER_S


# ---------------------------------------- 1. streams come and go


def test_a_node_runs_the_streams_it_is_handed_and_hands_back_their_checkpoints(
    fleet: Callable[[LoadedConfig, str], FleetNode],
    mqtt_broker: tuple[str, int],
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    rec = MqttRecorder(*mqtt_broker, [f"{topic_prefix}/streams/+/state", f"{topic_prefix}/status/+"])
    loaded = config(tmp_path, mqtt_broker, topic_prefix)
    node = fleet(loaded, "node-a")
    try:
        assert node.ping() == node.name == worker_name(WORKER, "node-a") == "cw-fleet-node-a"
        assert node.det.outbox is not None and node.det.outbox.path.name == "cw-fleet-node-a.sqlite3"
        assert (node.streams(), node.states(), node.checkpoints(), node.finished()) == ([], {}, {}, [])

        slow, fast = stream(loaded, PARKED, 10.0), stream(loaded, OTHER, 0.0)
        assert node.start_streams([(slow, None), (fast, None)]) == [PARKED, OTHER]
        assert node.start_streams([(slow, None)]) == [PARKED]  # already running here: not started twice
        assert len(node.det.workers) == 2
        assert node.streams() == [PARKED, OTHER]
        assert len(node.det.workers) == 2

        wait_for(lambda: node.finished() == [OTHER], 30, f"{OTHER} to be read to its end")
        wait_for(lambda: node.det.pipelines[PARKED].samples >= 3, 15, f"samples of {PARKED}")
        states = node.states()
        assert {sid: st["node"] for sid, st in states.items()} == {PARKED: "node-a", OTHER: "node-a"}
        assert states[OTHER]["state"] == "finished" and states[PARKED]["state"] == "live"
        rec.wait_for(
            lambda: any(v.get("node") == "node-a" for v, _ in rec.of(f"/{PARKED}/state")), 20, "state"
        )
        assert set(node.checkpoints()) == {PARKED, OTHER}

        pipe = node.det.pipelines[PARKED]
        out = node.stop_streams([PARKED, "cam-not-here"])
        assert out["cam-not-here"] is None
        checkpoint = out[PARKED]
        assert isinstance(checkpoint, bytes)
        assert pipe.last_ts is not None and pickle.loads(checkpoint)["last_ts"] == pipe.last_ts
        assert pipe.samples >= 3
        assert node.streams() == [OTHER]
        assert [w.stream.id for w in node.det.workers] == [OTHER]
        assert (
            PARKED not in node.states()
            and PARKED not in node.det.pipelines
            and PARKED not in node.checkpoints()
        )
        # finished() says nothing while the service still holds a frame (the stopped stream's last one may be
        # in flight under load), so wait for it to answer
        wait_for(lambda: node.finished() == [OTHER], 15, f"{OTHER} still reported finished")
    finally:
        node.shutdown(within_s=15)
    assert node.det.stop_event.is_set()
    assert not any(w.is_alive() for w in node.det.workers)
    rec.wait_for(lambda: [v for v, _ in rec.of("/status/cw-fleet-node-a")][-1:] == ["offline"], 10, "offline")
    rec.close()


# ---------------------------------------- 2. a stream moves with its checkpoint


def test_a_stream_moved_with_its_checkpoint_goes_on_where_it_stopped(
    fleet: Callable[[LoadedConfig, str], FleetNode],
    mqtt_broker: tuple[str, int],
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    solo_prefix = unique_topic_prefix("fleet-solo")
    rec = MqttRecorder(*mqtt_broker, [f"{topic_prefix}/violations/#", f"{solo_prefix}/violations/#"])
    moved_cfg = config(tmp_path / "moved", mqtt_broker, topic_prefix)
    solo_cfg = config(tmp_path / "solo", mqtt_broker, solo_prefix)

    def by(prefix: str) -> list[dict[str, Any]]:
        with rec.lock:
            return [v for t, v, _ in rec.messages if t == f"{prefix}/violations/{PARKED}"]

    # the run never interrupted: one node, the whole clip
    solo = fleet(solo_cfg, "solo")
    solo.start_streams([(stream(solo_cfg, PARKED, 0.0), None)])
    # the same clip on node a, stopped once its violation opened; its checkpoint goes to node b
    a = fleet(moved_cfg, "node-a")
    a.start_streams([(stream(moved_cfg, PARKED, 30.0), None)])
    pipe_a = a.det.pipelines[PARKED]
    wait_for(lambda: pipe_a.events_sent >= 1, 30, "the violation to open on node a")
    checkpoint = a.stop_streams([PARKED])[PARKED]
    assert checkpoint is not None and a.streams() == []
    last = pipe_a.last_ts
    assert last is not None and pickle.loads(checkpoint)["last_ts"] == last
    rec.wait_for(lambda: len(by(topic_prefix)) >= pipe_a.events_sent, 10, "node a's events")  # flushed

    b = fleet(moved_cfg, "node-b")
    assert b.start_streams([(stream(moved_cfg, PARKED, 0.0), checkpoint)]) == [PARKED]
    wait_for(
        lambda: b.finished() == [PARKED] and solo.finished() == [PARKED], 60, "both runs to the clip's end"
    )
    assert b.states()[PARKED]["node"] == "node-b"
    pipe_b, pipe_solo = b.det.pipelines[PARKED], solo.det.pipelines[PARKED]
    [worker_b] = b.det.workers
    b.shutdown(within_s=15)
    solo.shutdown(within_s=15)

    want_moved = pipe_a.events_sent + pipe_b.events_sent
    rec.wait_for(
        lambda: len(by(topic_prefix)) >= want_moved and len(by(solo_prefix)) >= pipe_solo.events_sent,
        15,
        "events",
    )
    time.sleep(0.3)  # nothing more comes
    moved, uninterrupted = by(topic_prefix), by(solo_prefix)
    rec.close()
    assert len(moved) == want_moved and len(uninterrupted) == pipe_solo.events_sent

    # node b judged only the frames after the checkpoint: every sample exactly once over the two nodes
    samples = {"a": pipe_a.samples, "b": pipe_b.samples, "b skipped": worker_b.skipped_backwards}
    assert samples == {"a": samples["a"], "b": pipe_solo.samples - samples["a"], "b skipped": samples["a"]}
    from_b = moved[pipe_a.events_sent :]
    assert from_b and all(frame_time(e) > last for e in from_b)
    keys = [(e["violation_id"], e["seq"], e["event"]) for e in moved]
    assert len(keys) == len(set(keys)), "an event was sent twice"

    # the same violations as the run never interrupted, each opened once
    opened = [e["violation_id"] for e in moved if e["event"] == "opened"]
    assert opened == [e["violation_id"] for e in uninterrupted if e["event"] == "opened"]
    assert len(opened) == 1
    assert {e["violation_id"] for e in moved} == {e["violation_id"] for e in uninterrupted}
    assert [e for e in from_b if e["event"] == "opened"] == []


# ---------------------------------------- 3. orphaned outboxes


def put(box: Outbox, topic: str, *bodies: str) -> None:
    for body in bodies:
        box.put(topic, json.dumps({"body": body}).encode())


def test_the_outbox_a_dead_node_left_is_adopted_and_delivered(
    fleet: Callable[[LoadedConfig, str], FleetNode],
    mqtt_broker: tuple[str, int],
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    topic = f"{topic_prefix}/adopted"
    rec = MqttRecorder(*mqtt_broker, [topic])
    node = fleet(config(tmp_path, mqtt_broker, topic_prefix), "node-a")
    assert node.det.outbox is not None
    folder = node.det.outbox.path.parent

    # a node killed with its events still in the WAL: the database and its -wal / -shm as it left them
    live = Outbox(tmp_path / "elsewhere" / "dead.sqlite3")
    put(live, topic, "dead-1", "dead-2", "dead-3")
    assert (tmp_path / "elsewhere" / "dead.sqlite3-wal").stat().st_size > 0
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(
            tmp_path / "elsewhere" / f"dead.sqlite3{suffix}", folder / f"cw-fleet-node-dead.sqlite3{suffix}"
        )
    live.close()
    # this node's own claim that stopped part-way, and one of a node that died while adopting
    with Outbox(folder / f"cw-fleet-node-old{CLAIMED}cw-fleet-node-a.sqlite3") as box:
        put(box, topic, "half-1", "half-2")
    with Outbox(folder / f"cw-fleet-node-old2{CLAIMED}cw-fleet-node-gone.sqlite3") as box:
        put(box, topic, "claim-of-the-dead")
    # left alone: a living node's outbox, a living node's claim, another detector's outbox
    left_alone = {
        "cw-fleet-node-b.sqlite3": "living",
        f"cw-fleet-node-x{CLAIMED}cw-fleet-node-b.sqlite3": "claimed-by-living",
        "detector-1.sqlite3": "not-ours",
    }
    for name, body in left_alone.items():
        with Outbox(folder / name) as box:
            put(box, topic, body)

    assert node.adopt_orphans([node.name, "cw-fleet-node-b"]) == 6
    want = {"dead-1", "dead-2", "dead-3", "half-1", "half-2", "claim-of-the-dead"}
    rec.wait_for(lambda: {v["body"] for v, _ in rec.of("/adopted")} >= want, 15, "the adopted events")
    wait_for(lambda: node.det.outbox is not None and node.det.outbox.count() == 0, 10, "the outbox to drain")
    time.sleep(0.3)
    got = [v["body"] for v, _ in rec.of("/adopted")]
    rec.close()
    assert sorted(got) == sorted(want)  # each once, nothing of the others

    names = {p.name for p in folder.iterdir()}
    assert not any("node-dead" in n or "node-old" in n for n in names), names  # gone, WAL and all
    assert set(left_alone) <= names
    for name in left_alone:
        with Outbox(folder / name) as box:
            assert box.count() == 1
    assert node.adopt_orphans([node.name, "cw-fleet-node-b"]) == 0
