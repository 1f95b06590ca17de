from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detector.rules.zones import Zone, ZoneError, points_in_polygon, segments_intersect

SQUARE = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]
# An L shape: the notch [0.3..0.5] x [0.1..0.3] is outside.
L_SHAPE = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3], [0.5, 0.3], [0.5, 0.5], [0.1, 0.5]]
FRAME = (1000, 1000)


@pytest.mark.parametrize(
    ("polygon", "point", "inside"),
    [
        (SQUARE, (300, 300), True),
        (SQUARE, (50, 50), False),
        (SQUARE, (600, 300), False),
        (SQUARE, (300, 99.9), False),
        (SQUARE, (100, 300), True),  # on the left edge
        (SQUARE, (500, 300), True),  # on the right edge
        (SQUARE, (300, 500), True),  # on the bottom edge
        (SQUARE, (100, 100), True),  # a vertex
        (SQUARE, (500.5, 300), False),
        (L_SHAPE, (200, 200), True),
        (L_SHAPE, (400, 200), False),  # in the notch
        (L_SHAPE, (400, 400), True),
        (L_SHAPE, (300, 200), True),  # on the notch's edge
    ],
)
def test_point_in_zone(polygon: list[list[float]], point: tuple[float, float], inside: bool) -> None:
    zone = Zone("z", polygon, ["illegal_parking"])
    assert zone.contains_points([point], FRAME).tolist() == [inside]


@pytest.mark.parametrize(
    ("box", "inside"),
    [
        ([250, 250, 350, 350], True),
        ([250, 20, 350, 300], True),  # top and centre outside, bottom-centre inside
        ([250, 300, 350, 700], False),  # centre inside, bottom-centre below the zone
        ([450, 300, 650, 450], False),  # bottom-centre x = 550, right of the zone
        ([0, 0, 200, 500], True),  # bottom-centre (100, 500) is the corner
    ],
)
def test_boxes_use_bottom_centre(box: list[float], inside: bool) -> None:
    zone = Zone("z", SQUARE, ["unclean_road"])
    assert zone.contains_boxes([box], FRAME).tolist() == [inside]


def test_scaled_to_frame_size() -> None:
    zone = Zone("z", SQUARE, ["illegal_parking"])
    assert np.allclose(zone.scaled((640, 360)), [[64, 36], [320, 36], [320, 180], [64, 180]])
    # The same normalised zone holds the same relative point at any resolution.
    assert zone.contains_points([(0.3 * 640, 0.3 * 360)], (640, 360)).tolist() == [True]


def _reference(point: np.ndarray, poly: np.ndarray) -> bool:
    inside = False
    k = len(poly)
    for i in range(k):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % k]
        crosses = (y1 > point[1]) != (y2 > point[1])
        if crosses and point[0] < x1 + (point[1] - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def test_many_points_match_a_scalar_reference() -> None:
    rng = np.random.default_rng(7)
    poly = np.asarray(L_SHAPE) * 1000
    points = rng.uniform(0, 600, size=(2000, 2))
    expected = [_reference(p, poly) for p in points]
    assert points_in_polygon(points, poly).tolist() == expected


def test_no_points() -> None:
    assert points_in_polygon(np.zeros((0, 2)), np.asarray(SQUARE)).shape == (0,)


def test_closed_ring_is_accepted() -> None:
    zone = Zone("z", [*SQUARE, SQUARE[0]], ["illegal_parking"])
    assert len(zone.polygon) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"polygon": [[0.1, 0.1], [0.5, 0.1]]}, "at least 3"),
        ({"polygon": [[0.1, 0.1], [0.5, 0.1], [0.1, 0.1]]}, "at least 3"),  # closed ring of 2
        ({"polygon": [[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]]}, "outside \\[0, 1\\]"),
        ({"polygon": [[-0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]}, "outside \\[0, 1\\]"),
        ({"polygon": [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]]}, "cross"),  # bow-tie
        ({"polygon": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}, "zero area"),
        ({"polygon": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.1], [0.1, 0.5]]}, "repeats"),
        ({"polygon": [[0.1, 0.1, 0.2], [0.5, 0.1, 0.2], [0.5, 0.5, 0.2]]}, "pairs"),
        ({"polygon": [[0.1, 0.1], [0.5, float("nan")], [0.5, 0.5]]}, "non-finite"),
        ({"polygon": "abc"}, "pairs"),
        ({"rules": []}, "at least one rule"),
        ({"rules": ["no_smoking"]}, "unknown rule"),
        ({"id": ""}, "non-empty"),
        ({"params": {"illegal_parking": {"dwell_s": -1}}}, "bad rule parameters"),
        ({"params": {"illegal_parking": {"dwel_s": 10}}}, "bad rule parameters"),
        ({"params": {"street_vending": {"active_hours": ["8-20"]}}}, "bad rule parameters"),
    ],
)
def test_bad_zones(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"id": "z", "polygon": SQUARE, "rules": ["illegal_parking"]} | kwargs
    with pytest.raises(ZoneError, match=message):
        Zone(**args)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"id": "a", "polygon": SQUARE, "rules": ["unclean_road"]}, ("a", ("unclean_road",))),
        (
            {
                "id": "b",
                "polygon": SQUARE,
                "rules": ["street_vending"],
                "params": {"street_vending": {"dwell_s": 60}},
            },
            ("b", ("street_vending",)),
        ),
        ({"id": "c", "polygon": SQUARE}, ZoneError),
        ({"id": "d", "polygon": SQUARE, "rules": ["unclean_road"], "colour": "red"}, ZoneError),
    ],
)
def test_from_config(data: dict[str, Any], expected: Any) -> None:
    if expected is ZoneError:
        with pytest.raises(ZoneError):
            Zone.from_config(data)
        return
    zone = Zone.from_config(data)
    assert (zone.id, tuple(zone.rules)) == expected


def test_zone_config_merges_overrides() -> None:
    from detector.rules.params import RulesConfig

    zone = Zone("z", SQUARE, ["illegal_parking"], {"illegal_parking": {"dwell_s": 60}})
    cfg = zone.config(RulesConfig().merged({"illegal_parking": {"min_score": 0.5}}))
    assert (cfg.illegal_parking.dwell_s, cfg.illegal_parking.min_score) == (60, 0.5)
    assert zone.enforces("illegal_parking") and not zone.enforces("unclean_road")


@pytest.mark.parametrize(
    ("seg", "expected"),
    [
        (((0, 0), (1, 1), (0, 1), (1, 0)), True),
        (((0, 0), (1, 0), (0, 1), (1, 1)), False),
        (((0, 0), (1, 0), (1, 0), (2, 0)), True),  # touching end to end
        (((0, 0), (1, 0), (2, 0), (3, 0)), False),  # collinear, apart
        (((0, 0), (2, 0), (1, 0), (1, 1)), True),  # T junction
    ],
)
def test_segments_intersect(seg: tuple[tuple[float, float], ...], expected: bool) -> None:
    a, b, c, d = (np.asarray(p, float) for p in seg)
    assert segments_intersect(a, b, c, d) is expected


def test_bad_frame_size() -> None:
    with pytest.raises(ZoneError, match="positive"):
        Zone("z", SQUARE, ["illegal_parking"]).scaled((0, 100))


def test_zones_are_hashable_values() -> None:
    a = Zone("z", SQUARE, ["illegal_parking"], {"illegal_parking": {"dwell_s": 60}})
    b = Zone("z", SQUARE, ["illegal_parking"], {"illegal_parking": {"dwell_s": 60}})
    assert a == b and len({a, b}) == 1
