"""One object seen in many frames -> one survey object.

1. Tracking within the clip: observations of one class in consecutive sampled frames are linked when
   their ground positions are within ``gate_m`` (Hungarian assignment; a missed frame is bridged).
2. Clustering across frames and passes (the next line of a lawn-mower flight sees the object again):
   DBSCAN (``min_samples=1``, ``eps_m``, widened to 40 % of the size of big objects) on track positions
   in the survey's UTM zone, per class. Two tracks seen in the same frame are two objects: a cluster
   holding such a pair is split again with a smaller eps.
3. Observations cut by the frame edge place an object poorly: they join an object seen whole nearby, and
   form their own object only when nothing else saw it.
4. An object detected in under ``min_view_ratio`` of the frames that had it well in view (3 or more) is
   dropped as a flicker of the detector, and so is one only ever seen cut by the frame edge although
   some frame had it well in view (a whole view would have shown it). Dropped objects are kept aside as
   weak evidence: they do not make a baseline object gone (``change.compare``).
5. Seen from above, objects do not stack: two objects of different classes, the centre of the weaker
   within half the size of the other and of comparable size (``same_object_size_ratio``), are one
   object read as two classes; the one with more evidence (sum of confidences) keeps it.
Positions are weighted means (confidence, nearness to the image centre, 1/sigma^2); the best view
(confident, near the centre, whole, nadir) is kept as evidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.survey.geo import F64, point_in_polygon
from detector.survey.tiling import intersection_over_smaller

Obs = dict[str, Any]


@dataclass(frozen=True)
class DedupSettings:
    gate_m: float = 3.0
    eps_m: float = 3.0
    min_eps_m: float = 0.5
    size_frac: float = 0.4  # tracks of big objects link within this fraction of their size
    max_gap: int = 1  # sampled frames a track may miss
    min_view_ratio: float = 0.34
    same_object_size_ratio: float = 0.35  # smaller / larger size of one object read as two classes


@dataclass
class SurveyObject:
    cls: str
    x: float
    y: float
    sigma_m: float
    conf: float
    conf_median: float
    size_m: float
    frames: list[int]
    best: Obs
    oblique: bool
    first_ts: float
    last_ts: float
    expected_views: int = 0
    lat: float = 0.0
    lon: float = 0.0
    members: list[Obs] = field(default_factory=list, repr=False)


def _weight(o: Obs) -> float:
    return float(o["conf"]) * (1.0 - 0.5 * float(o["centre"])) / max(float(o["sigma_m"]), 0.05) ** 2


def view_score(o: Obs) -> float:
    return (
        float(o["conf"])
        * (1.0 - 0.5 * float(o["centre"]))
        * (0.3 if o["truncated"] else 1.0)
        * (0.5 if o["oblique"] else 1.0)
    )


def link_tracks(frames: Sequence[tuple[int, list[Obs]]], s: DedupSettings) -> list[list[Obs]]:
    """Tracks (lists of observations) from frames in flight order: ``(frame index, observations)``."""
    from scipy.optimize import linear_sum_assignment

    tracks: list[list[Obs]] = []
    active: list[tuple[int, int]] = []  # (track id, position in flight order of its last frame)
    for pos, (_, obs) in enumerate(frames):
        live = [(tid, last) for tid, last in active if pos - last <= s.max_gap + 1]
        taken: set[int] = set()
        for cls in sorted({o["cls"] for o in obs}):
            cur = [i for i, o in enumerate(obs) if o["cls"] == cls]
            cand = [tid for tid, _ in live if tracks[tid][-1]["cls"] == cls]
            if cur and cand:
                cost = np.full((len(cur), len(cand)), 1e6)
                for a, i in enumerate(cur):
                    for b, tid in enumerate(cand):
                        last = tracks[tid][-1]
                        d = math.hypot(obs[i]["x"] - last["x"], obs[i]["y"] - last["y"])
                        gate = s.gate_m
                        if obs[i]["truncated"] or last["truncated"]:
                            gate += 0.5 * max(obs[i]["size_m"], last["size_m"])
                        if d <= gate:
                            cost[a, b] = d
                rows, cols = linear_sum_assignment(cost)
                for a, b in zip(rows, cols, strict=True):
                    if cost[a, b] < 1e6:
                        tracks[cand[b]].append(obs[cur[a]])
                        taken.add(cur[a])
                        live = [(t, p) if t != cand[b] else (t, pos) for t, p in live]
            for i in cur:
                if i not in taken:
                    tracks.append([obs[i]])
                    live.append((len(tracks) - 1, pos))
        active = live
    return tracks


def _position(obs: Iterable[Obs]) -> tuple[float, float, float]:
    items = list(obs)
    whole = [o for o in items if not o["truncated"]] or items
    w = np.array([_weight(o) for o in whole])
    xs = np.array([o["x"] for o in whole])
    ys = np.array([o["y"] for o in whole])
    x, y = float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())
    sig2 = float((w * np.array([o["sigma_m"] for o in whole]) ** 2).sum() / w.sum())
    spread2 = float((w * ((xs - x) ** 2 + (ys - y) ** 2)).sum() / w.sum())
    return x, y, math.sqrt(sig2 / math.sqrt(len(whole)) + spread2)


def _size(track: list[Obs]) -> float:
    whole = [o["size_m"] for o in track if not o["truncated"]] or [o["size_m"] for o in track]
    return float(np.median(whole))


def _frames(track: list[Obs]) -> set[int]:
    return {int(o["frame"]) for o in track}


def _dbscan(points: F64, sizes: F64, eps: float, size_frac: float) -> list[int]:
    """DBSCAN with ``min_samples=1`` (every point is a core point: the clusters are the connected
    components of the "within eps" graph), where two tracks link within ``max(eps, size_frac * size)``
    of the larger one: a 12 m shed's partial views lie further apart than a car's."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(points)
    if n == 1:
        return [0]
    reach = np.maximum(eps, size_frac * sizes)
    pairs = cKDTree(points).query_pairs(float(reach.max()), output_type="ndarray")
    if len(pairs):
        d = np.hypot(*(points[pairs[:, 0]] - points[pairs[:, 1]]).T)
        pairs = pairs[d <= np.maximum(reach[pairs[:, 0]], reach[pairs[:, 1]])]
    graph = (
        coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        if len(pairs)
        else (coo_matrix((n, n)))
    )
    _, labels = connected_components(graph, directed=False)
    return [int(v) for v in labels]


def cluster_tracks(tracks: list[list[Obs]], s: DedupSettings) -> list[list[list[Obs]]]:
    """Groups of tracks, one group per object (see the module docstring, steps 2 and 3)."""
    groups: list[list[list[Obs]]] = []
    for cls in sorted({t[0]["cls"] for t in tracks}):
        of_cls = [t for t in tracks if t[0]["cls"] == cls]
        whole = [t for t in of_cls if any(not o["truncated"] for o in t)]
        cut = [t for t in of_cls if all(o["truncated"] for o in t)]
        cls_groups = _split(whole, s.eps_m, s) if whole else []
        leftovers: list[list[Obs]] = []
        for t in cut:
            tx, ty, _ = _position(t)
            best, best_d = None, math.inf
            for g in cls_groups:
                gx, gy, _ = _position(o for tr in g for o in tr)
                d = math.hypot(tx - gx, ty - gy)
                reach = s.eps_m + 0.5 * max(o["size_m"] for o in t)
                apart = not (_frames(t) & set().union(*(_frames(tr) for tr in g)))
                # a piece cut by the frame edge lying inside a known object's footprint is part of
                # it, even when the model boxed both in the same frame
                inside = d <= 0.5 * max(_size(tr) for tr in g)
                if d <= reach and d < best_d and (apart or inside):
                    best, best_d = g, d
            if best is not None:
                best.append(t)
            else:
                leftovers.append(t)
        if leftovers:
            cls_groups += _split(leftovers, s.eps_m + 0.5 * max(o["size_m"] for t in leftovers for o in t), s)
        groups += cls_groups
    return groups


def _split(tracks: list[list[Obs]], eps: float, s: DedupSettings) -> list[list[list[Obs]]]:
    pts = np.array([_position(t)[:2] for t in tracks], np.float64)
    sizes = np.array([_size(t) for t in tracks], np.float64)
    labels = _dbscan(pts, sizes, eps, s.size_frac * eps / s.eps_m)
    out: list[list[list[Obs]]] = []
    for lab in sorted(set(labels)):
        members = [t for t, label in zip(tracks, labels, strict=True) if label == lab]
        seen: set[int] = set()
        conflict = False
        for t in members:
            fr = _frames(t)
            conflict = conflict or bool(fr & seen)
            seen |= fr
        if conflict and len(members) > 1 and eps * 0.6 >= s.min_eps_m:
            out += _split(members, eps * 0.6, s)
        elif conflict and len(members) > 1:
            out += [[t] for t in members]
        else:
            out.append(members)
    return out


def build_objects(
    groups: list[list[list[Obs]]], footprints: Sequence[tuple[int, F64]], s: DedupSettings
) -> tuple[list[SurveyObject], list[SurveyObject]]:
    """Objects from track groups: (objects sorted by class, north, east; objects dropped as detector
    flicker or as only ever seen cut by the frame edge)."""
    objs: list[SurveyObject] = []
    weak: list[SurveyObject] = []
    for g in groups:
        members = [o for t in g for o in t]
        x, y, sigma = _position(members)
        frames = sorted(_frames(members))
        whole_sizes = [o["size_m"] for o in members if not o["truncated"]] or [o["size_m"] for o in members]
        size = float(np.median(whole_sizes))
        inset = 0.5 * size
        expected = sum(1 for _, poly in footprints if _inside(x, y, poly, inset))
        flicker = expected >= 3 and len(frames) < s.min_view_ratio * expected
        edge_only = expected >= 1 and all(o["truncated"] for o in members)
        confs = [float(o["conf"]) for o in members]
        best = max(members, key=lambda o: (view_score(o), -int(o["frame"])))
        (weak if flicker or edge_only else objs).append(
            SurveyObject(
                cls=str(members[0]["cls"]),
                x=x,
                y=y,
                sigma_m=sigma,
                conf=max(confs),
                conf_median=float(np.median(confs)),
                size_m=size,
                frames=frames,
                best=best,
                oblique=all(bool(o["oblique"]) for o in members),
                first_ts=min(float(o["ts"]) for o in members),
                last_ts=max(float(o["ts"]) for o in members),
                expected_views=expected,
                members=members,
            )
        )
    objs.sort(key=lambda o: (o.cls, round(-o.y, 2), round(o.x, 2)))
    return objs, weak


def _evidence(o: SurveyObject) -> float:
    return sum(float(m["conf"]) for m in o.members)


def _nested_wherever_together(a: SurveyObject, b: SurveyObject) -> bool:
    """In every frame that boxed both, one box lies mostly inside the other (one thing, two readings);
    two boxes side by side in one frame are two things."""
    for frame in set(a.frames) & set(b.frames):
        boxes_a = [np.asarray(m["box"], np.float64) for m in a.members if int(m["frame"]) == frame]
        boxes_b = np.array([m["box"] for m in b.members if int(m["frame"]) == frame], np.float64)
        if not any((intersection_over_smaller(box, boxes_b) >= 0.5).any() for box in boxes_a):
            return False
    return True


def _same_object(a: SurveyObject, b: SurveyObject, s: DedupSettings) -> bool:
    big, small = max(a.size_m, b.size_m), min(a.size_m, b.size_m)
    return (
        a.cls != b.cls
        and math.hypot(a.x - b.x, a.y - b.y) <= 0.5 * big
        and small >= s.same_object_size_ratio * big
        and _nested_wherever_together(a, b)
    )


def merge_cross_class(objs: list[SurveyObject], s: DedupSettings) -> tuple[list[SurveyObject], int]:
    """Step 5 of the module docstring: (objects, how many were folded into another class's object)."""
    order = sorted(range(len(objs)), key=lambda i: -_evidence(objs[i]))
    kept: list[int] = []
    folded = 0
    for i in order:
        o = objs[i]
        host = next((k for k in kept if _same_object(objs[k], o, s)), None)
        if host is None:
            kept.append(i)
            continue
        h = objs[host]
        h.frames = sorted(set(h.frames) | set(o.frames))
        h.first_ts, h.last_ts = min(h.first_ts, o.first_ts), max(h.last_ts, o.last_ts)
        folded += 1
    return [objs[i] for i in sorted(kept)], folded


def _inside(x: float, y: float, poly: F64, inset: float) -> bool:
    if not point_in_polygon(x, y, poly):
        return False
    k = len(poly)
    for i in range(k):  # distance to every edge must exceed the inset
        a, b = poly[i], poly[(i + 1) % k]
        ab = b - a
        t = float(np.clip(np.dot([x - a[0], y - a[1]], ab) / max(float(np.dot(ab, ab)), 1e-9), 0, 1))
        if math.hypot(x - (a[0] + t * ab[0]), y - (a[1] + t * ab[1])) < inset:
            return False
    return True


def deduplicate(
    frames: Sequence[tuple[int, list[Obs]]],
    footprints: Sequence[tuple[int, F64]],
    s: DedupSettings = DedupSettings(),
) -> tuple[list[SurveyObject], list[SurveyObject], dict[str, int]]:
    """(objects, weak objects: dropped but evidence that something is there, statistics)."""
    tracks = link_tracks(frames, s)
    groups = cluster_tracks(tracks, s)
    objs, weak = build_objects(groups, footprints, s)
    objs, folded = merge_cross_class(objs, s)
    n_obs = sum(len(o) for _, o in frames)
    return (
        objs,
        weak,
        {
            "observations": n_obs,
            "tracks": len(tracks),
            "objects": len(objs),
            "flicker_dropped": len(weak),
            "class_merged": folded,
        },
    )
