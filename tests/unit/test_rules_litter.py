from __future__ import annotations

from collections.abc import Callable

import pytest

from detector.contracts.detections import Detections
from detector.rules.engine import RuleEngine
from detector.rules.params import RulesConfig
from detector.rules.zones import Zone
from tests.unit.factories import FRAME, events, every, make_detections, run, shifted

ROAD = Zone("road-1", [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], ["unclean_road"])
FRAME_AREA = FRAME[0] * FRAME[1]  # 600 000 px; min_area 0.0005 -> 300 px
BAG = [100.0, 400.0, 120.0, 420.0]  # 400 px, bottom-centre (110, 420): cell 2x8 with 50 px cells


def litter(*boxes: list[float]) -> Callable[[float], Detections]:
    return lambda ts: make_detections(list(boxes), classes="litter")


def _engine(**params: object) -> RuleEngine:
    return RuleEngine([ROAD], RulesConfig().merged({"unclean_road": params}))


@pytest.mark.parametrize(
    ("name", "params", "times", "scene", "expected"),
    [
        ("dwell exactly 120 s", {}, every(0, 120), litter(BAG), [("opened", 120)]),
        ("dwell just short", {}, every(0, 118), litter(BAG), []),
        ("area below min_area", {}, every(0, 200), litter([100, 400, 117, 417]), []),  # 289 px
        (
            "area exactly min_area",
            {},
            every(0, 120),
            litter([100, 400, 120, 415]),
            [("opened", 120)],
        ),  # 300 px
        ("min_area override", {"min_area": 0.001}, every(0, 200), litter(BAG), []),
        ("off the road zone", {}, every(0, 200), litter([100, 100, 120, 120]), []),
        (
            "swept away: cleared after the grace",
            {},
            every(0, 300),
            lambda ts: make_detections([BAG] if ts <= 150 else [], classes="litter"),
            [("opened", 120), ("cleared", 212)],
        ),
        (
            "blown about inside its cell: one violation",
            {},
            every(0, 120),
            lambda ts: make_detections([shifted(BAG, dx=(ts % 3) * 8)], classes="litter"),
            [("opened", 120)],
        ),
    ],
)
def test_litter(
    name: str,
    params: dict[str, object],
    times: list[float],
    scene: Callable[[float], Detections],
    expected: list[tuple[str, float]],
) -> None:
    assert events(run(_engine(**params), times, scene)) == expected, name


def test_two_boxes_in_one_cell_are_one_violation() -> None:
    other = [125.0, 405.0, 145.0, 425.0]  # bottom-centre (135, 425): the same 50 px cell as BAG
    out = run(_engine(), every(0, 120), litter(BAG, other))
    (opened,) = out
    assert opened.violation_key == "unclean_road:road-1:cell2x8@0"
    assert opened.bbox == pytest.approx((100, 400, 145, 425))  # the union of the cell's boxes


def test_boxes_in_different_cells_are_two() -> None:
    out = run(_engine(), every(0, 120), litter(BAG, shifted(BAG, dx=300)))
    assert sorted(u.violation_key for u in out) == [
        "unclean_road:road-1:cell2x8@0",
        "unclean_road:road-1:cell8x8@0",
    ]


def test_cell_border_jitter_is_one_violation() -> None:
    border = [140.0, 400.0, 160.0, 420.0]  # bottom-centre x=150: on the border of cells 2 and 3
    scene = lambda ts: make_detections([shifted(border, dx=-2 if int(ts) % 4 else 2)], classes="litter")  # noqa: E731
    out = run(_engine(), every(0, 200), scene)
    assert [u.event for u in out] == ["opened", "updated"]
    assert len({u.violation_key for u in out}) == 1


def test_best_frame_is_the_best_score() -> None:
    scores = {10.0: 0.95, 50.0: 0.7}
    scene = lambda ts: make_detections([BAG], scores=scores.get(ts, 0.6), classes="litter")  # noqa: E731
    (opened,) = run(_engine(), every(0, 120), scene)
    assert (opened.best_frame_ts, opened.first_seen, opened.last_seen) == (10, 0, 120)
    assert opened.score_top == pytest.approx(0.95)
