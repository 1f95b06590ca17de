"""Zones: normalised polygons an operator draws on a camera view, each enforcing some rules.

Objects are placed by the bottom-centre of their box (where they touch the ground), as Frigate
and DeepStream do. A point on the polygon's edge counts as inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from detector.contracts.errors import DetectorError
from detector.rules.params import RULE_NAMES, RulesConfig

FrameSize = tuple[int, int]
"""``(width, height)`` of a frame in pixels."""

_EPS = 1e-9


class ZoneError(DetectorError, ValueError):
    """A zone definition that cannot be used; the message says which zone and why."""


def _orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> int:
    val = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    return 0 if abs(val) <= _EPS else (1 if val > 0 else -1)


def _on_segment(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> bool:
    """``r`` (collinear with p-q) lies within the bounding box of segment p-q."""
    return bool(
        min(p[0], q[0]) - _EPS <= r[0] <= max(p[0], q[0]) + _EPS
        and min(p[1], q[1]) - _EPS <= r[1] <= max(p[1], q[1]) + _EPS
    )


def segments_intersect(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    """Whether segments a-b and c-d share at least one point (touching counts)."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and _on_segment(a, b, c))
        or (o2 == 0 and _on_segment(a, b, d))
        or (o3 == 0 and _on_segment(c, d, a))
        or (o4 == 0 and _on_segment(c, d, b))
    )


def polygon_area(polygon: np.ndarray) -> float:
    """Unsigned shoelace area."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def points_in_polygon(
    points: npt.ArrayLike, polygon: npt.ArrayLike, eps: float = 1e-6
) -> npt.NDArray[np.bool_]:
    """Vectorised crossing-number test of ``points (n,2)`` against ``polygon (k,2)``.

    Points within ``eps`` of an edge count as inside.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(pts) == 0 or len(poly) < 3:
        return np.zeros(len(pts), dtype=bool)
    x, y = pts[:, 0:1], pts[:, 1:2]
    x1, y1 = poly[:, 0][None, :], poly[:, 1][None, :]
    x2, y2 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    straddles = (y1 > y) != (y2 > y)
    dy = np.where(y2 == y1, 1.0, y2 - y1)
    x_cross = x1 + (y - y1) * (x2 - x1) / dy
    inside = (np.count_nonzero(straddles & (x < x_cross), axis=1) % 2) == 1
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    length = np.maximum(np.hypot(x2 - x1, y2 - y1), _EPS)
    within = (
        (np.minimum(x1, x2) - eps <= x)
        & (x <= np.maximum(x1, x2) + eps)
        & (np.minimum(y1, y2) - eps <= y)
        & (y <= np.maximum(y1, y2) + eps)
    )
    on_edge = ((np.abs(cross) / length) <= eps) & within
    result: npt.NDArray[np.bool_] = inside | on_edge.any(axis=1)
    return result


def bottom_centers(xyxy: npt.ArrayLike) -> npt.NDArray[np.float64]:
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)


def _validate_polygon(zone_id: str, polygon: Any) -> tuple[tuple[float, float], ...]:
    try:
        poly = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ZoneError(f"zone {zone_id!r}: polygon must be a list of [x, y] pairs ({exc})") from exc
    if poly.ndim != 2 or poly.shape[1] != 2:
        raise ZoneError(f"zone {zone_id!r}: polygon must be a list of [x, y] pairs, got shape {poly.shape}")
    if not np.all(np.isfinite(poly)):
        raise ZoneError(f"zone {zone_id!r}: polygon has a non-finite coordinate")
    if len(poly) >= 2 and np.allclose(poly[0], poly[-1]):
        poly = poly[:-1]  # an explicitly closed ring
    if len(poly) < 3:
        raise ZoneError(f"zone {zone_id!r}: a polygon needs at least 3 distinct points, got {len(poly)}")
    if np.any(poly < 0) or np.any(poly > 1):
        bad = poly[np.any((poly < 0) | (poly > 1), axis=1)][0].tolist()
        raise ZoneError(
            f"zone {zone_id!r}: point {bad} is outside [0, 1]; coordinates are fractions of the frame size"
        )
    k = len(poly)
    for i in range(k):
        if np.allclose(poly[i], poly[(i + 1) % k]):
            raise ZoneError(f"zone {zone_id!r}: point {i} repeats point {(i + 1) % k}")
    for i in range(k):
        for j in range(i + 2, k):
            if i == 0 and j == k - 1:
                continue  # adjacent through the closing edge
            if segments_intersect(poly[i], poly[(i + 1) % k], poly[j], poly[(j + 1) % k]):
                raise ZoneError(
                    f"zone {zone_id!r}: edges {i}-{(i + 1) % k} and {j}-{(j + 1) % k} cross; "
                    "list the points in order around the area"
                )
    if polygon_area(poly) <= _EPS:
        raise ZoneError(f"zone {zone_id!r}: polygon has zero area (its points are collinear)")
    return tuple((float(px), float(py)) for px, py in poly)


@dataclass(frozen=True)
class Zone:
    """An area of a camera view: ``polygon`` in normalised ``[x, y]`` (0..1) frame coordinates.

    ``rules`` lists the rule names (see ``RULE_NAMES``) the zone enforces; ``params`` holds
    partial rule parameter overrides shaped like ``RulesConfig`` (``{"illegal_parking": {...}}``).
    """

    id: str
    polygon: Sequence[Sequence[float]]
    rules: Sequence[str]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ZoneError(f"zone id must be a non-empty string, got {self.id!r}")
        object.__setattr__(self, "polygon", _validate_polygon(self.id, self.polygon))
        rules = tuple(self.rules) if not isinstance(self.rules, str) else (self.rules,)
        if not rules:
            raise ZoneError(f"zone {self.id!r}: list at least one rule of {', '.join(RULE_NAMES)}")
        unknown = [r for r in rules if r not in RULE_NAMES]
        if unknown:
            raise ZoneError(
                f"zone {self.id!r}: unknown rule(s) {unknown}; known rules: {', '.join(RULE_NAMES)}"
            )
        object.__setattr__(self, "rules", rules)
        params = dict(self.params or {})
        try:
            RulesConfig().merged(params)
        except ValidationError as exc:
            raise ZoneError(f"zone {self.id!r}: bad rule parameters: {exc}") from exc
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "_array", np.asarray(self.polygon, np.float64))

    def __hash__(self) -> int:
        return hash((self.id, self.polygon, self.rules))

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> Zone:
        """Build from a config mapping ``{id, polygon, rules, params?}``."""
        missing = [k for k in ("id", "polygon", "rules") if k not in data]
        if missing:
            raise ZoneError(f"zone {data.get('id', '?')!r}: missing key(s) {missing}")
        extra = set(data) - {"id", "polygon", "rules", "params"}
        if extra:
            raise ZoneError(f"zone {data.get('id', '?')!r}: unknown key(s) {sorted(extra)}")
        return cls(
            id=data["id"], polygon=data["polygon"], rules=data["rules"], params=dict(data.get("params") or {})
        )

    @property
    def array(self) -> npt.NDArray[np.float64]:
        """The normalised polygon as ``(k, 2)`` float64."""
        arr: npt.NDArray[np.float64] = object.__getattribute__(self, "_array")
        return arr

    def enforces(self, rule: str) -> bool:
        return rule in self.rules

    def config(self, base: RulesConfig) -> RulesConfig:
        """The stream's rule config with this zone's overrides applied."""
        return base.merged(dict(self.params))

    def scaled(self, frame_size: FrameSize) -> npt.NDArray[np.float64]:
        """The polygon in pixels of a ``(width, height)`` frame."""
        width, height = frame_size
        if width <= 0 or height <= 0:
            raise ZoneError(f"frame size must be positive (width, height), got {frame_size}")
        return self.array * np.array([width, height], np.float64)

    def contains_points(self, points: npt.ArrayLike, frame_size: FrameSize) -> npt.NDArray[np.bool_]:
        """Which pixel ``points (n, 2)`` lie inside (or on the edge of) the zone."""
        return points_in_polygon(points, self.scaled(frame_size))

    def contains_boxes(self, xyxy: npt.ArrayLike, frame_size: FrameSize) -> npt.NDArray[np.bool_]:
        """Which pixel boxes have their bottom-centre anchor inside the zone."""
        return self.contains_points(bottom_centers(xyxy), frame_size)
