"""The violation lifecycle shared by the four rules: candidate → opened → updated … → cleared.

A rule observes *entries* (one per parked vehicle, or one per location cell) on each sampled frame.
An entry opens when the rule's condition first holds, emits ``updated`` at most every
``update_interval_s`` while it is active, and is cleared once it has been unseen, while frames
kept arriving, for longer than ``grace_s``. Absence is counted in frame time, each interval between
frames counting at most a few usual sample intervals (``FrameClock``), so a stream outage does not
clear anything.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections
from detector.contracts.errors import DetectorError
from detector.rules.params import RuleParams, RulesConfig
from detector.rules.tracker import Box, FrameClock, box_tuple, labels_of
from detector.rules.zones import FrameSize, Zone

Event = Literal["opened", "updated", "cleared"]
P = TypeVar("P", bound=RuleParams)

SCORE_WINDOW = 10


class RuleError(DetectorError, ValueError):
    """Input a rule cannot judge (e.g. untracked detections for a per-vehicle rule)."""


@dataclass(frozen=True)
class ViolationUpdate:
    """One lifecycle event of one violation; times are frame timestamps (epoch seconds)."""

    event: Event
    violation_key: str
    rule: str
    label: str
    zone: str
    bbox: Box
    score_median: float
    score_top: float
    first_seen: float
    last_seen: float
    ts: float
    best_frame_ts: float
    best_bbox: Box


@dataclass
class Entry(Generic[P]):
    """What a rule knows about one (candidate or active) violation."""

    key: str
    label: str
    zone: str
    params: P
    first_seen: float
    last_seen: float
    bbox: Box
    best_score: float
    best_frame_ts: float
    best_bbox: Box
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=SCORE_WINDOW))
    score_top: float = 0.0
    samples: int = 0
    missed_s: float = 0.0
    active: bool = False
    last_emit_ts: float = -math.inf
    emitted_last_seen: float = -math.inf

    @property
    def score_median(self) -> float:
        return float(np.median(np.fromiter(self.scores, float))) if self.scores else 0.0

    def observe(self, ts: float, bbox: Box, score: float) -> None:
        if self.samples and ts == self.last_seen:  # a second box for this entry on the same frame
            self.scores[-1] = max(self.scores[-1], score)
        else:
            self.scores.append(score)
            self.samples += 1
        self.last_seen = ts
        self.bbox = bbox
        self.missed_s = 0.0
        self.score_top = max(self.score_top, score)
        if score > self.best_score:
            self.best_score, self.best_frame_ts = score, ts
        if self.best_frame_ts == ts:
            self.best_bbox = bbox

    def update(self, event: Event, rule: str, ts: float) -> ViolationUpdate:
        if event != "cleared":
            self.last_emit_ts = ts
            self.emitted_last_seen = self.last_seen
        return ViolationUpdate(
            event=event,
            violation_key=self.key,
            rule=rule,
            label=self.label,
            zone=self.zone,
            bbox=self.bbox,
            score_median=self.score_median,
            score_top=self.score_top,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            ts=ts,
            best_frame_ts=self.best_frame_ts,
            best_bbox=self.best_bbox,
        )


def new_entry(key: str, label: str, zone: str, params: P, ts: float, bbox: Box) -> Entry[P]:
    return Entry(key, label, zone, params, ts, ts, bbox, -math.inf, ts, bbox)


def class_mask(dets: Detections, classes: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Detections whose rule label or model class name is listed in ``classes``."""
    wanted = set(classes)
    names = dets.class_name
    labels = dets.data.get("label", names)
    return np.asarray(
        [str(lab) in wanted or str(n) in wanted for lab, n in zip(labels, names, strict=True)], bool
    )


class Rule(ABC, Generic[P]):
    """One rule over the zones of one stream that enforce it. ``step`` is the only entry point."""

    name: ClassVar[str]

    def __init__(
        self,
        zones: Sequence[Zone],
        config: RulesConfig | None = None,
        *,
        max_gap_s: float | None = None,
    ) -> None:
        base = config or RulesConfig()
        self.zones: list[tuple[Zone, P]] = []
        for zone in zones:
            if zone.enforces(self.name):
                params = self._params(zone.config(base))
                if params.enabled:
                    self.zones.append((zone, params))
        self.clock = FrameClock(max_gap_s)
        self.entries: dict[str, Entry[P]] = {}

    @abstractmethod
    def _params(self, config: RulesConfig) -> P:
        """This rule's section of a (zone-merged) config."""

    @abstractmethod
    def _observe(self, dets: Detections, ts: float, frame_size: FrameSize) -> set[str]:
        """Update entries from this frame's detections; return the keys seen on it."""

    @abstractmethod
    def _ready(self, entry: Entry[P], ts: float) -> bool:
        """Whether a candidate entry meets the rule's condition and opens now."""

    def step(self, dets: Detections, ts: float, frame_size: FrameSize) -> list[ViolationUpdate]:
        """Judge one sampled frame at frame time ``ts``; return the lifecycle events it causes."""
        dt = self.clock.tick(ts)
        seen = self._observe(dets, ts, frame_size) if self.zones else set()
        out: list[ViolationUpdate] = []
        for key, entry in list(self.entries.items()):
            if key in seen:
                if not entry.active:
                    if self._ready(entry, ts):
                        entry.active = True
                        out.append(entry.update("opened", self.name, ts))
                elif ts - entry.last_emit_ts >= entry.params.update_interval_s:
                    out.append(entry.update("updated", self.name, ts))
                continue
            entry.missed_s += dt
            if entry.missed_s > entry.params.grace_s:
                if entry.active:
                    out.append(entry.update("cleared", self.name, ts))
                self._forget(key)
        return out

    def _forget(self, key: str) -> None:
        del self.entries[key]

    def active(self) -> Iterator[Entry[P]]:
        return (e for e in self.entries.values() if e.active)

    def flush(self, ts: float) -> list[ViolationUpdate]:
        """``updated`` for active violations whose latest sighting was not reported yet; clears nothing."""
        return [
            e.update("updated", self.name, ts) for e in self.active() if e.last_seen > e.emitted_last_seen
        ]

    def close_all(self, ts: float) -> list[ViolationUpdate]:
        """``cleared`` for every active violation and forget all state (tests, shutdown)."""
        out = [e.update("cleared", self.name, ts) for e in self.active()]
        for key in list(self.entries):
            self._forget(key)
        return out

    def evidence_frames(self) -> set[float]:
        """Frame times some entry still names as its best evidence."""
        return {e.best_frame_ts for e in self.entries.values()}


# ---------------------------------------------------------------------- location-keyed rules
CellKey = tuple[int, int]


def cell_of(point: npt.NDArray[np.float64], cell_px: float) -> CellKey:
    return (math.floor(point[0] / cell_px), math.floor(point[1] / cell_px))


class CellRule(Rule[P]):
    """A rule over static things keyed by location cell (stalls, structures, litter).

    Each detection's bottom-centre picks a cell (``cell`` × frame width, square). A detection joins
    an entry whose cell it falls in, or whose first position is within half a cell (so box jitter
    across a cell border does not make a second violation); several boxes in one cell are one entry.
    """

    def _accept(self, dets: Detections, params: P, ts: float, frame_size: FrameSize) -> npt.NDArray[np.bool_]:
        """Extra per-detection filters of a rule (area, schedule); all pass by default."""
        return np.ones(len(dets), bool)

    @abstractmethod
    def _cell_size(self, params: P) -> float: ...

    def __init__(
        self,
        zones: Sequence[Zone],
        config: RulesConfig | None = None,
        *,
        max_gap_s: float | None = None,
    ) -> None:
        super().__init__(zones, config, max_gap_s=max_gap_s)
        self._origin: dict[str, tuple[CellKey, npt.NDArray[np.float64]]] = {}

    def _observe(self, dets: Detections, ts: float, frame_size: FrameSize) -> set[str]:
        seen: set[str] = set()
        if len(dets) == 0:
            return seen
        labels = labels_of(dets)
        points = np.stack([(dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2.0, dets.xyxy[:, 3]], axis=1).astype(
            np.float64
        )
        for zone, params in self.zones:
            mask = class_mask(dets, params.classes) & zone.contains_points(points, frame_size)
            mask &= self._accept(dets, params, ts, frame_size)
            cell_px = self._cell_size(params) * frame_size[0]
            order = np.argsort(-dets.confidence, kind="stable")  # the best box founds a new cell
            for i in (int(k) for k in order if mask[k]):
                key = self._match(zone.id, points[i], cell_px)
                box = box_tuple(dets.xyxy[i])
                entry = self.entries.get(key)
                if entry is None:
                    entry = new_entry(f"{key}@{int(ts)}", labels[i], zone.id, params, ts, box)
                    self.entries[key] = entry
                    self._origin[key] = (cell_of(points[i], cell_px), points[i])
                elif key in seen:
                    box = _union(entry.bbox, box)
                entry.observe(ts, box, float(dets.confidence[i]))
                seen.add(key)
        return seen

    def _match(self, zone_id: str, point: npt.NDArray[np.float64], cell_px: float) -> str:
        cell = cell_of(point, cell_px)
        prefix = f"{self.name}:{zone_id}:"
        best: tuple[float, str] | None = None
        for key, (origin_cell, origin) in self._origin.items():
            if not key.startswith(prefix):
                continue
            if origin_cell == cell:
                return key
            d = float(np.max(np.abs(point - origin)))
            if d <= cell_px / 2 and (best is None or d < best[0]):
                best = (d, key)
        if best is not None:
            return best[1]
        return f"{prefix}cell{cell[0]}x{cell[1]}"

    def _forget(self, key: str) -> None:
        super()._forget(key)
        self._origin.pop(key, None)


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
