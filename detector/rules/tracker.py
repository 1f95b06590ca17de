"""A tracker for sparse samples (one frame every few seconds) with a position memory.

Cars in a sampled stream are detected intermittently (occlusion, a score dip, lighting), so a
track that is not seen is kept for ``max_age_s`` of *observed* absence and re-acquired by
IoU or by a centre distance that is small relative to its size (same rule label, and the same model
when detections merged from several models say which model found them: ``data["model"]``).

Absence is counted in frame timestamps, and only while frames arrive (``FrameClock``): an interval
between two frames counts at most a few of the stream's usual sample intervals, so an outage of the
stream (no frames at all) is never taken for the object leaving. No frames are invented.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections, box_iou
from detector.contracts.errors import DetectorError

Box = tuple[float, float, float, float]
FrameSize = tuple[int, int]


class TrackerError(DetectorError, ValueError):
    """Input the tracker cannot take (time going backwards, bad parameters)."""


class FrameTimeError(TrackerError):
    """A frame timestamp that is not finite or goes backwards."""


@dataclass
class FrameClock:
    """Turns frame timestamps into evidence of absence.

    Each interval between consecutive frames counts as time an unseen object was absent, up to a
    cap: ``max_gap_s`` when given, else ``gap_factor`` × the median of the recent intervals (the
    stream's own sampling rhythm). A longer interval is an outage and adds only the cap.
    """

    max_gap_s: float | None = None
    gap_factor: float = 3.0
    last_ts: float | None = None
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=16))

    def __post_init__(self) -> None:
        if (self.max_gap_s is not None and self.max_gap_s <= 0) or self.gap_factor < 1:
            raise TrackerError(f"bad frame clock: max_gap_s={self.max_gap_s}, gap_factor={self.gap_factor}")

    def tick(self, ts: float) -> float:
        """Advance to the frame at ``ts``; return the absence time this interval counts for."""
        if not np.isfinite(ts):
            raise FrameTimeError(f"frame timestamp must be finite, got {ts}")
        if self.last_ts is None:
            self.last_ts = ts
            return 0.0
        if ts < self.last_ts:
            raise FrameTimeError(f"frame timestamps must not go backwards: {ts} after {self.last_ts}")
        dt = ts - self.last_ts
        self.last_ts = ts
        if self.max_gap_s is not None:
            cap = self.max_gap_s
        elif self.intervals:
            cap = self.gap_factor * float(np.median(np.fromiter(self.intervals, float)))
        else:
            cap = dt
        if dt > 0:
            self.intervals.append(dt)
        return min(dt, cap)


def box_tuple(box: npt.ArrayLike) -> Box:
    b = np.asarray(box, np.float64).reshape(4)
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def iou(a: Box, b: Box) -> float:
    return float(box_iou(np.asarray([a]), np.asarray([b]))[0, 0])


@dataclass
class Anchor:
    """Where a dwell started: the box at the first stationary sample and its time.

    ``advance`` compares each new box with the anchor box. One sample off the anchor (IoU below the
    threshold) is held back, not believed: on a real street a parked car is cut short for a sample by
    a passing car or a pedestrian, and restarting its dwell for that would never let it reach the
    dwell (a car at a kerb missed on a 75 s real clip). The anchor restarts when the next sample is
    off it too: the object has moved. Its dwell then runs from the held sample if the object was
    already at its new place there, else from now. A sample back on the anchor drops the held one.
    """

    box: Box
    since: float
    samples: int = 1
    held: tuple[Box, float] | None = None  # the last sample off the anchor, not yet believed

    def advance(self, box: Box, ts: float, stationary_iou: float) -> bool:
        """Take a new sample; return whether the object is stationary at its anchor."""
        if iou(box, self.box) >= stationary_iou:
            self.samples += 1
            self.held = None
        elif self.held is None:
            self.held = (box, ts)
        else:
            held_box, held_ts = self.held
            there = iou(box, held_box) >= stationary_iou
            self.box, self.since, self.samples = box, (held_ts if there else ts), (2 if there else 1)
            self.held = None
        return self.samples >= 2 and self.held is None


@dataclass
class Track:
    id: int
    label: str
    class_name: str
    first_seen: float
    last_seen: float
    box: Box
    anchor: Anchor
    scores: deque[float]
    boxes: deque[tuple[float, Box]]
    hits: int = 1
    missed_s: float = 0.0
    stationary: bool = False
    source: str = ""  # the model that found it, when several models feed one stream

    @property
    def score_median(self) -> float:
        return float(np.median(np.fromiter(self.scores, float))) if self.scores else 0.0

    @property
    def score_top(self) -> float:
        return max(self.scores, default=0.0)

    @property
    def stationary_since(self) -> float:
        """Frame time of the first sample at the current anchor position."""
        return self.anchor.since

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1], 1.0)


@dataclass
class Tracker:
    """Greedy IoU matching plus centre-distance re-acquisition, deterministic ids from 1."""

    max_age_s: float = 120.0
    match_iou: float = 0.3
    center_ratio: float = 0.5
    stationary_iou: float = 0.7
    max_gap_s: float | None = None
    score_window: int = 10
    box_history: int = 30
    tracks: dict[int, Track] = field(default_factory=dict)
    clock: FrameClock = field(init=False)
    _next_id: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        checks = {
            "max_age_s": self.max_age_s >= 0,
            "match_iou": 0 < self.match_iou <= 1,
            "center_ratio": self.center_ratio >= 0,
            "stationary_iou": 0 < self.stationary_iou <= 1,
            "max_gap_s": self.max_gap_s is None or self.max_gap_s > 0,
            "score_window": self.score_window >= 1,
            "box_history": self.box_history >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise TrackerError(
                f"bad tracker parameter(s): {', '.join(f'{n}={getattr(self, n)}' for n in bad)}"
            )
        self.clock = FrameClock(self.max_gap_s)

    @property
    def last_ts(self) -> float | None:
        return self.clock.last_ts

    def update(self, dets: Detections, ts: float, frame_size: FrameSize | None = None) -> Detections:
        """Associate ``dets`` (sampled at frame time ``ts``) with tracks; return them with ``tracker_id``.

        Labels come from ``dets.data["label"]`` when present, else the class names.
        ``frame_size`` is accepted for symmetry with the rules; matching is scale-free.
        """
        dt = self.clock.tick(ts)
        labels = labels_of(dets)
        names = [str(n) for n in dets.class_name]
        models = dets.data.get("model")
        sources = [str(m) for m in models] if models is not None else [""] * len(dets)
        boxes = np.asarray(dets.xyxy, np.float64).reshape(-1, 4)
        live = list(self.tracks.values())
        pairs = self._associate(live, boxes, list(zip(labels, sources, strict=True)))
        ids = np.zeros(len(dets), np.int64)
        matched: set[int] = set()
        for ti, di in pairs:
            track = live[ti]
            self._hit(track, box_tuple(boxes[di]), float(dets.confidence[di]), ts)
            ids[di] = track.id
            matched.add(track.id)
        for di in range(len(dets)):
            if ids[di] == 0:
                ids[di] = self._new(
                    labels[di], names[di], box_tuple(boxes[di]), float(dets.confidence[di]), ts, sources[di]
                )
                matched.add(int(ids[di]))
        for track in live:
            if track.id not in matched:
                track.missed_s += dt
                if track.missed_s > self.max_age_s:
                    del self.tracks[track.id]
        data = dict(dets.data)
        data["label"] = np.array(labels, dtype=object)
        return Detections(dets.xyxy, dets.confidence, dets.class_id, ids, data)

    def seen_at(self, ts: float) -> list[Track]:
        """Tracks matched on the frame at ``ts``, in id order."""
        return [t for t in self.tracks.values() if t.last_seen == ts]

    # ------------------------------------------------------------------ internals
    def _associate(
        self, live: list[Track], boxes: np.ndarray, keys: list[tuple[str, str]]
    ) -> list[tuple[int, int]]:
        """Pairs (track, detection) of the same (label, model)."""
        if not live or len(boxes) == 0:
            return []
        tboxes = np.asarray([t.box for t in live], np.float64)
        same = np.asarray([[(t.label, t.source) == key for key in keys] for t in live], dtype=bool)
        ious = box_iou(tboxes, boxes).astype(np.float64)
        tc = (tboxes[:, :2] + tboxes[:, 2:]) / 2
        dc = (boxes[:, :2] + boxes[:, 2:]) / 2
        dist = np.linalg.norm(tc[:, None, :] - dc[None, :, :], axis=2)
        sizes = np.asarray([t.size for t in live], np.float64)[:, None]
        rel = dist / sizes
        used_t: set[int] = set()
        used_d: set[int] = set()
        pairs: list[tuple[int, int]] = []
        # 1) IoU, best first; 2) centre distance relative to the track's size, nearest first.
        stages = [
            (same & (ious >= self.match_iou), -ious),
            (same & (rel <= self.center_ratio), rel),
        ]
        for ok, cost in stages:
            ti_all, di_all = np.nonzero(ok)
            order = np.lexsort((di_all, ti_all, cost[ti_all, di_all]))
            for k in order:
                ti, di = int(ti_all[k]), int(di_all[k])
                if ti in used_t or di in used_d:
                    continue
                used_t.add(ti)
                used_d.add(di)
                pairs.append((ti, di))
        return pairs

    def _hit(self, track: Track, box: Box, score: float, ts: float) -> None:
        track.box = box
        track.last_seen = ts
        track.hits += 1
        track.missed_s = 0.0
        track.scores.append(score)
        track.boxes.append((ts, box))
        track.stationary = track.anchor.advance(box, ts, self.stationary_iou)

    def _new(self, label: str, name: str, box: Box, score: float, ts: float, source: str = "") -> int:
        tid = self._next_id
        self._next_id += 1
        self.tracks[tid] = Track(
            id=tid,
            label=label,
            class_name=name,
            first_seen=ts,
            last_seen=ts,
            box=box,
            anchor=Anchor(box, ts),
            scores=deque([score], maxlen=self.score_window),
            boxes=deque([(ts, box)], maxlen=self.box_history),
            source=source,
        )
        return tid


def labels_of(dets: Detections) -> list[str]:
    """Rule labels from ``data["label"]`` when present, else the model class names."""
    raw: Iterable[object] = dets.data.get("label", dets.class_name)
    return [str(x) for x in raw]
