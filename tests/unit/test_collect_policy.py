"""What the collector keeps (detector/collect/policy.py): near a threshold, disagreement, uniform, the cap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.collect.policy import (
    Det,
    Quota,
    StreamPolicy,
    commit,
    decide,
    disagreement,
    flatten,
    near_threshold,
    uniform_slot,
)
from detector.config import load_config_text
from detector.config.collect import CollectConfig
from detector.contracts.detections import Detections
from detector.delivery.publisher import JsonlSink
from detector.pipeline import ModelInfo, StreamPipeline
from tests.unit.factories import make_detections

SYNTH = ModelInfo(
    "citywatch-synth", "1.2.0", None, ("vehicle", "stall"), {"vehicle": "vehicle", "stall": "vendor"}
)
COCO = ModelInfo("yolov8n-coco", "1.0.0", None, ("person", "car"), {"car": "vehicle", "person": "person"})
HOUR0 = 1_780_000_000.0 - (1_780_000_000.0 % 3600)  # the start of an hour


def stream_config(rules: str = "[illegal_parking]", extra: str = "", zone_params: str = "{}") -> Any:
    text = (
        "version: 1\n"
        "defaults: {rules: {illegal_parking: {min_score: 0.35}, street_vending: {min_score: 0.45}}}\n"
        "streams:\n"
        "  - id: cam\n"
        "    url: a.mp4\n"
        f"{extra}"
        f"    zones: [{{id: z, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], rules: {rules}, "
        f"params: {zone_params}}}]\n"
    )
    return load_config_text(text, environ={}).config.streams[0]


def pipeline(
    tmp_path: Path, stream: Any, model: ModelInfo = SYNTH, **rule_models: ModelInfo
) -> StreamPipeline:
    sink = JsonlSink(tmp_path / "events.jsonl")
    return StreamPipeline(stream, model, sink, rule_models=rule_models)


def det(
    score: float,
    label: str = "vehicle",
    model: str = "citywatch-synth@1.2.0",
    box: Sequence[float] = (0, 0, 100, 100),
) -> Det:
    x1, y1, x2, y2 = (float(v) for v in box)
    return Det(label, label, (x1, y1, x2, y2), score, model)


# ------------------------------------------------------------------ near threshold
# parking's min_score 0.35, band [0.35 - 0.15, 0.35 + 0.05) = [0.20, 0.40)
@pytest.mark.parametrize(
    ("score", "label", "kept"),
    [
        (0.19, "vehicle", False),  # far under: noise
        (0.20, "vehicle", True),  # the band's low edge
        (0.34, "vehicle", True),  # just missed
        (0.35, "vehicle", True),  # only just taken
        (0.399, "vehicle", True),
        (0.40, "vehicle", False),  # confidently taken
        (0.90, "vehicle", False),
        (0.30, "vendor", False),  # no rule of this stream judges vendors
    ],
)
def test_near_threshold_band(tmp_path: Path, score: float, label: str, kept: bool) -> None:
    policy = StreamPolicy.of(pipeline(tmp_path, stream_config()))
    assert bool(near_threshold(policy, [det(score, label)], below=0.15, above=0.05)) is kept


@pytest.mark.parametrize(
    ("zone_params", "score", "kept"),
    [
        ("{}", 0.55, False),
        ("{illegal_parking: {min_score: 0.6}}", 0.55, True),  # a zone's own threshold counts too
        ("{illegal_parking: {min_score: 0.6}}", 0.30, True),  # and the stream's still does
    ],
)
def test_near_threshold_uses_every_zones_threshold(
    tmp_path: Path, zone_params: str, score: float, kept: bool
) -> None:
    policy = StreamPolicy.of(pipeline(tmp_path, stream_config(zone_params=zone_params)))
    assert bool(near_threshold(policy, [det(score)], below=0.15, above=0.05)) is kept


def test_near_threshold_only_for_the_model_that_serves_the_rule(tmp_path: Path) -> None:
    stream = stream_config("[illegal_parking, street_vending]")
    policy = StreamPolicy.of(pipeline(tmp_path, stream, illegal_parking=COCO, street_vending=SYNTH))
    # parking is COCO's: a bureau-model vehicle at 0.3 is only a veto box, nothing a rule just missed
    assert near_threshold(policy, [det(0.3, model=SYNTH.id)], 0.15, 0.05) == []
    assert near_threshold(policy, [det(0.3, model=COCO.id)], 0.15, 0.05) == [(0, 0, 100, 100)]


# ------------------------------------------------------------------ disagreement
A, B = COCO.id, SYNTH.id
BOX = (100, 100, 200, 200)
SHIFTED = (150, 100, 250, 200)  # IoU 1/3 with BOX
APART = (300, 300, 400, 400)


@pytest.mark.parametrize(
    ("dets", "disagree"),
    [
        ([det(0.8, model=A, box=BOX), det(0.7, model=B, box=BOX)], False),  # both see it
        ([det(0.8, model=A, box=BOX)], True),  # the bureau model sees nothing there
        ([det(0.8, model=B, box=BOX)], True),  # COCO sees nothing there
        ([det(0.8, model=A, box=BOX), det(0.21, model=B, box=BOX)], False),  # >= 0.35 - 0.15: a match
        ([det(0.8, model=A, box=BOX), det(0.19, model=B, box=BOX)], True),  # too weak to count
        ([det(0.8, model=A, box=BOX), det(0.7, model=B, box=SHIFTED)], False),  # IoU 0.33 >= 0.3
        ([det(0.8, model=A, box=BOX), det(0.7, model=B, box=APART)], True),  # elsewhere
        ([det(0.3, model=A, box=BOX)], False),  # under the threshold: no claim to disagree with
        ([det(0.8, "person", model=A, box=BOX)], False),  # person: one model only
    ],
)
def test_disagreement_between_two_models(tmp_path: Path, dets: list[Det], disagree: bool) -> None:
    stream = stream_config("[illegal_parking, street_vending]")
    policy = StreamPolicy.of(pipeline(tmp_path, stream, illegal_parking=COCO, street_vending=SYNTH))
    assert policy.emitters["vehicle"] == {A, B}  # COCO for parking, the bureau's for vending's veto
    assert bool(disagreement(policy, dets, below=0.15, min_iou=0.3)) is disagree


def test_no_disagreement_with_one_model(tmp_path: Path) -> None:
    policy = StreamPolicy.of(pipeline(tmp_path, stream_config("[illegal_parking, street_vending]")))
    assert disagreement(policy, [det(0.9, model=SYNTH.id)], 0.15, 0.3) == []


def test_a_model_that_does_not_hand_the_label_on_never_disagrees(tmp_path: Path) -> None:
    """Vending without its vehicle veto: the bureau model's vehicles never reach the stream."""
    stream = stream_config(
        "[illegal_parking, street_vending]", extra="    rules: {street_vending: {veto: []}}\n"
    )
    policy = StreamPolicy.of(pipeline(tmp_path, stream, illegal_parking=COCO, street_vending=SYNTH))
    assert policy.emitters["vehicle"] == {A}
    assert disagreement(policy, [det(0.9, model=A)], 0.15, 0.3) == []


# ------------------------------------------------------------------ flatten
def test_flatten_single_and_merged_detections() -> None:
    single = make_detections([(0, 0, 10, 10)], 0.5, "car", class_names=("car",))
    assert flatten(single, COCO.id, COCO.rule_labels) == [Det("vehicle", "car", (0, 0, 10, 10), 0.5, COCO.id)]
    merged = Detections(
        single.xyxy, single.confidence, single.class_id, None,
        {"class_name": np.array(["car"], object), "label": np.array(["vehicle"], object),
         "model": np.array(["other@2"], object)},
    )  # fmt: skip
    assert flatten(merged, COCO.id, {})[0].model == "other@2"


# ------------------------------------------------------------------ uniform and the cap
@pytest.mark.parametrize(
    ("offset_s", "per_hour", "slot"),
    [(0, 2, 0), (1799, 2, 0), (1800, 2, 1), (3599, 2, 1), (3600, 2, 0), (900, 4, 1), (10, 1, 0)],
)
def test_uniform_slot(offset_s: float, per_hour: int, slot: int) -> None:
    assert uniform_slot(HOUR0 + offset_s, per_hour)[1] == slot


def run(
    cfg: CollectConfig, policy: StreamPolicy, frames: list[tuple[float, list[Det]]]
) -> list[tuple[str, ...]]:
    quota = Quota()
    out = []
    for ts, dets in frames:
        d = decide(cfg, policy, quota, ts, dets)
        if d.reasons:
            commit(quota, d)
        out.append(d.reasons if not d.capped else ("capped",))
    return out


@pytest.mark.parametrize(
    ("per_hour", "offsets", "expected"),
    [
        # two slots: the first sample of each half hour, then nothing until the next hour
        (2, [0, 2, 1798, 1800, 1802, 3600], ["uniform", "", "", "uniform", "", "uniform"]),
        (1, [5, 10, 3605], ["uniform", "", "uniform"]),
        (0, [0, 1800], ["", ""]),
    ],
)
def test_uniform_sample_per_hour(
    tmp_path: Path, per_hour: int, offsets: list[int], expected: list[str]
) -> None:
    settings = {"uniform_per_hour": per_hour, "near_threshold": False, "disagreement": False}
    cfg = CollectConfig.model_validate(settings)
    policy = StreamPolicy.of(pipeline(tmp_path, stream_config()))
    got = run(cfg, policy, [(HOUR0 + o, []) for o in offsets])
    assert [",".join(r) for r in got] == expected


def test_the_hours_cap_counts_every_reason_and_resets_with_the_hour(tmp_path: Path) -> None:
    cfg = CollectConfig(per_stream_per_hour=3, uniform_per_hour=1)
    policy = StreamPolicy.of(pipeline(tmp_path, stream_config()))
    frames = [(HOUR0 + 2 * i, [det(0.3, box=(200 * i, 0, 200 * i + 100, 100))]) for i in range(5)]
    frames.append((HOUR0 + 3600, [det(0.3)]))
    assert run(cfg, policy, frames) == [
        ("uniform", "near_threshold"),
        ("near_threshold",),
        ("near_threshold",),
        ("capped",),
        ("capped",),
        ("uniform", "near_threshold"),  # a new hour
    ]


def test_a_frame_that_was_not_queued_leaves_the_quota_alone(tmp_path: Path) -> None:
    cfg = CollectConfig(per_stream_per_hour=1, uniform_per_hour=1)
    policy = StreamPolicy.of(pipeline(tmp_path, stream_config()))
    quota = Quota()
    first = decide(cfg, policy, quota, HOUR0, [])
    assert first.reasons == ("uniform",)  # not committed (say the queue was full) ...
    assert decide(cfg, policy, quota, HOUR0 + 2, []).reasons == ("uniform",)  # ... so the next one is it


@pytest.mark.parametrize(
    ("reason_cfg", "dets"),
    [
        ({"near_threshold": True}, lambda box: [det(0.3, model=A, box=box)]),
        ({"disagreement": True}, lambda box: [det(0.8, model=A, box=box)]),
    ],
)
def test_the_same_object_keeps_one_frame_an_hour_per_reason(
    tmp_path: Path, reason_cfg: dict[str, Any], dets: Any
) -> None:
    cfg = CollectConfig.model_validate(
        {"uniform_per_hour": 0, "near_threshold": False, "disagreement": False, **reason_cfg}
    )
    stream = stream_config("[illegal_parking, street_vending]")
    policy = StreamPolicy.of(pipeline(tmp_path, stream, illegal_parking=COCO, street_vending=SYNTH))
    reason = next(iter(reason_cfg))
    moved = (400, 100, 500, 200)
    frames = [
        (HOUR0, dets(BOX)),
        (HOUR0 + 2, dets(BOX)),  # the same parked car: nothing new
        (HOUR0 + 4, dets(SHIFTED)),  # IoU 1/3 with it: another place
        (HOUR0 + 6, dets(moved) + dets(BOX)),  # a new one beside the old one
        (HOUR0 + 8, dets(moved)),
        (HOUR0 + 3600, dets(BOX)),  # the next hour: again
    ]
    assert run(cfg, policy, frames) == [(reason,), (), (reason,), (reason,), (), (reason,)]
