"""Several models in one deployment (detector/inference/rule_models.py): which model serves which rule, one
instance per distinct model, merged detections where each rule sees only its own model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.config.model import ModelConfig
from detector.contracts.detections import Detections
from detector.inference.model import LoadedModel
from detector.inference.rule_models import (
    enabled_rules,
    label_detections,
    load_rule_models,
    rule_model_configs,
)
from detector.pipeline import ModelInfo
from tests.detector_support import ListSink
from tests.unit.factories import ALL_RULES, FRAME, every, make_detections, rule_models_config

COCO_LABELS = {"car": "vehicle", "truck": "vehicle", "bus": "vehicle", "motorcycle": "vehicle"}
SYNTH_LABELS = {"vehicle": "vehicle", "stall": "vendor", "litter": "litter", "structure": "structure"}
CAR = [100.0, 400.0, 260.0, 500.0]


config = rule_models_config


@pytest.mark.parametrize(
    ("global_rm", "stream_rm", "expected"),
    [
        ("{}", "{}", {"illegal_parking": None, "street_vending": None}),
        ("{illegal_parking: {name: coco}}", "{}", {"illegal_parking": "coco", "street_vending": None}),
        ("{illegal_parking: {name: coco}}", "{illegal_parking: {name: other}}", {"illegal_parking": "other"}),
        ("{}", "{street_vending: {name: vend}}", {"illegal_parking": None, "street_vending": "vend"}),
        ("{unclean_road: {name: a}}", "{unclean_road: {name: b}}", {"unclean_road": "b"}),
    ],
)  # fmt: skip
def test_stream_then_global_rule_models_then_model(
    global_rm: str, stream_rm: str, expected: dict[str, str | None]
) -> None:
    cfg = config(global_rm, stream_rm)
    got = rule_model_configs(cfg, cfg.streams[0])
    assert {rule: got[rule].name for rule in expected} == expected


@pytest.mark.parametrize(
    ("rules", "extra", "expected"),
    [
        (ALL_RULES, "", ["illegal_parking", "street_vending", "illegal_structure", "unclean_road"]),
        ("[unclean_road, illegal_parking]", "", ["illegal_parking", "unclean_road"]),
        ("[illegal_parking]", "    rules: {illegal_parking: {enabled: false}}\n", []),
    ],
)
def test_enabled_rules(rules: str, extra: str, expected: list[str]) -> None:
    cfg = config(rules=rules, extra=extra)
    assert enabled_rules(cfg.streams[0]) == expected


@pytest.mark.parametrize(
    ("classes", "labels", "watch", "kept", "kept_labels"),
    [
        (["car", "person", "truck"], COCO_LABELS, {"vehicle"}, 2, ["vehicle", "vehicle"]),
        (["car", "person"], COCO_LABELS, None, 2, ["vehicle", "person"]),  # no rule: keep everything
        (["vehicle", "stall", "litter"], SYNTH_LABELS, {"vendor", "litter"}, 2, ["vendor", "litter"]),
        (["vehicle"], SYNTH_LABELS, {"vendor"}, 0, []),
        (["car", "bus"], COCO_LABELS, {"bus"}, 1, ["vehicle"]),  # a rule's classes may name a class
    ],
)
def test_label_detections(
    classes: list[str], labels: dict[str, str], watch: set[str] | None, kept: int, kept_labels: list[str]
) -> None:
    dets = make_detections([CAR] * len(classes), classes=classes)
    out = label_detections(dets, "m1", labels, watch)
    assert len(out) == kept
    assert list(out.data["label"]) == kept_labels
    assert list(out.data["model"]) == ["m1"] * kept


class FakeBackend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def fake_loader(calls: list[ModelConfig]) -> Any:
    def load(mc: ModelConfig, threads: int | None, base_dir: Path | None) -> LoadedModel:
        calls.append(mc)
        name = mc.name or "synth"
        labels = COCO_LABELS if name == "coco" else SYNTH_LABELS
        info = ModelInfo(name, "1.0.0", "f" * 64, tuple(labels), labels)
        return LoadedModel(FakeBackend(name), info, Path(f"/m/{name}"), "onnx")  # type: ignore[arg-type]

    return load


def ref_of(name: str | None) -> str:
    return f"{name or 'synth'}@1.0.0"


@pytest.mark.parametrize(
    ("global_rm", "stream_rm", "rules", "instances", "needed"),
    [
        ("{}", "{}", ALL_RULES, 1, ["synth@1.0.0"]),
        ("{illegal_parking: {name: coco}}", "{}", ALL_RULES, 2, ["coco@1.0.0", "synth@1.0.0"]),
        ("{illegal_parking: {name: coco}}", "{}", "[street_vending]", 1, ["synth@1.0.0"]),  # coco unused
        ("{street_vending: {name: synth}}", "{}", ALL_RULES, 1, ["synth@1.0.0"]),  # same ref as the default
        ("{street_vending: {name: synth, batch: 16}}", "{}", ALL_RULES, 1, ["synth@1.0.0"]),  # batch: no
        ("{street_vending: {conf: 0.5}}", "{}", ALL_RULES, 2, ["synth@1.0.0", "synth@1.0.0#2"]),
        ("{street_vending: {backend: openvino}}", "{}", ALL_RULES, 2, ["synth@1.0.0", "synth@1.0.0#2"]),
        ("{illegal_parking: {name: coco}}", "{illegal_parking: {}}", ALL_RULES, 1, ["synth@1.0.0"]),
    ],
)  # fmt: skip
def test_one_instance_per_distinct_model(
    global_rm: str, stream_rm: str, rules: str, instances: int, needed: list[str]
) -> None:
    cfg = config(global_rm, stream_rm, rules)
    calls: list[ModelConfig] = []
    models = load_rule_models(cfg, loader=fake_loader(calls), ref_of=ref_of)
    assert len(calls) == len(models.models) == instances
    assert list(models.plan("cam").needed) == needed
    assert all(models.models[mid].info.id == mid for mid in models.models)


def test_largest_batch_of_a_shared_instance_applies() -> None:
    cfg = config("{street_vending: {name: synth, batch: 16}}")
    models = load_rule_models(cfg, loader=fake_loader([]), ref_of=ref_of)
    assert models.batches == {"synth@1.0.0": 16}


FAST = (
    "    rules: {illegal_parking: {dwell_s: 10},\n"
    "            street_vending: {dwell_s: 10, active_hours: ['00:00-24:00']}}\n"
)


def two_model_plan() -> Any:
    cfg = config("{illegal_parking: {name: coco}}", extra=FAST)
    models = load_rule_models(cfg, loader=fake_loader([]), ref_of=ref_of)
    return cfg, models, models.plan("cam")


def test_merge_keeps_each_rules_own_model() -> None:
    _, _, plan = two_model_plan()
    coco = make_detections([CAR, CAR], classes=["car", "person"], class_names=list(COCO_LABELS))
    synth = make_detections([CAR, CAR], classes=["vehicle", "stall"])
    merged = plan.merge({"coco@1.0.0": coco, "synth@1.0.0": synth})
    rows = sorted(zip(merged.data["model"], merged.class_name, merged.data["label"], strict=True))
    # every model's person and vehicle reach the engine (they can overrule a stall: `veto`), but parking
    # judges only the COCO model's vehicles (RuleEngine.seen_by) and no rule judges a person
    assert rows == [
        ("coco@1.0.0", "car", "vehicle"),
        ("coco@1.0.0", "person", "person"),
        ("synth@1.0.0", "stall", "vendor"),
        ("synth@1.0.0", "vehicle", "vehicle"),
    ]
    assert plan.rules["illegal_parking"] == "coco@1.0.0" and plan.rules["unclean_road"] == "synth@1.0.0"


def test_each_rule_sees_only_its_model_and_events_name_it() -> None:
    """A parked car seen by both models (and one only the bureau model sees) opens one parking case, by
    the COCO model; a stall seen by the bureau model opens a vending case named after the bureau model."""
    cfg, models, plan = two_model_plan()
    sink = ListSink()
    pipe = models.pipeline(cfg.streams[0], sink)
    image = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)
    stall = [600.0, 400.0, 700.0, 500.0]
    for ts in every(1_000_000.0, 1_000_040.0):
        coco = make_detections([CAR], classes="car", class_names=list(COCO_LABELS))
        synth = make_detections([CAR, shifted_car(), stall], classes=["vehicle", "vehicle", "stall"])
        pipe.process(ts, image, plan.merge({"coco@1.0.0": coco, "synth@1.0.0": synth}))
    opened = [(e["rule"], e["model"]["name"]) for e in sink.events if e["event"] == "opened"]
    assert sorted(opened) == [("illegal_parking", "coco"), ("street_vending", "synth")]
    # both models' vehicles on the same spot are tracked apart: the COCO car keeps one track throughout
    tracks = pipe.engine.tracker.tracks.values()
    assert sorted((t.source, t.label, t.hits) for t in tracks if t.label == "vehicle") == [
        ("coco@1.0.0", "vehicle", 21),
        ("synth@1.0.0", "vehicle", 21),
        ("synth@1.0.0", "vehicle", 21),
    ]


def shifted_car() -> list[float]:
    return [CAR[0] + 300, CAR[1], CAR[2] + 300, CAR[3]]  # a second car only the bureau model reports


def test_engine_filters_by_model_even_when_labels_overlap() -> None:
    """Defence in depth: a detection that reached the engine with another model's id is not judged."""
    cfg, models, _ = two_model_plan()
    pipe = models.pipeline(cfg.streams[0], ListSink())
    dets = make_detections([CAR, CAR], classes=["vehicle", "vehicle"])
    dets.data["label"] = np.array(["vehicle", "vehicle"], dtype=object)
    dets.data["model"] = np.array(["coco@1.0.0", "synth@1.0.0"], dtype=object)
    seen = pipe.engine.seen_by("illegal_parking", dets)
    assert list(seen.data["model"]) == ["coco@1.0.0"]
    assert len(pipe.engine.seen_by("street_vending", dets)) == 1
    assert len(pipe.engine.seen_by("illegal_parking", Detections.empty())) == 0


@pytest.mark.parametrize(
    ("first", "second", "same_track"),
    [
        ("coco@1.0.0", "coco@1.0.0", True),
        ("coco@1.0.0", "synth@1.0.0", False),  # another model's vehicle on the spot is another track
        (None, None, True),  # one model: detections carry no model
    ],
)
def test_tracks_do_not_pass_between_models(first: str | None, second: str | None, same_track: bool) -> None:
    from detector.rules.tracker import Tracker

    def det(model: str | None) -> Detections:
        d = make_detections([CAR], classes="vehicle")
        if model is not None:
            d.data["label"] = np.array(["vehicle"], dtype=object)
            d.data["model"] = np.array([model], dtype=object)
        return d

    tracker = Tracker()
    a = tracker.update(det(first), 0.0, FRAME)
    b = tracker.update(det(second), 2.0, FRAME)
    assert a.tracker_id is not None and b.tracker_id is not None
    assert (int(a.tracker_id[0]) == int(b.tracker_id[0])) is same_track
