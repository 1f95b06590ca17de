"""The collector on a stream pipeline (detector/collect/collector.py): case frames, merging, the queue,
``collect: false``, the evidence's size. Synthetic frames and detections; no model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from detector.collect import collector as collector_module
from detector.collect.collector import Collector
from detector.collect.record import read_record, sidecars
from detector.config import EvidenceConfig, load_config_text
from detector.config.collect import CollectConfig
from detector.delivery.publisher import JsonlSink
from detector.pipeline import ModelInfo, StreamPipeline
from tests.unit.factories import make_detections

MODEL = ModelInfo("citywatch-synth", "1.2.0", "ab" * 32, ("vehicle",), {"vehicle": "vehicle"})
T0 = 1_780_279_200.0  # 2026-06-01T02:00:00Z
CAR = (40.0, 60.0, 120.0, 100.0)
SIZE = (200, 100)  # frame width, height


def stream(sid: str = "cam", collect: bool = True) -> Any:
    text = (
        "version: 1\n"
        "defaults: {rules: {illegal_parking: {dwell_s: 6, grace_s: 4, min_score: 0.35}}}\n"
        "streams:\n"
        f"  - id: {sid}\n"
        "    url: a.mp4\n"
        f"    collect: {str(collect).lower()}\n"
        "    zones: [{id: z, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], rules: [illegal_parking]}]\n"
    )
    return load_config_text(text, environ={}).config.streams[0]


def collector(tmp_path: Path, **cfg: Any) -> Collector:
    settings = {"enabled": True, "uniform_per_hour": 0, "near_threshold": False, "disagreement": False, **cfg}
    return Collector.from_config(CollectConfig.model_validate(settings), tmp_path, clock=lambda: T0 + 3600)


def frame(i: int) -> np.ndarray:
    return np.full((SIZE[1], SIZE[0], 3), 40 + 20 * i, np.uint8)  # each frame its own grey


def drive(
    tmp_path: Path, col: Collector, scores: list[float], sid: str = "cam", **pipe: Any
) -> list[dict[str, Any]]:
    p = StreamPipeline(
        stream(sid, pipe.pop("collect", True)), MODEL, JsonlSink(tmp_path / f"{sid}.jsonl"), **pipe
    )
    col.attach(p)
    events = []
    for i, score in enumerate(scores):
        events += p.process(T0 + 2 * i, frame(i), make_detections([CAR], score))
    return events


def records(root: Path) -> list[Any]:
    return [read_record(p) for p in sidecars(root)]


def test_the_case_frame_is_the_clean_evidence_frame_with_its_violation_id(tmp_path: Path) -> None:
    col = collector(tmp_path).start()
    events = drive(tmp_path, col, [0.8, 0.95, 0.8, 0.8, 0.8, 0.8])  # best frame: the second
    col.stop()
    opened = [e for e in events if e["event"] == "opened"]
    assert len(opened) == 1
    [rec] = records(tmp_path / "var/collect")
    assert rec.reasons == ["case"]
    assert rec.violation_id == opened[0]["violation_id"]
    assert rec.captured_at.timestamp() == pytest.approx(T0 + 2)  # the evidence frame, not the current one
    assert opened[0]["evidence"]["captured_at"].startswith("2026-06-01T02:00:02")
    assert rec.model is not None and rec.model.sha256 == "ab" * 32
    assert [(p.label, p.score) for p in rec.predictions] == [("vehicle", pytest.approx(0.95))]
    jpg = tmp_path / "var/collect/cam/2026-06-01" / f"{rec.id}.jpg"
    image = cv2.imread(str(jpg))
    assert image is not None
    assert image.shape == (SIZE[1], SIZE[0], 3)
    assert abs(float(image.mean()) - 60) < 2  # frame 1's grey: clean, no box or zone drawn


def test_a_frame_kept_before_becomes_the_case_frame_in_the_same_file(tmp_path: Path) -> None:
    col = collector(tmp_path, near_threshold=True).start()
    # all near 0.35, one parked car: the first frame is kept (once an hour per place), and it is the best
    events = drive(tmp_path, col, [0.39, 0.38, 0.38, 0.38, 0.38, 0.38])
    col.stop()
    vid = next(e["violation_id"] for e in events if e["event"] == "opened")
    [case] = records(tmp_path / "var/collect")  # one file, not two
    assert (case.violation_id, case.reasons) == (vid, ["near_threshold", "case"])
    assert case.id == "cam-20260601T020000000-near_threshold"
    assert col.counts["merged"] == 1


def test_evidence_size(tmp_path: Path) -> None:
    """Frames are stored at evidence.max_width (the desk's corrections are in those pixels)."""
    col = collector(tmp_path).start()
    drive(tmp_path, col, [0.8] * 6, evidence=EvidenceConfig(max_width=100))
    col.stop()
    [rec] = records(tmp_path / "var/collect")
    assert (rec.width, rec.height) == (100, 50)
    assert rec.predictions[0].xyxy == (20.0, 30.0, 60.0, 50.0)


def test_a_stream_with_collect_false_keeps_nothing(tmp_path: Path) -> None:
    col = collector(tmp_path, uniform_per_hour=60, near_threshold=True).start()
    events = drive(tmp_path, col, [0.38] * 6, sid="quiet", collect=False)
    col.stop()
    assert any(e["event"] == "opened" for e in events)
    assert not (tmp_path / "var/collect/quiet").exists()
    assert col.counts["written"] == 0


def test_a_full_queue_drops_the_sample_and_counts_it(tmp_path: Path) -> None:
    col = collector(tmp_path, queue=1, near_threshold=True)  # the writer not started
    p = StreamPipeline(stream(), MODEL, JsonlSink(tmp_path / "e.jsonl"))
    col.attach(p)
    for i in range(3):  # three cars near the threshold, each at its own place
        p.process(T0 + 2 * i, frame(i), make_detections([(60.0 * i, 0.0, 60.0 * i + 50, 40.0)], 0.38))
    assert col.counts["dropped_queue_full"] == 2
    assert col.counts["kept_near_threshold"] == 1
    col.start()
    col.stop()
    assert len(records(tmp_path / "var/collect")) == 1


def test_the_collector_never_stops_a_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(collector_module, "flatten", broken)
    col = collector(tmp_path)
    events = drive(tmp_path, col, [0.8] * 6)
    assert any(e["event"] == "opened" for e in events)
    assert col.counts["errors"] == 6


def test_two_violations_on_one_frame_get_a_frame_each(tmp_path: Path) -> None:
    col = collector(tmp_path).start()
    p = StreamPipeline(stream(), MODEL, JsonlSink(tmp_path / "e.jsonl"))
    col.attach(p)
    other = (140.0, 10.0, 190.0, 40.0)
    for i in range(6):
        p.process(T0 + 2 * i, frame(0), make_detections([CAR, other], [0.9 if i == 0 else 0.8] * 2))
    col.stop()
    recs = records(tmp_path / "var/collect")
    assert len({r.violation_id for r in recs}) == 2
    stamp = "cam-20260601T020000000"
    assert sorted(r.id for r in recs) == [f"{stamp}-case", f"{stamp}-case-2"]
    assert all(r.captured_at.timestamp() == pytest.approx(T0) for r in recs)


def test_stats_and_the_start_scan(tmp_path: Path) -> None:
    col = collector(tmp_path).start()
    drive(tmp_path, col, [0.8] * 6)
    col.stop()
    again = collector(tmp_path).start()
    assert again.wait_idle()
    again.stop()
    stats = again.stats()
    assert stats["frames"] == 1 and stats["mib"] >= 0
    assert json.dumps(stats)


def test_a_model_swapped_in_place_renews_the_policy(tmp_path: Path) -> None:
    """A hot swap (detector.inference.hotswap) keeps a model's id and assigns a new ModelInfo: the policy
    follows its classes. Here the bureau model's new version also finds vehicles (vending's veto), so a
    vehicle only COCO sees becomes a disagreement."""
    text = (
        "version: 1\n"
        "streams:\n"
        "  - id: cam\n"
        "    url: a.mp4\n"
        "    zones: [{id: z, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]],\n"
        "             rules: [illegal_parking, street_vending]}]\n"
    )
    two = load_config_text(text, environ={}).config.streams[0]
    coco = ModelInfo("yolov8n-coco", "1.0.0", None, ("car",), {"car": "vehicle"})
    old = ModelInfo("citywatch-synth", "1.2.0", None, ("stall",), {"stall": "vendor"})
    col = collector(tmp_path, disagreement=True).start()
    p = StreamPipeline(
        two,
        old,
        JsonlSink(tmp_path / "e.jsonl"),
        rule_models={"illegal_parking": coco, "street_vending": old},
    )
    col.attach(p)
    dets = make_detections([CAR], 0.9, "car", class_names=("car",))
    dets.data["label"] = np.array(["vehicle"], object)
    dets.data["model"] = np.array([coco.id], object)
    p.process(T0, frame(0), dets)  # the bureau model has no vehicle class: nothing to disagree with
    new = ModelInfo(
        "citywatch-synth", "1.3.0", None, ("vehicle", "stall"), {"vehicle": "vehicle"}, key=old.id
    )
    p.model, p.rule_models = new, {"illegal_parking": coco, "street_vending": new}
    p.process(T0 + 2, frame(1), dets)
    col.stop()
    [rec] = records(tmp_path / "var/collect")
    assert rec.reasons == ["disagreement"]
    assert rec.captured_at.timestamp() == pytest.approx(T0 + 2)
    assert rec.model is not None and rec.model.version == "1.3.0"
