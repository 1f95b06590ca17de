"""A stream's zones -- polygon, rules, per-zone parameters -- and their checks, for everyone.

``citywatch config check`` (``detector.config``) and the case API's zone editor
(``PUT /streams/{id}/zones``) judge zones with these functions, so both refuse the same zones with the
same words. Plain data in (what YAML or JSON gives), a list of :class:`Problem` out, each located
relative to the value checked:

- :func:`polygon_shape_problems` / :func:`polygon_problems`: ``[x, y]`` points, at least 3, inside
  0..1, no repeated point, some area, no crossing edges;
- :func:`rule_name_problems`: known rule names (:data:`RULE_NAMES`), each once;
- :func:`stray_param_problems`: ``params`` only for rules the zone checks;
- :func:`duplicate_zone_ids`: zone ids unique within a stream;
- :func:`active_hours_error`, :func:`timezone_error`: the rule parameters no schema can judge;
- :func:`check_zones`: a whole ``zones:`` list, field types and bounds read from the exported
  streams schema (``streams.v1.schema.json``), in the order ``config check`` finds them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from detector.contracts.fields import JsonNode, SchemaChecker
from detector.contracts.problems import Loc, Problem, describe, did_you_mean
from detector.contracts.schemas import STREAMS_SCHEMA_FILE, load_contract

__all__ = [
    "RULE_NAMES",
    "STREAMS_SCHEMA_FILE",
    "Point",
    "active_hours_error",
    "check_zones",
    "close_polygon",
    "duplicate_zone_ids",
    "polygon_problems",
    "polygon_shape_problems",
    "rule_name_problems",
    "stray_param_problems",
    "timezone_error",
]

RULE_NAMES: Final = ("illegal_parking", "street_vending", "illegal_structure", "unclean_road")

Point = tuple[float, float]

_EPS: Final = 1e-9  # the tolerance of detector.rules.zones: what passes here passes there
_POINT_HINT: Final = "write each point as [x, y], e.g. [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95]]"
_RANGE_HINT: Final = (
    "coordinates are fractions of the frame width and height, 0 (left/top) to 1 (right/bottom)"
)
_PIXEL_HINT: Final = (
    "coordinates are fractions of the frame, not pixels: divide x by the width and y by the height"
)
_HOURS: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|24:00)$")


# -- polygons --------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def polygon_shape_problems(value: Any) -> list[Problem]:
    """A list of two-number points, with one problem per bad point."""
    if not isinstance(value, list | tuple):
        return [Problem((), "polygon must be a list of [x, y] points", _POINT_HINT)]
    return [
        Problem((index,), f"point {index} must be [x, y] with two numbers", _POINT_HINT)
        for index, point in enumerate(value)
        if not (isinstance(point, list | tuple) and len(point) == 2 and all(_is_number(c) for c in point))
    ]


def close_polygon(points: Sequence[Point]) -> list[Point]:
    """The points without a closing point equal to the first one."""
    if len(points) >= 4 and _same(points[0], points[-1]):
        return list(points[:-1])
    return list(points)


def polygon_problems(points: Sequence[Point]) -> list[Problem]:
    """Coordinates in 0..1, at least 3 points, no repeated point, some area, no crossing edges.

    ``points`` has passed :func:`polygon_shape_problems`; a closing point is allowed."""
    points = close_polygon([(float(x), float(y)) for x, y in points])
    problems: list[Problem] = []
    looks_like_pixels = any(c > 1.5 for point in points for c in point)
    for index, point in enumerate(points):
        bad = [f"{axis} = {c:g}" for axis, c in zip("xy", point, strict=True) if not 0.0 <= c <= 1.0]
        if bad:
            hint = _PIXEL_HINT if looks_like_pixels else _RANGE_HINT
            verb = "is" if len(bad) == 1 else "are"
            problems.append(Problem((index,), f"{' and '.join(bad)} {verb} outside 0..1", hint))
    if len(points) < 3:
        problems.append(
            Problem((), "polygon needs at least 3 points", "list three or more [x, y] pairs between 0 and 1")
        )
    if problems:
        return problems
    for index in range(len(points)):
        if _same(points[index], points[index - 1]):
            message = f"point {index} repeats the point before it"
            return [Problem((index,), message, "remove the repeated point")]
    apart = "move the points apart to enclose the zone"
    if all(_orient(points[0], points[1], p) == 0 for p in points[2:]):
        return [Problem((), "polygon has no area: its points lie on one line", apart)]
    crossing = _first_crossing(points)
    if crossing is not None:
        a, b = crossing
        n = len(points)
        message = (
            f"polygon is self-intersecting: the edge from point {a} to {(a + 1) % n} crosses "
            f"the edge from point {b} to {(b + 1) % n}"
        )
        hint = "list the points in order around the zone (clockwise or counter-clockwise) so no edges cross"
        return [Problem((), message, hint)]
    if _area(points) <= _EPS:
        return [Problem((), "polygon has (almost) no area", apart)]
    return []


def _same(p: Point, q: Point) -> bool:
    return math.isclose(p[0], q[0], abs_tol=1e-8) and math.isclose(p[1], q[1], abs_tol=1e-8)


def _area(points: list[Point]) -> float:
    pairs = zip(points, points[1:] + points[:1], strict=True)
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairs)) / 2


def _orient(p: Point, q: Point, r: Point) -> int:
    value = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    return 0 if abs(value) < _EPS else (1 if value > 0 else -1)


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    """``r`` (collinear with p-q) lies within the bounding box of p-q."""
    return min(p[0], q[0]) - _EPS <= r[0] <= max(p[0], q[0]) + _EPS and (
        min(p[1], q[1]) - _EPS <= r[1] <= max(p[1], q[1]) + _EPS
    )


def _segments_touch(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    o1, o2, o3, o4 = _orient(p1, p2, q1), _orient(p1, p2, q2), _orient(q1, q2, p1), _orient(q1, q2, p2)
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True
    return (
        (o1 == 0 and _on_segment(p1, p2, q1))
        or (o2 == 0 and _on_segment(p1, p2, q2))
        or (o3 == 0 and _on_segment(q1, q2, p1))
        or (o4 == 0 and _on_segment(q1, q2, p2))
    )


def _first_crossing(points: list[Point]) -> tuple[int, int] | None:
    """Indices of the first two edges that cross (edge i runs from point i to point i+1)."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                # Neighbours share a point; they only overlap if one folds back along the other.
                (a, b), (c, d) = edges[i], edges[j]
                shared, p, q = (b, a, d) if j == i + 1 else (a, b, c)
                folds_back = (p[0] - shared[0]) * (q[0] - shared[0]) + (p[1] - shared[1]) * (
                    q[1] - shared[1]
                ) > 0
                if _orient(p, shared, q) == 0 and folds_back:
                    return (i, j)
                continue
            if _segments_touch(*edges[i], *edges[j]):
                return (i, j)
    return None


# -- rules and their parameters ----------------------------------------------------------------


def rule_name_problems(value: Sequence[str] | Mapping[str, Any]) -> list[Problem]:
    """Every name (list item or mapping key) is one of :data:`RULE_NAMES`; a list names each once."""
    items: list[tuple[str | int, str]] = (
        [(name, name) for name in value] if isinstance(value, Mapping) else list(enumerate(value))
    )
    problems: list[Problem] = []
    seen: set[str] = set()
    for loc, name in items:
        if name not in RULE_NAMES:
            guess = did_you_mean(name, RULE_NAMES)
            hint = f"did you mean '{guess}'? " if guess else ""
            problems.append(
                Problem((loc,), f"unknown rule '{name}'", hint + f"rules are: {', '.join(RULE_NAMES)}")
            )
        elif name in seen:
            problems.append(Problem((loc,), f"rule '{name}' is listed twice", "list each rule once"))
        seen.add(name)
    return problems


def stray_param_problems(rules: Sequence[str], params: Mapping[str, Any]) -> list[Problem]:
    """An override in a zone's ``params`` for a rule the zone does not check (at ``params.<rule>``)."""
    return [
        Problem(("params", name), f"override for rule '{name}' which this zone does not check",
                f"add '{name}' to this zone's rules or remove the override")
        for name in params
        if name not in rules
    ]  # fmt: skip


def duplicate_zone_ids(ids: Iterable[tuple[int, str]]) -> list[Problem]:
    """A problem at each later ``[i].id`` equal to an earlier zone's id."""
    seen: dict[str, int] = {}
    problems: list[Problem] = []
    for index, zone_id in ids:
        if zone_id in seen:
            message = f"zone id '{zone_id}' is already used by zones[{seen[zone_id]}]"
            problems.append(Problem((index, "id"), message, "give every zone of a stream its own id"))
        seen.setdefault(zone_id, index)
    return problems


def active_hours_error(windows: Sequence[str]) -> str | None:
    """Why the first of ``windows`` that is no ``"HH:MM-HH:MM"`` is wrong (``None``: all good)."""
    for item in windows:
        if not _HOURS.match(item.strip()):
            return f'active_hours entry {item!r} is not "HH:MM-HH:MM" (24-hour clock)'
    return None


def timezone_error(name: str) -> str | None:
    """Why ``name`` is no IANA time zone (``None``: it is one)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)"
    return None


# -- a whole zones list ------------------------------------------------------------------------


def _polygon(checker: SchemaChecker, _node: JsonNode, value: Any, loc: Loc) -> list[Problem]:
    problems = polygon_shape_problems(value)
    return [p.under(loc) for p in problems or polygon_problems(value)]


def _rules(checker: SchemaChecker, node: JsonNode, value: Any, loc: Loc) -> list[Problem]:
    about = f"rules: {node['description']}" if node.get("description") else ""
    return checker.check(node, value, loc, about=about) or [p.under(loc) for p in rule_name_problems(value)]


def _value_check(judge: Any) -> Any:
    """A custom check: the schema's, then ``judge(value)`` as a pydantic field validator would."""

    def check(checker: SchemaChecker, node: JsonNode, value: Any, loc: Loc) -> list[Problem]:
        key = loc[-1] if loc else ""
        about = f"{key}: {node['description']}" if node.get("description") else ""
        found = checker.check(node, value, loc, about=about)
        if found:
            return found
        error = judge(value)
        return [] if error is None else [checker.error("value_error", f"Value error, {error}", loc, value)]

    return check


def check_zones(zones: Any, schema: Mapping[str, Any] | None = None) -> list[Problem]:
    """Every problem ``config check`` reports in a stream's ``zones:`` list, located relative to it.

    In ``config check``'s order: each zone's keys (types, bounds, polygon, rule names) and its stray
    ``params``; when those are clean, duplicate ids; when those are too, the parameter values.
    ``schema`` is the exported streams schema (default: the one shipped beside this module)."""
    defs: Mapping[str, Any] = (schema or load_contract(STREAMS_SCHEMA_FILE))["$defs"]
    zone_checker = SchemaChecker(defs, {"polygon": _polygon, "rules": _rules})
    if not isinstance(zones, list):
        return [Problem((), *describe("list_type", "Input should be a valid list", "zones", value=zones))]
    problems: list[Problem] = []
    for index, zone in enumerate(zones):
        found = zone_checker.check({"$ref": "#/$defs/ZoneConfig"}, zone, (index,))
        if not found:
            found = [p.under((index,)) for p in stray_param_problems(zone["rules"], zone.get("params", {}))]
        problems += found
    if problems:
        return problems
    problems = duplicate_zone_ids((index, zone["id"]) for index, zone in enumerate(zones))
    if problems:
        return problems
    custom = {"active_hours": _value_check(active_hours_error), "timezone": _value_check(timezone_error)}
    params_checker = SchemaChecker(defs, custom)
    rules: Mapping[str, JsonNode] = defs["RulesConfig"]["properties"]
    for index, zone in enumerate(zones):
        for rule, values in zone.get("params", {}).items():
            problems += params_checker.check(rules[rule], values, (index, "params", rule))
    return problems
