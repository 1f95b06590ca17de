"""Field checks for the config schema: zone polygons, rule names, source URLs.

Each raises :class:`ConfigProblem` with locations relative to the checked value, a message
and a fix hint; ``detector.config`` attaches them to fields with ``Annotated`` validators.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from detector.config.errors import ConfigProblem, Problem, did_you_mean
from detector.rules.params import RULE_NAMES

Point = tuple[float, float]
_Names = TypeVar("_Names", list[str], dict[str, dict[str, Any]])

SOURCE_SCHEMES = ("file", "rtsp", "rtsps", "http", "https")
_POINT_HINT = "write each point as [x, y], e.g. [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95]]"
_EPS = 1e-9  # the same tolerance as detector.rules.zones, so what passes here passes there
_RANGE_HINT = "coordinates are fractions of the frame width and height, 0 (left/top) to 1 (right/bottom)"
_PIXEL_HINT = "coordinates are fractions of the frame, not pixels: divide x by the width and y by the height"


# -- polygons --------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_polygon_shape(value: Any) -> Any:
    """Before type validation: a list of two-number points, with one clear message per bad point."""
    if not isinstance(value, list | tuple):
        raise ConfigProblem.at((), "polygon must be a list of [x, y] points", _POINT_HINT)
    problems = [
        Problem((index,), f"point {index} must be [x, y] with two numbers", _POINT_HINT)
        for index, point in enumerate(value)
        if not (isinstance(point, list | tuple) and len(point) == 2 and all(_is_number(c) for c in point))
    ]
    if problems:
        raise ConfigProblem(problems)
    return value


def check_polygon(points: list[Point]) -> list[Point]:
    """Coordinates in 0..1, at least 3 points, no zero area, no crossing edges.

    A closing point equal to the first one is dropped.
    """
    if len(points) >= 4 and _same(points[0], points[-1]):
        points = points[:-1]
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
        raise ConfigProblem(problems)
    for index in range(len(points)):
        if _same(points[index], points[index - 1]):
            raise ConfigProblem.at(
                (index,), f"point {index} repeats the point before it", "remove the repeated point"
            )
    if all(_orient(points[0], points[1], p) == 0 for p in points[2:]):
        raise ConfigProblem.at(
            (), "polygon has no area: its points lie on one line", "move the points apart to enclose the zone"
        )
    crossing = _first_crossing(points)
    if crossing is not None:
        a, b = crossing
        n = len(points)
        raise ConfigProblem.at(
            (),
            f"polygon is self-intersecting: the edge from point {a} to {(a + 1) % n} crosses "
            f"the edge from point {b} to {(b + 1) % n}",
            "list the points in order around the zone (clockwise or counter-clockwise) so no edges cross",
        )
    if _area(points) <= _EPS:
        raise ConfigProblem.at(
            (), "polygon has (almost) no area", "move the points apart to enclose the zone"
        )
    return points


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


# -- rule names ------------------------------------------------------------------------------


def check_rule_names(value: _Names) -> _Names:
    """Every name (list item or mapping key) is one of ``RULE_NAMES``; a list names each once."""
    items: list[tuple[str | int, str]] = (
        list(enumerate(value)) if isinstance(value, list) else [(name, name) for name in value]
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
    if problems:
        raise ConfigProblem(problems)
    return value


# -- stream ids ----------------------------------------------------------------------------


def duplicate_stream_ids(ids: Iterable[tuple[int, str]]) -> list[Problem]:
    """A problem at each later ``streams[i].id`` equal (ignoring letter case) to an earlier one."""
    problems: list[Problem] = []
    seen: dict[str, tuple[int, str]] = {}
    for index, stream_id in ids:
        folded = stream_id.casefold()
        if folded not in seen:
            seen[folded] = (index, stream_id)
            continue
        first, first_id = seen[folded]
        same = (
            "is already used by"
            if first_id == stream_id
            else f"differs only in letter case from '{first_id}' in"
        )
        message = f"stream id '{stream_id}' {same} streams[{first}]"
        hint = "give every stream its own id (ids name topics and files: letter case does not count)"
        problems.append(Problem(("streams", index, "id"), message, hint))
    return problems


# -- source URLs -----------------------------------------------------------------------------

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def check_source_url(value: str) -> str:
    """A file path, or a file://, rtsp://, rtsps://, http:// or https:// URL with a host."""
    url = value.strip()
    if not url:
        raise ConfigProblem.at((), "source URL is empty", "give a file path or an rtsp:// URL")
    match = _SCHEME.match(url)
    if match is None:
        return url  # a plain (relative or absolute, possibly Windows) file path
    scheme = match.group(1).lower()
    rest = url[match.end() :]
    if scheme not in SOURCE_SCHEMES:
        if not rest.startswith("//"):
            return url  # e.g. "clip:1.mp4", a file name with a colon
        raise ConfigProblem.at(
            (),
            f"unsupported URL scheme '{scheme}://'",
            "use rtsp://, rtsps://, http(s)://, file:// or a file path; re-stream other protocols "
            "(RTMP, SRT, UDP) through an RTSP server such as MediaMTX",
        )
    if not rest.startswith("//"):
        raise ConfigProblem.at(
            (), f"malformed {scheme} URL: '//' missing after '{scheme}:'", f"write {scheme}://..."
        )
    if scheme == "file":
        return url
    authority = rest[2:].split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        raise ConfigProblem.at(
            (),
            "the user name or password in the URL contains an unencoded '@'",
            "percent-encode '@' as %40 (also inside the environment variable)",
        )
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port == -1 or port == 0:
        raise ConfigProblem.at(
            (), "the URL's port is not a number from 1 to 65535", "write host:554 or leave the port out"
        )
    if not parts.hostname:
        raise ConfigProblem.at((), f"{scheme} URL has no host", f"write {scheme}://host[:port]/path")
    return url
