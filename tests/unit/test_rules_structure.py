from __future__ import annotations

from collections.abc import Callable

import pytest

from detector.contracts.detections import Detections
from detector.rules.engine import RuleEngine
from detector.rules.params import RulesConfig
from detector.rules.structure import StructureRule
from detector.rules.zones import Zone
from tests.unit.factories import FRAME, events, every, make_detections, run

SHED = [600.0, 100.0, 800.0, 300.0]
ZONE = Zone("st-1", [[0, 0], [1, 0], [1, 1], [0, 1]], ["illegal_structure"])


def shed(score: float = 0.8) -> Callable[[float], Detections]:
    return lambda ts: make_detections([SHED], scores=score, classes="structure")


def _engine(**params: object) -> RuleEngine:
    return RuleEngine([ZONE], RulesConfig().merged({"illegal_structure": params}))


@pytest.mark.parametrize(
    ("name", "params", "times", "scene", "expected"),
    [
        ("4 samples: not yet", {}, [0, 60, 120, 180], shed(), []),
        ("5th sample opens", {}, [0, 60, 120, 180, 240], shed(), [("opened", 240)]),
        ("min_samples 1 opens at once", {"min_samples": 1}, [0], shed(), [("opened", 0)]),
        ("weak scores never", {}, every(0, 600, 60), shed(0.2), []),
        (
            "hidden 9 min inside the 10 min grace: kept",
            {},
            [*every(0, 240, 60), *every(300, 840, 60)],
            lambda ts: make_detections([SHED] if ts < 300 or ts > 800 else [], classes="structure"),
            [("opened", 240), ("updated", 840)],
        ),
        (
            "demolished: cleared after 600 s of frames",
            {},
            every(0, 1200, 60),
            lambda ts: make_detections([SHED] if ts <= 300 else [], classes="structure"),
            [("opened", 240), ("updated", 300), ("cleared", 960)],
        ),
    ],
)
def test_structure(
    name: str,
    params: dict[str, object],
    times: list[float],
    scene: Callable[[float], Detections],
    expected: list[tuple[str, float]],
) -> None:
    assert events(run(_engine(**params), times, scene)) == expected, name


def test_keyed_per_footprint() -> None:
    (opened,) = run(_engine(), [0, 60, 120, 180, 240], shed())
    assert (
        opened.violation_key == "illegal_structure:st-1:cell14x6@0"
    )  # bottom-centre (700, 300), 50 px cells
    assert opened.first_seen == 0


def test_rule_alone_without_zones_for_it() -> None:
    rule = StructureRule([Zone("other", [[0, 0], [1, 0], [1, 1]], ["unclean_road"])])
    assert rule.zones == []
    assert rule.step(make_detections([SHED], classes="structure"), 0.0, FRAME) == []
