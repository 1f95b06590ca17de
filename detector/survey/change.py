"""Change against a baseline survey: each object is known (matched), new, or — for baseline objects —
gone. A baseline object that this flight did not have well in view in at least ``min_views`` frames is
neither: it is counted as not covered (a single missed look does not make a structure gone).

Matching is one-to-one per class (Hungarian on distance in the survey's UTM zone) within a gate of
twice the combined uncertainty (or 40 % of a big object's size), kept between ``match_m`` and three
times it. What is left is matched across classes within ``cross_class_m``: the detector calling a shed
a stall this time is no change on the ground.

Gone is a claim that sends someone out, so it needs the absence of any sign: a baseline object that
only a weak object of this flight matches (one the de-duplication dropped as flicker or as seen only cut
by the frame edge) is not gone but ``faint``: still there as far as this flight can tell, unconfirmed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.survey.dedup import SurveyObject, _inside
from detector.survey.errors import SurveyInputError
from detector.survey.geo import F64, MetricCRS

GEOJSON_NAME = "survey.geojson"


@dataclass(frozen=True)
class BaselineObject:
    id: str
    cls: str
    lat: float
    lon: float
    sigma_m: float
    size_m: float
    properties: dict[str, Any]


@dataclass
class ChangeResult:
    status: list[str]  # per current object: 'new' | 'known'
    matched: list[str | None]  # baseline id per current object
    gone: list[BaselineObject]
    not_covered: list[BaselineObject]
    baseline_count: int
    class_was: list[str | None]  # per current object: the baseline's class where it differs
    faint: list[tuple[BaselineObject, SurveyObject]] = field(default_factory=list)  # weakly seen again


def load_baseline(path: str | Path) -> list[BaselineObject]:
    """The objects of an earlier survey: its output folder or its ``survey.geojson``. Objects it reported
    gone are not part of the baseline."""
    p = Path(path)
    f = p / GEOJSON_NAME if p.is_dir() else p
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SurveyInputError(
            f"baseline {f} not found: give the output folder of an earlier survey"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SurveyInputError(f"baseline {f} is not readable GeoJSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise SurveyInputError(f"baseline {f} is not a GeoJSON FeatureCollection written by citywatch survey")
    out: list[BaselineObject] = []
    for i, feat in enumerate(doc.get("features", [])):
        try:
            props = feat["properties"]
            if props.get("status") == "gone":
                continue
            lon, lat = feat["geometry"]["coordinates"][:2]
            out.append(
                BaselineObject(
                    str(props.get("id", f"b{i}")),
                    str(props["class"]),
                    float(lat),
                    float(lon),
                    float(props.get("uncertainty_m", 3.0)),
                    float(props.get("size_m", 0.0)),
                    props,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SurveyInputError(
                f"baseline {f}: feature {i} has no class or point geometry ({exc})"
            ) from exc
    return out


def compare(
    objs: Sequence[SurveyObject],
    baseline: Sequence[BaselineObject],
    crs: MetricCRS,
    footprints: Sequence[tuple[int, F64]],
    match_m: float = 4.0,
    min_views: int = 2,
    cross_class_m: float = 3.0,
    weak: Sequence[SurveyObject] = (),
) -> ChangeResult:
    from scipy.optimize import linear_sum_assignment

    status = ["new"] * len(objs)
    matched: list[str | None] = [None] * len(objs)
    was: list[str | None] = [None] * len(objs)
    used: set[int] = set()
    bx, by = crs.to_xy([b.lat for b in baseline], [b.lon for b in baseline])

    def match(ci: list[int], bi: list[int], gate_of: Callable[[SurveyObject, BaselineObject], float]) -> None:
        if not ci or not bi:
            return
        cost = np.full((len(ci), len(bi)), 1e9)
        for a, i in enumerate(ci):
            for c, j in enumerate(bi):
                d = math.hypot(objs[i].x - float(bx[j]), objs[i].y - float(by[j]))
                if d <= gate_of(objs[i], baseline[j]):
                    cost[a, c] = d
        rows, cols = linear_sum_assignment(cost)
        for a, c in zip(rows, cols, strict=True):
            if cost[a, c] < 1e9:
                b = baseline[bi[c]]
                status[ci[a]], matched[ci[a]] = "known", b.id
                was[ci[a]] = b.cls if b.cls != objs[ci[a]].cls else None
                used.add(bi[c])

    def same_class_gate(o: SurveyObject, b: BaselineObject) -> float:
        spread = max(match_m, 2 * math.hypot(o.sigma_m, b.sigma_m), 0.4 * max(o.size_m, b.size_m))
        return min(3 * match_m, spread)

    if baseline:
        for cls in sorted({o.cls for o in objs} | {b.cls for b in baseline}):
            ci = [i for i, o in enumerate(objs) if o.cls == cls]
            match(ci, [j for j, b in enumerate(baseline) if b.cls == cls], same_class_gate)
        # the same thing given another class this time (a shed read as a stall) is no change on the ground
        left = [i for i in range(len(objs)) if matched[i] is None]
        match(left, [j for j in range(len(baseline)) if j not in used], lambda o, b: cross_class_m)
    gone: list[BaselineObject] = []
    not_covered: list[BaselineObject] = []
    faint: list[tuple[BaselineObject, SurveyObject]] = []
    for j, b in enumerate(baseline):
        if j in used:
            continue
        x, y = crs.to_xy(b.lat, b.lon)
        seen = sum(1 for _, poly in footprints if _inside(float(x), float(y), poly, 0.5 * b.size_m + 1.0))
        if seen < min_views:
            not_covered.append(b)
            continue
        near = [
            w
            for w in weak
            if math.hypot(w.x - float(x), w.y - float(y))
            <= (same_class_gate(w, b) if w.cls == b.cls else max(cross_class_m, 0.5 * b.size_m))
        ]
        if near:
            faint.append((b, max(near, key=lambda w: w.conf)))
        else:
            gone.append(b)
    return ChangeResult(status, matched, gone, not_covered, len(baseline), was, faint)
