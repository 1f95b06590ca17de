"""A stream moving to another worker (detector/pipeline.py ``checkpoint`` / ``restore``, the rule engine's
pickling in detector/rules/engine.py): a pipeline restored from a checkpoint taken at any frame goes on as
if never interrupted — the same events, violation ids and seq; no violation opens twice; the evidence frames
it held travel along (as JPEG); the restored engine labels with the new pipeline's label map.
Synthetic frames and detections; no model."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from detector.config import StreamConfig, load_config_text
from detector.contracts.detections import Detections
from detector.pipeline import JPEG_HELD, SEQ_PER_S, ModelInfo, StreamPipeline
from detector.rules.engine import RuleEngine, label_map
from detector.rules.params import RulesConfig
from detector.rules.zones import Zone
from tests.detector_support import ListSink
from tests.unit.factories import make_detections

MODEL = ModelInfo("citywatch-synth", "1.2.0", "ab" * 32, ("vehicle",), {"vehicle": "vehicle"})
T0 = 1_780_279_200.0  # 2026-06-01T02:00:00Z
SIZE = (320, 180)  # frame width, height
CAR_A = (40.0, 100.0, 120.0, 150.0)  # both in the lower half: the no-parking zone
CAR_B = (200.0, 110.0, 290.0, 170.0)
STEPS = 18  # samples, 2 s apart

Event = Mapping[str, Any]


def stream() -> StreamConfig:
    text = (
        "version: 1\n"
        "defaults: {rules: {illegal_parking: {dwell_s: 6, grace_s: 4, update_interval_s: 4}}}\n"
        "streams:\n"
        "  - id: cam\n"
        "    url: a.mp4\n"
        "    zones: [{id: z, polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], rules: [illegal_parking]}]\n"
    )
    return load_config_text(text, environ={}).config.streams[0]


def pipeline(model: ModelInfo = MODEL) -> tuple[StreamPipeline, ListSink]:
    sink = ListSink()
    return StreamPipeline(stream(), model, sink), sink


def frame(i: int) -> npt.NDArray[np.uint8]:
    """Each sample its own picture (a grey level of its own over a smooth pattern): evidence shows which."""
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    pattern = 30 * np.sin(x / 23.0) * np.cos(y / 17.0) + 30
    img = np.stack([pattern, pattern[::-1], pattern[:, ::-1]], axis=-1) + 10 * i
    return np.asarray(np.clip(img, 0, 255), dtype=np.uint8)


def scene(i: int) -> Detections:
    """Car A parks from the first sample (its best look on the second) and leaves after the 10th; car B
    parks from the 9th to the end. Both open; A clears, B is still open when the input ends."""
    boxes, scores = [], []
    if i < 10:
        boxes.append(CAR_A)
        scores.append(0.95 if i == 1 else 0.8)
    if i >= 8:
        boxes.append(CAR_B)
        scores.append(0.97 if i == 9 else 0.85)
    return make_detections(boxes, scores)


def feed(pipe: StreamPipeline, steps: range) -> list[dict[str, Any]]:
    out = []
    for i in steps:
        out += pipe.process(T0 + 2 * i, frame(i), scene(i))
    return out


def without_evidence(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Everything but the evidence JPEG and the wall clock (``sent_at``)."""
    return [{k: v for k, v in e.items() if k not in ("evidence", "sent_at")} for e in events]


def frame_time(event: Event) -> float:
    """The frame time of the sample that made ``event`` (``seq``: tenths of a second since first seen)."""
    first_seen = datetime.fromisoformat(str(event["first_seen"])).timestamp()
    return first_seen + int(event["seq"]) // 2 / SEQ_PER_S


def evidence_image(event: Event) -> npt.NDArray[np.uint8]:
    raw = base64.b64decode(event["evidence"]["jpeg"])
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img, np.uint8)


def mean_abs_diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def uninterrupted() -> list[dict[str, Any]]:
    pipe, sink = pipeline()
    feed(pipe, range(STEPS))
    events = [dict(e) for e in sink.events]
    kinds = [(e["event"], e["violation_id"]) for e in events]
    ids = list(dict.fromkeys(vid for _, vid in kinds))
    assert len(ids) == 2, kinds  # the scenario: two violations...
    assert next(k for k, v in kinds if v == ids[0]) == "opened" and ("cleared", ids[0]) in kinds
    assert ("opened", ids[1]) in kinds and ("cleared", ids[1]) not in kinds  # ...A cleared, B still open
    return events


@pytest.mark.parametrize("split", range(STEPS + 1))
def test_a_restored_pipeline_goes_on_as_if_never_interrupted(
    split: int, uninterrupted: list[dict[str, Any]]
) -> None:
    """Checkpoint after ``split`` samples (before a violation is seen, while it is a candidate, just after it
    opened, after it cleared, ...), restore into a new pipeline of the same stream, feed the rest."""
    first, first_sink = pipeline()
    feed(first, range(split))
    blob = first.checkpoint()

    second, second_sink = pipeline()
    resumed = second.restore(blob)
    assert resumed == (None if split == 0 else T0 + 2 * (split - 1))
    assert second.last_ts == resumed
    feed(second, range(split, STEPS))

    assert resumed is None or all(frame_time(e) > resumed for e in second_sink.events)
    joined = [dict(e) for e in [*first_sink.events, *second_sink.events]]
    # ids, kinds, seq, boxes, scores, times: all as in the run never interrupted
    assert without_evidence(joined) == without_evidence(uninterrupted)
    opened = [e["violation_id"] for e in joined if e["event"] == "opened"]
    assert len(opened) == len(set(opened)) == 2  # nothing opens twice
    for got, want in zip(joined, uninterrupted, strict=True):
        if want["event"] != "opened":
            continue
        about = ("captured_at", "width", "height")
        assert [got["evidence"][k] for k in about] == [want["evidence"][k] for k in about]
        # the same frame (after a JPEG round trip when it was held across the checkpoint), not another one
        assert mean_abs_diff(evidence_image(got), evidence_image(want)) < 2.0


def test_the_held_evidence_frames_travel_as_jpeg() -> None:
    first, _ = pipeline()
    feed(first, range(5))  # car A open, its best frame (sample 1) held, and the current one
    held = dict(first.held_frames())
    assert sorted(held) == [T0 + 2, T0 + 8]

    second, _ = pipeline()
    second.restore(first.checkpoint())
    restored = dict(second.held_frames())
    assert sorted(restored) == sorted(held)
    for ts, img in held.items():
        assert restored[ts].shape == img.shape and restored[ts].dtype == np.uint8
        assert mean_abs_diff(restored[ts], img) < 2.0  # JPEG at quality JPEG_HELD: close, not equal
    assert JPEG_HELD >= 90
    other = frame(0)  # and clearly not some other sample's picture
    assert mean_abs_diff(restored[T0 + 2], other) > 5.0


def test_a_stream_that_leaves_as_at_shutdown_keeps_its_ids_and_opens_nothing_twice(
    uninterrupted: list[dict[str, Any]],
) -> None:
    """What a fleet node does when a stream moves: the pipeline finishes (an ``updated`` with the latest
    sighting), then its checkpoint goes to the next node. Extra ``updated`` events, the same violations."""
    for split in (2, 5, 9, 12, 15):
        first, first_sink = pipeline()
        feed(first, range(split))
        first.finish()
        second, second_sink = pipeline()
        second.restore(first.checkpoint())
        feed(second, range(split, STEPS))
        joined = [*first_sink.events, *second_sink.events]
        assert [e["violation_id"] for e in joined if e["event"] == "opened"] == [
            e["violation_id"] for e in uninterrupted if e["event"] == "opened"
        ]
        assert {e["violation_id"] for e in joined} == {e["violation_id"] for e in uninterrupted}
        assert [e["violation_id"] for e in joined if e["event"] == "cleared"] == [
            e["violation_id"] for e in uninterrupted if e["event"] == "cleared"
        ]
        pairs = [(e["violation_id"], e["seq"]) for e in joined]
        assert len(pairs) == len(set(pairs)), "an event repeated"


def test_a_restored_engine_labels_with_the_new_pipelines_label_map() -> None:
    old_model = ModelInfo("m", "1", None, ("vehicle",), {"vehicle": "vehicle"})
    new_model = ModelInfo("m", "2", None, ("car", "vehicle"), {"car": "vehicle", "vehicle": "vehicle"})
    first, _ = pipeline(old_model)
    for i in range(3):
        first.process(T0 + 2 * i, frame(i), make_detections([CAR_A], 0.8))
    assert first.engine.labelled(make_detections([CAR_A], classes="car")).data["label"].tolist() == ["car"]

    second, sink = pipeline(new_model)
    new_label_of = second.engine.label_of
    second.restore(first.checkpoint())
    assert second.engine.label_of is new_label_of
    assert second.engine.labelled(make_detections([CAR_A], classes="car")).data["label"].tolist() == [
        "vehicle"
    ]
    # the new model calls the parked car "car": it is the same vehicle, and its violation opens
    for i in range(3, 6):
        second.process(T0 + 2 * i, frame(i), make_detections([CAR_A], 0.8, classes="car"))
    assert sink.events and sink.events[0]["event"] == "opened"
    assert [e["violation_id"] for e in sink.events] == [sink.events[0]["violation_id"]] * len(sink.events)
    assert sink.events[0]["first_seen"].startswith("2026-06-01T02:00:00")
    assert sink.events[0]["model"]["version"] == "2"


def test_a_restored_engine_takes_the_new_pipelines_rule_sources() -> None:
    first, _ = pipeline()
    first.process(T0, frame(0), make_detections([CAR_A]))
    coco = ModelInfo("yolov8n-coco", "1", None, ("car",), {"car": "vehicle"})
    second = StreamPipeline(stream(), MODEL, ListSink(), rule_models={"illegal_parking": coco})
    second.restore(first.checkpoint())
    assert second.engine.rule_sources == {"illegal_parking": "yolov8n-coco@1"}


# ---------------------------------------- the rule engine pickled


def test_an_engine_pickles_without_its_label_map_and_keeps_its_state() -> None:
    zone = Zone("z", [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], ["illegal_parking"])
    engine = RuleEngine(
        [zone],
        RulesConfig().merged({"illegal_parking": {"dwell_s": 4, "grace_s": 4, "update_interval_s": 4}}),
        lambda name: {"auto": "vehicle"}.get(name),  # a closure: not picklable, and not pickled
    )
    for i in range(4):
        engine.step(make_detections([CAR_A], classes="auto"), T0 + 2 * i, SIZE)
    assert engine.active()

    copy = pickle.loads(pickle.dumps(engine))
    assert "label_of" not in engine.__getstate__()
    assert copy.label_of("auto") == "auto"  # names as labels until the restoring side sets its own
    assert copy.active() == engine.active()
    assert copy.last_ts == engine.last_ts
    assert copy.evidence_frames() == engine.evidence_frames()
    assert engine.label_of("auto") == "vehicle"  # the original is untouched

    copy.label_of = label_map({"auto": "vehicle"})
    updates = []
    for i in range(4, 12):  # car A stays, car B arrives: the next track id, the same keys on both
        dets = make_detections([CAR_A, CAR_B] if i >= 6 else [CAR_A], classes="auto")
        a, b = engine.step(dets, T0 + 2 * i, SIZE), copy.step(dets, T0 + 2 * i, SIZE)
        assert a == b
        updates += a
    assert {u.event for u in updates} == {"opened", "updated"}
    assert copy.active() == engine.active() and len(engine.active()) == 2
