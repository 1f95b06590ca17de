from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from detector.rules import RULE_NAMES, RuleEngine, label_map
from detector.rules.base import RuleError
from detector.rules.params import ParkingParams, RulesConfig
from detector.rules.tracker import FrameTimeError
from detector.rules.zones import Zone, ZoneError
from tests.unit.factories import FRAME, events, every, make_detections, run, shifted

CAR = [100.0, 300.0, 260.0, 400.0]
BAG = [600.0, 500.0, 630.0, 530.0]
ALL = Zone("all", [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], list(RULE_NAMES))
COCO = label_map({"car": "vehicle", "truck": "vehicle", "bus": "vehicle", "motorcycle": "vehicle"})


@pytest.mark.parametrize(
    ("cls", "label_of", "opens"),
    [
        ("vehicle", None, True),  # the class name is the label
        ("car", COCO, True),
        ("truck", COCO, True),
        ("person", COCO, False),  # not mapped, not listed in the rule's classes
        ("car", None, False),
    ],
)
def test_labels_map_model_classes(cls: str, label_of: Any, opens: bool) -> None:
    engine = RuleEngine([ALL], None, label_of)
    out = run(engine, every(0, 300), lambda ts: make_detections([CAR], classes=cls))
    assert [u.event for u in out] == (["opened"] if opens else [])
    if opens:
        assert out[0].label == "vehicle"


def test_rule_classes_may_name_model_classes() -> None:
    cfg = RulesConfig().merged({"illegal_parking": {"classes": ["tuk-tuk"]}})
    out = run(RuleEngine([ALL], cfg), every(0, 300), lambda ts: make_detections([CAR], classes="tuk-tuk"))
    assert events(out) == [("opened", 300)]


def test_flush_reports_without_clearing_and_close_all_clears() -> None:
    engine = RuleEngine([ALL])
    scene = lambda ts: make_detections([CAR, BAG], classes=["vehicle", "litter"])  # noqa: E731
    out = run(engine, every(0, 310), scene)
    assert events(out) == [
        ("opened", 120),
        ("updated", 180),
        ("updated", 240),
        ("opened", 300),
        ("updated", 300),
    ]
    flushed = engine.flush(310.0)
    assert sorted((u.rule, u.event, u.last_seen) for u in flushed) == [
        ("illegal_parking", "updated", 310),
        ("unclean_road", "updated", 310),
    ]
    assert engine.flush(310.0) == []  # nothing new since
    assert len(engine.active()) == 2  # flush clears nothing
    closed = engine.close_all(312.0)
    assert {(u.rule, u.event, u.ts) for u in closed} == {
        ("illegal_parking", "cleared", 312),
        ("unclean_road", "cleared", 312),
    }
    assert engine.active() == [] and engine.evidence_frames() == set()


def test_same_input_same_updates() -> None:
    def scene(ts: float) -> Any:
        boxes = [CAR, BAG] if int(ts) % 14 else [BAG]
        return make_detections(
            boxes, scores=0.6 + (int(ts) % 7) / 20, classes=["vehicle", "litter"][-len(boxes) :]
        )

    first = run(RuleEngine([ALL]), every(0, 900), scene)
    second = run(RuleEngine([ALL]), every(0, 900), scene)
    assert first == second and len(first) > 5


def test_evidence_frames_are_the_best_frames() -> None:
    engine = RuleEngine([ALL])
    scores = {4.0: 0.99}
    run(engine, every(0, 20), lambda ts: make_detections([CAR], scores=scores.get(ts, 0.5)))
    assert engine.evidence_frames() == {4.0}


def test_replay_faster_than_real_time_is_the_same() -> None:
    """Only frame timestamps matter: the same frames give the same events however fast they come."""
    scene = lambda ts: make_detections([shifted(CAR, dx=1 if int(ts) % 4 else 0)])  # noqa: E731
    a = run(RuleEngine([ALL]), every(1_767_225_600, 1_767_226_000), scene)
    assert events(a) == [("opened", 1_767_225_900), ("updated", 1_767_225_960)]
    assert a[0].violation_key == "illegal_parking:all:track1@1767225600"


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: RuleEngine([ALL, ALL]), ZoneError),
        (lambda: RuleEngine([ALL]).step(make_detections([]), 0.0, (0, 100)), RuleError),
        (lambda: RuleEngine([ALL]).step(make_detections([]), float("inf"), FRAME), FrameTimeError),
    ],
)
def test_bad_input(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_time_must_not_go_backwards() -> None:
    engine = RuleEngine([ALL])
    engine.step(make_detections([CAR]), 10.0, FRAME)
    with pytest.raises(FrameTimeError, match="backwards"):
        engine.step(make_detections([CAR]), 9.0, FRAME)


def test_parking_needs_tracks() -> None:
    from detector.rules.parking import ParkingRule

    with pytest.raises(RuleError, match="tracker"):
        ParkingRule([ALL]).step(make_detections([CAR]), 0.0, FRAME)


# ---------------------------------------------------------------------- params
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, (300, 0.35, 0.7, 120)),
        ({"illegal_parking": {"dwell_s": 60}}, (60, 0.35, 0.7, 120)),
        ({"illegal_parking": {"stationary_iou": 0.8, "min_score": 0.5}}, (300, 0.5, 0.8, 120)),
        ({"unclean_road": {"dwell_s": 30}}, (300, 0.35, 0.7, 30)),
        ({"illegal_parking": {"dwell_s": -1}}, ValidationError),
        ({"illegal_parking": {"stationary_iou": 0}}, ValidationError),
        ({"illegal_parking": {"min_score": 1.5}}, ValidationError),
        ({"illegal_parking": {"colour": "red"}}, ValidationError),
        ({"no_such_rule": {}}, ValidationError),
        ({"illegal_structure": {"min_samples": 0}}, ValidationError),
    ],
)
def test_merged(overrides: dict[str, Any], expected: Any) -> None:
    if expected is ValidationError:
        with pytest.raises(ValidationError):
            RulesConfig().merged(overrides)
        return
    cfg = RulesConfig().merged(overrides)
    p = cfg.illegal_parking
    assert (p.dwell_s, p.min_score, p.stationary_iou, cfg.unclean_road.dwell_s) == expected


def test_merge_is_deep_and_layered() -> None:
    stream = RulesConfig().merged({"street_vending": {"active_hours": ["08:00-20:00"], "dwell_s": 120}})
    zone = stream.merged({"street_vending": {"dwell_s": 60}})
    assert (zone.street_vending.active_hours, zone.street_vending.dwell_s) == (["08:00-20:00"], 60)
    assert stream.street_vending.dwell_s == 120  # the stream's config is untouched


def test_defaults() -> None:
    cfg = RulesConfig()
    assert cfg.illegal_parking == ParkingParams()
    assert (cfg.illegal_parking.classes, cfg.street_vending.classes) == (["vehicle"], ["vendor"])
    assert (cfg.illegal_structure.grace_s, cfg.illegal_structure.min_samples) == (600, 5)
    assert (cfg.unclean_road.min_area, cfg.unclean_road.cell, cfg.unclean_road.dwell_s) == (0.0005, 0.05, 120)
    assert (cfg.street_vending.timezone, cfg.street_vending.active_hours) == ("Asia/Shanghai", [])
    assert set(RulesConfig.model_fields) == set(RULE_NAMES)
