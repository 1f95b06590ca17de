"""detector/contracts/zones.py: the zone checks `citywatch config check` and the API's zone editor share.

Every row of ZONES is judged twice, by ``check_zones`` (plain data + the exported schema, what the API
runs) and by ``load_config_text`` (the pydantic models, what ``config check`` runs): both must give the
same problems -- key path, message and hint -- and the row's expected ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detector.config import ConfigError, load_config_text
from detector.config.schema_export import render
from detector.contracts.problems import format_path
from detector.contracts.schemas import schema_path
from detector.contracts.zones import (
    RULE_NAMES,
    STREAMS_SCHEMA_FILE,
    active_hours_error,
    check_zones,
    close_polygon,
    duplicate_zone_ids,
    polygon_problems,
    polygon_shape_problems,
    rule_name_problems,
    timezone_error,
)
from detector.rules.params import RulesConfig

SQUARE = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]


def zone(**changes: Any) -> dict[str, Any]:
    return {"id": "z", "polygon": SQUARE, "rules": ["illegal_parking"], **changes}


def params(rule: str, **values: Any) -> dict[str, Any]:
    return zone(rules=[rule], params={rule: values})


# (id, zones, [(path below zones, message or hint substring)]); [] = valid
ZONES: list[tuple[str, Any, list[tuple[str, str]]]] = [
    ("valid", [zone(), zone(id="b", name="东侧", rules=["unclean_road", "street_vending"])], []),
    ("no zones", [], []),
    ("closing point", [zone(polygon=[*SQUARE, SQUARE[0]])], []),
    ("number strings as pydantic reads them", [params("illegal_parking", dwell_s="30", enabled="yes")], []),
    ("params valid", [params("street_vending", active_hours=["22:00-06:00"], timezone="Asia/Shanghai")], []),
    ("zones not a list", "curb", [("", "zones should be a valid list")]),
    ("zone not a mapping", [5], [("[0]", "expected a mapping of keys, got a number")]),
    ("id missing", [{"polygon": SQUARE, "rules": ["unclean_road"]}], [("[0].id", "required key is missing")]),
    ("id not an id", [zone(id="bad id")], [("[0].id", "should match pattern")]),
    ("id not text", [zone(id=7)], [("[0].id", "id should be a valid string")]),
    ("name not text", [zone(name=["a"])], [("[0].name", "name should be a valid string")]),
    ("unknown key", [zone(rule=["x"])], [("[0].rule", "unknown key 'rule'")]),
    ("two points", [zone(polygon=[[0, 0], [1, 0]])], [("[0].polygon", "at least 3 points")]),
    ("pixels", [zone(polygon=[[0, 0], [640, 0], [640, 480]])],
     [("[0].polygon[1]", "x = 640 is outside"), ("[0].polygon[2]", "x = 640 and y = 480 are outside")]),
    ("point not a pair", [zone(polygon=[[0, 0], [1], [1, 1]])], [("[0].polygon[1]", "must be [x, y]")]),
    ("polygon not a list", [zone(polygon="0,0 1,0 1,1")], [("[0].polygon", "must be a list of [x, y]")]),
    ("bow tie", [zone(polygon=[[0, 0], [1, 1], [1, 0], [0, 1]])], [("[0].polygon", "self-intersecting")]),
    ("on one line", [zone(polygon=[[0, 0], [0.5, 0.5], [1, 1]])], [("[0].polygon", "no area")]),
    ("repeated point", [zone(polygon=[[0, 0], [0, 0], [1, 0], [1, 1]])], [("[0].polygon[1]", "repeats")]),
    ("no rules", [zone(rules=[])], [("[0].rules", "rules needs at least 1 item")]),
    ("rules not a list", [zone(rules="illegal_parking")], [("[0].rules", "rules should be a valid list")]),
    ("unknown rule", [zone(rules=["ilegal_parking"])], [("[0].rules[0]", "did you mean 'illegal_parking'")]),
    ("rule twice", [zone(rules=["unclean_road"] * 2)], [("[0].rules[1]", "listed twice")]),
    ("params not a mapping", [zone(params=[1])], [("[0].params", "expected a mapping of keys")]),
    ("stray params", [zone(params={"street_vending": {}})],
     [("[0].params.street_vending", "does not check")]),
    ("duplicate ids", [zone(), zone()], [("[1].id", "zone id 'z' is already used by zones[0]")]),
    ("negative dwell", [params("illegal_parking", dwell_s=-1)],
     [("[0].params.illegal_parking.dwell_s", "dwell_s should be greater than or equal to 0")]),
    ("dwell in words", [params("illegal_parking", dwell_s="5 min")],
     [("[0].params.illegal_parking.dwell_s", "unable to parse string as a number")]),
    ("min_score over 1", [params("illegal_parking", min_score=1.5)],
     [("[0].params.illegal_parking.min_score", "less than or equal to 1")]),
    ("iou 0", [params("illegal_parking", stationary_iou=0)],
     [("[0].params.illegal_parking.stationary_iou", "greater than 0")]),
    ("unknown parameter", [params("illegal_parking", dwel_s=5)],
     [("[0].params.illegal_parking.dwel_s", "unknown key 'dwel_s'")]),
    ("enabled maybe", [params("unclean_road", enabled="maybe")],
     [("[0].params.unclean_road.enabled", "should be a valid boolean")]),
    ("classes a string", [params("unclean_road", classes="litter")],
     [("[0].params.unclean_road.classes", "classes should be a valid list")]),
    ("min_samples 2.5", [params("illegal_structure", min_samples=2.5)],
     [("[0].params.illegal_structure.min_samples", "fractional part")]),
    ("min_samples 0", [params("illegal_structure", min_samples=0)],
     [("[0].params.illegal_structure.min_samples", "greater than or equal to 1")]),
    ("hours", [params("street_vending", active_hours=["25:00-07:00"])],
     [("[0].params.street_vending.active_hours", "'25:00-07:00' is not")]),
    ("time zone", [params("street_vending", timezone="Mars/Base")],
     [("[0].params.street_vending.timezone", "unknown time zone 'Mars/Base'")]),
    ("field problems before duplicate ids", [zone(rules=["x"]), zone()],
     [("[0].rules[0]", "unknown rule 'x'")]),
]  # fmt: skip


def via_config_check(zones: Any) -> list[tuple[str, str, str]]:
    text = "version: 1\nstreams:\n  - id: cam\n    url: a.mp4\n    zones: " + json.dumps(zones) + "\n"
    try:
        load_config_text(text, environ={})
    except ConfigError as exc:
        return sorted((i.path, i.message, i.hint) for i in exc.issues)
    return []


@pytest.mark.parametrize(("zones", "expected"), [pytest.param(z, e, id=i) for i, z, e in ZONES])
def test_the_api_and_config_check_find_the_same_problems(zones: Any, expected: list[tuple[str, str]]) -> None:
    problems = check_zones(zones)
    found = sorted((format_path(("streams", 0, "zones", *p.loc)), p.message, p.hint) for p in problems)
    assert found == via_config_check(zones)
    assert len(found) == len(expected), found
    for (path, message, hint), (want_path, want_message) in zip(found, sorted(expected), strict=True):
        assert path == "streams[0].zones" + want_path
        assert want_message in f"{message} (hint: {hint})"
        assert hint


@pytest.mark.parametrize(
    ("polygon", "words"),
    [
        (SQUARE, []),
        ([[0.1, 0.1], [0.9, 0.1], [0.5, 0.5], [0.9, 0.9], [0.1, 0.9]], []),  # concave
        ([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], []),  # on the frame's border
        ([[0, 0], [1, 0], [1, 1], [0, 0]], []),  # closed
        ([[0, 0], [1, 0]], ["at least 3 points"]),
        ([[-0.1, 0], [1, 0], [1, 2]], ["x = -0.1 is outside", "y = 2 is outside"]),
        ([[0, 0], [2, 2], [1, 0]], ["x = 2 and y = 2 are outside"]),
        ([[0, 0], [1, 0], [0.5, 0], [0.5, 1]], ["self-intersecting"]),  # folds back along its edge
        ([[0, 0], [1, 0], [1, 1], [0, 1], [1, 0.5]], ["self-intersecting"]),
        ([[0, 0], [1e-6, 0], [0, 1e-6]], ["no area"]),
    ],
)
def test_polygons(polygon: list[list[float]], words: list[str]) -> None:
    points = [(float(x), float(y)) for x, y in polygon]
    messages = [p.message for p in polygon_problems(points)]
    assert len(messages) == len(words), messages
    for message, word in zip(messages, words, strict=True):
        assert word in message


def test_closing_point_and_shapes() -> None:
    assert close_polygon([(0, 0), (1, 0), (1, 1), (0, 0)]) == [(0, 0), (1, 0), (1, 1)]
    assert close_polygon([(0, 0), (1, 0), (0, 0)]) == [(0, 0), (1, 0), (0, 0)]  # too short to be closed
    assert [p.loc for p in polygon_shape_problems([[0, 0], [True, 1], "x", [1, 2, 3]])] == [(1,), (2,), (3,)]
    assert polygon_shape_problems([[0, 0.5], (1, 1)]) == []


@pytest.mark.parametrize(
    ("names", "locs"),
    [
        (["illegal_parking", "unclean_road"], []),
        (["street_vendng"], [(0,)]),
        (["unclean_road", "unclean_road"], [(1,)]),
        ({"illegal_parking": {}, "bogus": {}}, [("bogus",)]),  # mapping keys (rules:, rule_models:)
    ],
)
def test_rule_names(names: Any, locs: list[tuple[Any, ...]]) -> None:
    assert [p.loc for p in rule_name_problems(names)] == locs


def test_rule_names_are_the_rules_the_detector_has() -> None:
    assert tuple(RulesConfig.model_fields) == RULE_NAMES


def test_duplicate_zone_ids_name_the_first() -> None:
    problems = duplicate_zone_ids(enumerate(["a", "b", "a", "a"]))
    assert [(p.loc, p.message) for p in problems] == [
        ((2, "id"), "zone id 'a' is already used by zones[0]"),
        ((3, "id"), "zone id 'a' is already used by zones[0]"),
    ]


@pytest.mark.parametrize(
    ("windows", "bad"),
    [(["07:00-10:00", "22:00-06:00", "17:00-24:00"], None), (["7:00-10:00"], "7:00-10:00"), (["x"], "x")],
)
def test_active_hours(windows: list[str], bad: str | None) -> None:
    error = active_hours_error(windows)
    assert (error is None) == (bad is None)
    assert bad is None or (error is not None and repr(bad) in error)


@pytest.mark.parametrize(("name", "ok"), [("Asia/Shanghai", True), ("UTC", True), ("Asia/Wuhan", False)])
def test_time_zones(name: str, ok: bool) -> None:
    assert (timezone_error(name) is None) is ok


def test_the_committed_streams_schema_is_current() -> None:
    """Run `python -m detector.config.schema_export` after changing detector/config/schema.py."""
    committed = schema_path(STREAMS_SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == render(), "detector/contracts/streams.v1.schema.json is stale: run the exporter"
