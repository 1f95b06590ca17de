"""One stream's rules: the tracker plus the four rules over the stream's zones.

``step`` takes the detections of one sampled frame (model class names in ``data["class_name"]``),
maps the class names onto rule labels, tracks them, and returns the violation lifecycle events.

Detections merged from several models (``detector.inference.rule_models``) already carry their rule label
(``data["label"]``) and the model that found them (``data["model"]``); with ``rule_sources`` (rule name
-> model id) each rule sees only the detections of the model that serves it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import NATIVE_CONFIDENCE, Detections
from detector.rules.base import Rule, RuleError, ViolationUpdate, class_mask
from detector.rules.litter import LitterRule
from detector.rules.params import RulesConfig
from detector.rules.parking import ParkingRule
from detector.rules.structure import StructureRule
from detector.rules.tracker import Tracker
from detector.rules.vending import VendingRule
from detector.rules.zones import FrameSize, Zone, ZoneError

LabelOf = Callable[[str], str | None]

DEFAULT_MAX_AGE_S = 120.0


def label_map(rule_labels: dict[str, str]) -> LabelOf:
    """A ``label_of`` from a manifest's ``rule_labels`` mapping (class name → rule label)."""
    return rule_labels.get


def vetoing_boxes(others: Detections, veto: Sequence[str], min_score: float) -> npt.NDArray[np.float64]:
    """Boxes of the confident detections of a ``veto`` label or class name, judged by the score of the
    model's own pass (``NATIVE_CONFIDENCE``): a zoomed pass confirms a far car for parking, but a box that
    only its confirmation lifts is too unsure to overrule another rule's detection."""
    if len(others) == 0:
        return np.zeros((0, 4))
    score = others.data.get(NATIVE_CONFIDENCE, others.confidence)
    by = others[class_mask(others, veto) & (score >= min_score)]
    return by.xyxy.astype(np.float64).reshape(-1, 4)


def vetoed(
    dets: Detections, others: Detections, veto: Sequence[str], min_score: float, overlap: float
) -> npt.NDArray[np.bool_]:
    """Which of ``dets`` a confident detection of a ``veto`` label or class in ``others`` covers: IoU, or the
    share of the detection's own area inside the vetoing box, at least ``overlap``. A box the COCO model
    calls a person at 0.9 is not a stall; a "litter" patch on a car roof is part of the car."""
    return covered(dets, vetoing_boxes(others, veto, min_score), overlap)


def covered(dets: Detections, boxes: npt.NDArray[np.float64], overlap: float) -> npt.NDArray[np.bool_]:
    """Which of ``dets`` one of ``boxes`` covers (IoU or own-area share >= ``overlap``)."""
    out = np.zeros(len(dets), dtype=bool)
    if len(dets) == 0 or len(boxes) == 0:
        return out
    a, b = dets.xyxy.astype(np.float64), boxes
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    iou = inter / np.maximum(area_a + area_b - inter, 1e-9)
    inside = inter / np.maximum(area_a, 1e-9)
    return np.asarray(((iou >= overlap) | (inside >= overlap)).any(axis=1), dtype=bool)


class RuleEngine:
    """Tracker + rules for one stream. Frame timestamps must not go backwards."""

    def __init__(
        self,
        zones: Sequence[Zone],
        rules_config: RulesConfig | None = None,
        label_of: LabelOf | None = None,
        *,
        tracker: Tracker | None = None,
        max_gap_s: float | None = None,
        rule_sources: Mapping[str, str] | None = None,
    ) -> None:
        ids = [z.id for z in zones]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ZoneError(f"zone ids must be unique within a stream; repeated: {dup}")
        self.config = rules_config or RulesConfig()
        self.zones = list(zones)
        self.label_of: LabelOf = label_of or (lambda name: name)
        self.rule_sources: dict[str, str] = dict(rule_sources or {})
        self.rules: list[Rule[Any]] = [
            ParkingRule(zones, self.config, max_gap_s=max_gap_s),
            VendingRule(zones, self.config, max_gap_s=max_gap_s),
            StructureRule(zones, self.config, max_gap_s=max_gap_s),
            LitterRule(zones, self.config, max_gap_s=max_gap_s),
        ]
        if tracker is None:
            graces = [self.config.illegal_parking.grace_s]
            graces += [
                z.config(self.config).illegal_parking.grace_s for z in zones if z.enforces("illegal_parking")
            ]
            tracker = Tracker(
                max_age_s=max(DEFAULT_MAX_AGE_S, *graces),
                stationary_iou=self.config.illegal_parking.stationary_iou,
                max_gap_s=max_gap_s,
            )
        self.tracker = tracker
        self._veto_memory: dict[str, list[tuple[float, npt.NDArray[np.float64]]]] = {}
        self.last_detections: Detections = Detections.empty()
        self.last_ts: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without ``label_of`` (a closure over the manifest): the restoring side sets its own
        (:meth:`detector.pipeline.StreamPipeline.restore`)."""
        state = dict(self.__dict__)
        state.pop("label_of", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.label_of = lambda name: name

    def labelled(self, dets: Detections) -> Detections:
        """``dets`` with ``data["label"]``: the rule label of each class name, or the name itself.
        Detections that already carry labels (merged from several models) keep them."""
        if "label" in dets.data:
            return dets
        labels = []
        for name in dets.class_name:
            label = self.label_of(str(name))
            labels.append(str(name) if label is None else label)
        data = dict(dets.data)
        data["label"] = np.array(labels, dtype=object)
        return Detections(dets.xyxy, dets.confidence, dets.class_id, dets.tracker_id, data)

    def step(self, dets: Detections, ts: float, frame_size: FrameSize) -> list[ViolationUpdate]:
        """Judge one sampled frame taken at frame time ``ts`` of size ``(width, height)``."""
        width, height = frame_size
        if width <= 0 or height <= 0:
            raise RuleError(f"frame size must be positive (width, height), got {frame_size}")
        tracked = self.tracker.update(self.labelled(dets), ts, frame_size)
        self.last_detections = tracked
        self.last_ts = ts
        out: list[ViolationUpdate] = []
        for rule in self.rules:
            params = getattr(self.config, rule.name)
            mine = self.seen_by(rule.name, tracked)
            if params.veto:
                mine = self._veto(rule.name, mine, tracked, params, ts)
            out.extend(rule.step(mine, ts, frame_size))
        return out

    def _veto(self, rule: str, mine: Detections, tracked: Detections, params: Any, ts: float) -> Detections:
        """``mine`` without what a vetoing box covers now or covered within ``veto_memory_s``: a parked car
        that the vehicle model sees only now and then still overrules the "stall" read on it in between."""
        memory = [(t, b) for t, b in self._veto_memory.get(rule, []) if ts - t <= params.veto_memory_s]
        now = vetoing_boxes(tracked, params.veto, params.veto_min_score)
        memory += [(ts, b) for b in now]
        self._veto_memory[rule] = memory
        if len(mine) == 0 or not memory:
            return mine
        boxes = np.array([b for _, b in memory], np.float64).reshape(-1, 4)
        return mine[~covered(mine, boxes, params.veto_overlap)]

    def seen_by(self, rule: str, dets: Detections) -> Detections:
        """The detections ``rule`` may judge: those of the model that serves it, when the detections say
        which model found them and ``rule_sources`` names one; else all of them."""
        source = self.rule_sources.get(rule)
        models = dets.data.get("model")
        if source is None or models is None or len(dets) == 0:
            return dets
        return dets[np.asarray(models == source, dtype=bool)]

    def flush(self, ts: float) -> list[ViolationUpdate]:
        """End of stream: report the latest sightings of active violations; clears nothing,
        since a replay ending is not the object leaving."""
        return [u for rule in self.rules for u in rule.flush(ts)]

    def close_all(self, ts: float) -> list[ViolationUpdate]:
        """Clear every active violation and forget all rule state (tests, decommissioning a stream)."""
        return [u for rule in self.rules for u in rule.close_all(ts)]

    def evidence_frames(self) -> set[float]:
        """Frame times still named as best evidence; a pipeline may drop kept frames not in here."""
        out: set[float] = set()
        for rule in self.rules:
            out |= rule.evidence_frames()
        return out

    def active(self) -> list[str]:
        """Keys of the active violations."""
        return [e.key for rule in self.rules for e in rule.active()]
