"""A running detector (`citywatch run`'s :class:`Detector`: workers, shared inference, pipelines, outbox, MQTT
on the test broker) takes edits of its streams.yaml while two scenario clips play at twice real time.

1. a stream is added: it starts and gets samples, its state is published;
2. a zone of stream a changes: only a restarts (its pipeline has the new zone); stream b keeps its worker
   thread, its pipeline and its sample rate (samples over frame time, never wall time);
3. the YAML is broken, then a zone is made invalid: each edit is refused with `config check`'s lines
   (file:line:column, key path, hint) and nothing changes; the fixed file (which also removes the added
   stream and changes a section read at start-up) is applied: the stream stops, its retained state
   says `removed`, and the log says what needs a restart.

The model is a test double (no detections, instantly): inference speed is not what is tested here.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from detector.commands import run
from detector.commands.run import Detector, load
from detector.config import CitywatchConfig
from detector.config.model import ModelConfig
from detector.contracts.detections import Detections
from detector.contracts.manifest import REPO_ROOT, load_manifest
from detector.inference import InferenceBackend
from detector.inference.model import LoadedModel
from detector.inference.rule_models import load_rule_models
from detector.pipeline import ModelInfo
from detector.sources.worker import StreamWorker
from tests.integration.rtsp_helpers import MqttRecorder

pytestmark = pytest.mark.mqtt
SCENARIOS = REPO_ROOT / "training" / "synth" / "scenarios"
SQUARE: list[list[float]] = [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]
LEFT: list[list[float]] = [[0, 0.5], [0.5, 0.5], [0.5, 1], [0, 1]]


class NoDetections(InferenceBackend):
    name = "onnx"

    def __init__(self) -> None:
        self.class_names, self.imgsz, self.conf, self.iou = ["vehicle"], 64, 0.25, 0.5

    def infer(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [Detections.empty() for _ in images]

    def close(self) -> None:
        pass


def fake_load(cfg: ModelConfig, threads: int | None, base_dir: Path | None) -> LoadedModel:
    entry = load_manifest().get(cfg.name)
    info = ModelInfo(entry.name, entry.version, "0" * 64, tuple(entry.classes), dict(entry.rule_labels))
    return LoadedModel(NoDetections(), info, Path("/nowhere"), "onnx")


def stream(sid: str, clip: str, polygon: list[list[float]] = SQUARE, zone: str = "z") -> dict[str, Any]:
    return {
        "id": sid,
        "url": str(SCENARIOS / clip),
        "sample_interval_s": 1,
        "file_speed": 2,
        "start_time": "2026-03-02T09:00:00+08:00",
        "zones": [{"id": zone, "polygon": polygon, "rules": ["illegal_parking"]}],
    }


def config_text(
    tmp: Path, broker: tuple[str, int], prefix: str, streams: list[dict[str, Any]], **top: Any
) -> str:
    cfg: dict[str, Any] = {
        "version": 1,
        "worker_id": f"live-config-{os.getpid()}",
        "live_reload_s": 0.2,
        "mqtt": {"host": broker[0], "port": broker[1], "topic_prefix": prefix},
        "models": {"watch_s": 0},
        "outbox": {"dir": str(tmp / "outbox")},
        "evidence": {"dir": str(tmp / "evidence")},
        **top,
        "streams": streams,
    }
    if "metrics" in CitywatchConfig.model_fields:
        cfg["metrics"] = {"port": 0}
    return yaml.safe_dump(cfg, sort_keys=False)


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.fixture
def detector(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Detector]]:
    monkeypatch.setattr(run, "load_rule_models", partial(load_rule_models, loader=fake_load))
    made: list[Detector] = []
    yield made
    for det in made:
        det.stop()


def test_streams_yaml_edits_apply_while_running(
    detector: list[Detector],
    mqtt_broker: tuple[str, int],
    topic_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "streams.yaml"
    text = partial(config_text, tmp_path, mqtt_broker, topic_prefix)
    a, b = stream("a", "street-demo.mp4"), stream("b", "street-dusk.mp4")
    path.write_text(text([a, b]))
    rec = MqttRecorder(*mqtt_broker, [f"{topic_prefix}/streams/+/state"])
    det = Detector(load(path)).start(threads=1)
    detector.append(det)
    live = det.live
    assert live is not None

    def worker(sid: str) -> StreamWorker | None:
        return next((w for w in det.workers if w.stream.id == sid), None)

    def samples(sid: str) -> int:
        w = worker(sid)
        return 0 if w is None else w.state.samples

    try:
        wait_for(lambda: samples("a") >= 3 and samples("b") >= 3, "both streams to be sampled")

        # 1. a stream is added
        c = stream("c", "street-demo.mp4")
        path.write_text(text([a, b, c]))
        wait_for(lambda: live.applied == 1, "the added stream to be applied")
        assert live.last is not None and live.last.added == ("c",) and live.last.kept == ("a", "b")
        wait_for(lambda: "c" in det.pipelines and det.pipelines["c"].samples >= 2, "c's samples processed")
        wait_for(lambda: any(s["state"] == "live" for s, _ in rec.of("/c/state")), "c's state: live")

        # 2. a zone of a changes: a restarts, b runs on
        wa, wb, pipe_b = worker("a"), worker("b"), det.pipelines["b"]
        assert wa is not None and wb is not None
        b0, ts0 = wb.state.samples, wb.state.last_frame_ts
        a = stream("a", "street-demo.mp4", LEFT, zone="left")
        path.write_text(text([a, b, c]))
        wait_for(lambda: live.applied == 2, "the zone change to be applied")
        assert live.last is not None and live.last.changed == ("a",) and live.last.kept == ("b", "c")
        assert worker("a") is not wa and not wa.is_alive(), "a restarted with a new worker"
        zones = det.pipelines["a"].zones
        assert list(zones) == ["left"]
        assert [[float(v) for v in p] for p in zones["left"].polygon] == LEFT
        assert det.cfg.stream("a").zones[0].id == "left", "det.cfg is the configuration in effect"
        wait_for(lambda: samples("a") >= 2, "the restarted a to be sampled")
        assert worker("b") is wb and det.pipelines["b"] is pipe_b, "b untouched: same worker and tracker"
        wait_for(lambda: wb.state.samples >= b0 + 8, "b to go on sampling")
        assert ts0 is not None and wb.state.last_frame_ts is not None
        rate = (wb.state.samples - b0) / (wb.state.last_frame_ts - ts0)
        assert 0.8 <= rate <= 1.25, f"b samples {rate:.2f}/s of frame time (sample_interval_s 1)"
        assert list(wb.history) == ["connecting", "live"], "b never reconnected"

        # 3. broken YAML, then a bad zone: refused, nothing changes
        workers = list(det.workers)
        good = text([a, b, c])
        path.write_text(good.replace("zones:", "zones: [", 1))
        wait_for(lambda: live.refused == 1, "the broken YAML to be refused")
        assert re.search(rf"{re.escape(str(path))}:\d+:\d+: .*\(hint: ", caplog.text), caplog.text
        path.write_text(text([stream("a", "street-demo.mp4", [[0, 0], [1, 1]], zone="left"), b, c]))
        wait_for(lambda: live.refused == 2, "the bad zone to be refused")
        assert re.search(r":\d+:\d+: streams\[0\]\.zones\[0\]\.polygon.*\(hint: ", caplog.text)
        assert "edit refused, the running configuration stays" in caplog.text
        assert live.applied == 2 and det.workers == workers and all(w.is_alive() for w in workers)

        # fixed: c removed, and a section only a restart applies
        path.write_text(text([a, b], evidence={"dir": str(tmp_path / "evidence"), "jpeg_quality": 70}))
        wait_for(lambda: live.applied == 3, "the fixed file to be applied")
        assert live.last is not None and live.last.removed == ("c",) and live.last.restart == ("evidence",)
        assert worker("c") is None and "c" not in det.pipelines
        assert "needs a restart: evidence" in caplog.text
        assert [s.id for s in det.cfg.streams] == ["a", "b"] and det.cfg.evidence.jpeg_quality == 85
        wait_for(lambda: any(s["state"] == "removed" for s, _ in rec.of("/c/state")), "c's state: removed")
        assert worker("b") is wb and wb.is_alive()
    finally:
        rec.close()
