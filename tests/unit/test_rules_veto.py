"""A detection another model confidently calls a person or a vehicle does not feed vending, litter or
structure rules (``veto``): the table of overlaps, and the engine end to end."""

from __future__ import annotations

import numpy as np
import pytest

from detector.contracts.detections import NATIVE_CONFIDENCE, Detections
from detector.rules.engine import RuleEngine, label_map, vetoed
from detector.rules.params import RulesConfig
from detector.rules.zones import Zone


def dets(rows: list[tuple[tuple[float, float, float, float], str, float]]) -> Detections:
    names = sorted({r[1] for r in rows})
    return Detections.from_arrays(
        np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
        np.array([r[2] for r in rows], np.float32),
        np.array([names.index(r[1]) for r in rows], np.int64),
        names,
    )


STALL = (100.0, 100.0, 200.0, 200.0)


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        (((100.0, 100.0, 200.0, 200.0), "person", 0.9), True),  # the same box: a person, not a stall
        (((80.0, 80.0, 260.0, 260.0), "car", 0.8), True),  # the "stall" lies inside a car
        (((100.0, 100.0, 200.0, 200.0), "person", 0.3), False),  # a faint person overrules nothing
        (((180.0, 100.0, 230.0, 200.0), "person", 0.9), False),  # a vendor beside the stall
        (((100.0, 100.0, 200.0, 200.0), "bicycle", 0.9), False),  # not a vetoing class
        (((150.0, 150.0, 400.0, 400.0), "person", 0.9), False),  # a quarter inside: IoU 0.12
    ],
)
def test_veto_table(other: tuple[tuple[float, float, float, float], str, float], expected: bool) -> None:
    mine = dets([(STALL, "stall", 0.6)])
    everything = dets([(STALL, "stall", 0.6), other])
    assert vetoed(mine, everything, ["person", "car"], 0.5, 0.6).tolist() == [expected]


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        (0.9, True),  # the model's own pass was sure of the car: it overrules the stall
        (0.3, False),  # only a zoomed pass's confirmation lifted it to 0.8: too unsure to overrule
    ],
)
def test_veto_judges_by_the_native_score(native: float, expected: bool) -> None:
    """A box a zoomed pass confirmed (detector/inference/zoom.py) vetoes by its native score."""
    mine = dets([(STALL, "stall", 0.6)])
    car = dets([((80.0, 80.0, 260.0, 260.0), "car", 0.8)])
    car.data[NATIVE_CONFIDENCE] = np.array([native], np.float32)
    everything = Detections.merge([mine, car])
    assert NATIVE_CONFIDENCE not in everything.data  # merge keeps only the keys every part has
    assert vetoed(mine, car, ["car"], 0.5, 0.6).tolist() == [expected]


def run(frames: list[Detections], veto: list[str]) -> list[str]:
    zone = Zone.from_config(
        {"id": "z", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]], "rules": ["street_vending"], "params": {}}
    )
    cfg = RulesConfig().merged({"street_vending": {"dwell_s": 10, "veto": veto}})
    engine = RuleEngine([zone], cfg, label_map({"stall": "vendor"}))
    events = []
    for i, d in enumerate(frames):
        events += [u.event for u in engine.step(d, 1_780_000_000.0 + 2 * i, (640, 360))]
    return events


@pytest.mark.parametrize(("veto", "expected"), [(["person"], []), ([], ["opened"])])
def test_a_person_boxed_as_a_stall_opens_no_case(veto: list[str], expected: list[str]) -> None:
    frame = dets([(STALL, "stall", 0.6), (STALL, "person", 0.9)])
    assert run([frame] * 10, veto) == expected
