from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from detector.rules.base import ViolationUpdate
from detector.rules.engine import RuleEngine
from detector.rules.params import RulesConfig, VendingParams
from detector.rules.vending import in_active_hours
from detector.rules.zones import Zone
from tests.unit.factories import FRAME, events, every, make_detections, run, shifted

SH = ZoneInfo("Asia/Shanghai")
STALL = [400.0, 250.0, 500.0, 330.0]  # bottom-centre (450, 330)
ZONE = Zone("nv-1", [[0.2, 0.3], [0.8, 0.3], [0.8, 0.9], [0.2, 0.9]], ["street_vending"])


def local(hh: int, mm: int = 0, day: int = 1) -> float:
    return datetime(2026, 1, day, hh, mm, tzinfo=SH).timestamp()


@pytest.mark.parametrize(
    ("hours", "at", "expected"),
    [
        ([], (3, 0), True),
        (["08:00-20:00"], (8, 0), True),  # start inclusive
        (["08:00-20:00"], (19, 59), True),
        (["08:00-20:00"], (20, 0), False),  # end exclusive
        (["08:00-20:00"], (7, 59), False),
        (["20:00-06:00"], (23, 30), True),  # wraps midnight
        (["20:00-06:00"], (5, 59), True),
        (["20:00-06:00"], (6, 0), False),
        (["20:00-06:00"], (12, 0), False),
        (["06:00-09:00", "17:00-24:00"], (23, 59), True),
        (["06:00-09:00", "17:00-24:00"], (12, 0), False),
        (["00:00-00:00"], (12, 0), True),  # equal ends: all day
    ],
)
def test_active_hours(hours: list[str], at: tuple[int, int], expected: bool) -> None:
    assert in_active_hours(hours, "Asia/Shanghai", local(*at)) is expected


def test_active_hours_use_the_given_timezone() -> None:
    ts = local(10)  # 10:00 in Shanghai is 03:00 in Berlin (winter)
    assert in_active_hours(["08:00-20:00"], "Asia/Shanghai", ts)
    assert not in_active_hours(["08:00-20:00"], "Europe/Berlin", ts)


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"active_hours": ["08:00-20:00"]}, True),
        ({"active_hours": [" 22:30-06:15 "]}, True),
        ({"active_hours": ["17:00-24:00"]}, True),
        ({"active_hours": ["8:00-20:00"]}, False),
        ({"active_hours": ["08:00-24:30"]}, False),
        ({"active_hours": ["24:00-06:00"]}, False),
        ({"active_hours": ["08:60-20:00"]}, False),
        ({"active_hours": ["08:00 20:00"]}, False),
        ({"timezone": "Mars/Olympus"}, False),
        ({"dwell_s": -5}, False),
        ({"cell": 0}, False),
    ],
)
def test_params(kwargs: dict[str, object], ok: bool) -> None:
    if ok:
        VendingParams.model_validate(kwargs)
    else:
        with pytest.raises(ValidationError):
            VendingParams.model_validate(kwargs)


def _engine(hours: list[str]) -> RuleEngine:
    cfg = RulesConfig().merged({"street_vending": {"active_hours": hours}})
    return RuleEngine([ZONE], cfg, {"stall": "vendor"}.get)


def stall(ts: float) -> object:
    return make_detections([STALL], classes="stall")


@pytest.mark.parametrize(
    ("name", "hours", "start", "stop", "expected"),
    [
        ("always, dwell exactly", [], local(10), local(10, 5), [("opened", local(10, 5))]),
        ("always, just short", [], local(10), local(10, 5) - 2, []),
        ("inside the hours", ["08:00-20:00"], local(10), local(10, 5) + 58, [("opened", local(10, 5))]),
        ("outside the hours", ["20:00-06:00"], local(10), local(10, 30), []),
        (
            "hours start mid-way: dwell counts from the start",
            ["10:10-12:00"],
            local(10),
            local(10, 15),
            [("opened", local(10, 15))],
        ),
        (
            "after hours the stall ages out",
            ["08:00-10:06"],
            local(10),
            local(10, 8),
            [("opened", local(10, 5)), ("cleared", local(10, 7))],
        ),
    ],
)
def test_vending(
    name: str, hours: list[str], start: float, stop: float, expected: list[tuple[str, float]]
) -> None:
    assert events(run(_engine(hours), every(start, stop), stall)) == expected, name  # type: ignore[arg-type]


def test_outside_zone_and_other_classes() -> None:
    outside = [10.0, 10.0, 60.0, 60.0]
    scene = lambda ts: make_detections([outside, STALL], classes=["stall", "vehicle"])  # noqa: E731
    assert run(_engine([]), every(0, 400), scene) == []


def test_keyed_per_stall_position_not_track() -> None:
    """A stall seen intermittently (new track ids) and jittering across a cell border is one violation."""
    border = [475.0, 250.0, 525.0, 300.0]  # bottom-centre x=500: exactly on a 50 px cell border

    def scene(ts: float) -> object:
        if int(ts) % 200 < 150:  # gone for 50 s at a time: new track after each gap with max_age 30
            return make_detections([shifted(border, dx=(-3 if int(ts) % 4 else 3))], classes="stall")
        return make_detections([], classes="stall")

    eng = RuleEngine([ZONE], None, {"stall": "vendor"}.get)
    eng.tracker.max_age_s = 30  # force new track ids after each gap
    out: list[ViolationUpdate] = []
    track_ids: set[int] = set()
    for ts in every(0, 700):
        out += eng.step(scene(ts), ts, FRAME)  # type: ignore[arg-type]
        if eng.last_detections.tracker_id is not None:
            track_ids |= set(eng.last_detections.tracker_id.tolist())
    assert {u.violation_key for u in out} == {"street_vending:nv-1:cell10x6@0"}
    assert events(out)[0] == ("opened", 300)
    assert len(track_ids) == 4  # the tracker lost the stall after each gap; the violation did not


def test_two_stalls_apart_two_violations() -> None:
    scene = lambda ts: make_detections([STALL, shifted(STALL, dx=200)], classes="stall")  # noqa: E731
    out = run(_engine([]), every(0, 300), scene)
    assert len({u.violation_key for u in out}) == 2
    assert {u.label for u in out} == {"vendor"}
