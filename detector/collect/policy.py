"""Which sampled frames are worth labelling: the pure decisions of the collector.

- ``near_threshold``: a detection scores in ``[min_score - below, min_score + above)`` of a rule that
  judges its label (or class name) and is served by the model that found it: what the rule just missed
  or only just took.
- ``disagreement``: two models hand the same rule label on to this stream (say the COCO model serving
  illegal_parking and the bureau model watching vehicles as a veto); one sees the label at its rule's
  ``min_score`` and the other has no box there (IoU >= ``disagreement_iou``) scoring at least
  ``min_score - below``.
- ``uniform``: the hour (of frame time, UTC) is cut into ``uniform_per_hour`` equal slots and the first
  sample of each slot is kept: a small sample of every camera by day and by night.
- ``case``: the frame of every opened violation (decided by the collector from the events).

A near-threshold or disagreeing box at the place of one already kept for the same reason this hour (IoU
>= ``SAME_PLACE_IOU``) keeps no further frame: a parked car that one model misses gives one frame an hour,
not one per sample. Everything but case frames counts against ``per_stream_per_hour``, checked before any
JPEG is encoded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from detector.config.collect import CollectConfig
from detector.contracts.detections import Detections
from detector.inference.rule_models import enabled_rules, rule_classes, watched
from detector.pipeline import StreamPipeline

HOUR_S = 3600.0
#: a box overlapping one already kept this hour for the same reason this much is the same object
SAME_PLACE_IOU = 0.5
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Det:
    """One detection, flattened: its rule label, class name, pixel box, score and model id."""

    label: str
    class_name: str
    xyxy: Box
    score: float
    model: str


def flatten(dets: Detections, default_model: str, rule_labels: Mapping[str, str]) -> list[Det]:
    """``dets`` as :class:`Det` rows: merged detections carry ``data["label"]`` / ``data["model"]``;
    a single model's do not (its class names map through ``rule_labels``)."""
    names = [str(n) for n in dets.class_name]
    labels = dets.data.get("label")
    models = dets.data.get("model")
    out: list[Det] = []
    for i, name in enumerate(names):
        x1, y1, x2, y2 = (float(v) for v in dets.xyxy[i])
        out.append(
            Det(
                label=str(labels[i]) if labels is not None else rule_labels.get(name, name),
                class_name=name,
                xyxy=(x1, y1, x2, y2),
                score=float(dets.confidence[i]),
                model=str(models[i]) if models is not None else default_model,
            )
        )
    return out


@dataclass(frozen=True)
class StreamPolicy:
    """What one stream's rules judge: the thresholds per (model id, label or class name), and which models
    hand each rule label on to the pipeline."""

    thresholds: Mapping[tuple[str, str], tuple[float, ...]]
    emitters: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, pipe: StreamPipeline) -> StreamPolicy:
        stream = pipe.stream
        thresholds: dict[tuple[str, str], set[float]] = {}
        watch: dict[str, set[str]] = {}
        infos = {}
        for rule in enabled_rules(stream):
            info = pipe.model_for(rule)
            infos[info.id] = info
            scores = {float(getattr(stream.effective_rules, rule).min_score)}
            scores |= {
                float(getattr(z.effective_rules, rule).min_score) for z in stream.zones if rule in z.rules
            }
            for name in rule_classes(stream, rule):
                thresholds.setdefault((info.id, name), set()).update(scores)
            watch.setdefault(info.id, set()).update(watched(stream, rule))
        emitters: dict[str, set[str]] = {}
        for mid, names in watch.items():
            info = infos[mid]
            for cls_name, label in info.rule_labels.items():
                if label in names or cls_name in names:
                    emitters.setdefault(label, set()).add(mid)
        return cls(
            {k: tuple(sorted(v)) for k, v in thresholds.items()},
            {k: frozenset(v) for k, v in emitters.items()},
        )

    def thresholds_of(self, det: Det) -> tuple[float, ...]:
        """The ``min_score``s of the rules that judge ``det`` (served by its model)."""
        return self.thresholds.get((det.model, det.label), ()) + self.thresholds.get(
            (det.model, det.class_name), ()
        )

    def label_threshold(self, label: str) -> float | None:
        """The lowest ``min_score`` of a rule judging ``label`` whatever the model; None if none does."""
        scores = [s for (_mid, name), values in self.thresholds.items() if name == label for s in values]
        return min(scores) if scores else None


def near_threshold(policy: StreamPolicy, dets: Sequence[Det], below: float, above: float) -> list[Box]:
    """The boxes of the detections near a threshold of a rule that judges them."""
    return [d.xyxy for d in dets if any(t - below <= d.score < t + above for t in policy.thresholds_of(d))]


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def disagreement(policy: StreamPolicy, dets: Sequence[Det], below: float, min_iou: float) -> list[Box]:
    """The boxes of a label two or more models emit here, seen at its threshold by one and not matched by
    another."""
    out: list[Box] = []
    for label, models in policy.emitters.items():
        if len(models) < 2:
            continue
        threshold = policy.label_threshold(label)
        if threshold is None:
            continue
        mine = [d for d in dets if d.label == label and d.model in models]
        for d in mine:
            if d.score < threshold:
                continue
            if any(
                not any(
                    o.model == other and o.score >= threshold - below and iou(d.xyxy, o.xyxy) >= min_iou
                    for o in mine
                )
                for other in models - {d.model}
            ):
                out.append(d.xyxy)
    return out


def uniform_slot(ts: float, per_hour: int) -> tuple[int, int]:
    """(hour number, slot within the hour) of frame time ``ts``."""
    hour = int(ts // HOUR_S)
    return hour, min(per_hour - 1, int((ts - hour * HOUR_S) * per_hour // HOUR_S))


@dataclass
class Quota:
    """One stream's counts in the current hour of frame time (reset when the hour changes)."""

    hour: int | None = None
    kept: int = 0
    slots: set[int] = field(default_factory=set)
    places: dict[str, list[Box]] = field(default_factory=dict)  # reason -> boxes kept for it this hour

    def roll(self, ts: float) -> None:
        hour = int(ts // HOUR_S)
        if hour != self.hour:
            self.hour, self.kept, self.slots, self.places = hour, 0, set(), {}

    def new_places(self, reason: str, boxes: Sequence[Box]) -> list[Box]:
        """``boxes`` not already kept this hour for ``reason`` (a parked car near its threshold keeps one
        frame an hour, not one per sample)."""
        seen = self.places.get(reason, [])
        return [b for b in boxes if all(iou(b, s) < SAME_PLACE_IOU for s in seen)]


@dataclass(frozen=True)
class Decision:
    """Why a frame is kept (empty: not kept); ``capped``: it was wanted but the hour's cap is reached."""

    reasons: tuple[str, ...] = ()
    capped: bool = False
    slot: int | None = None
    places: Mapping[str, Sequence[Box]] = field(default_factory=dict)


def decide(
    cfg: CollectConfig, policy: StreamPolicy, quota: Quota, ts: float, dets: Sequence[Det]
) -> Decision:
    """Why to keep the frame at ``ts`` (not counting case frames); reads ``quota``, never changes it
    (the caller calls :func:`commit` once the frame is queued)."""
    quota.roll(ts)
    reasons: list[str] = []
    slot = None
    if cfg.uniform_per_hour > 0:
        _hour, s = uniform_slot(ts, cfg.uniform_per_hour)
        if s not in quota.slots:
            reasons.append("uniform")
            slot = s
    near = cfg.near_threshold
    places: dict[str, list[Box]] = {}
    if near.enabled:
        places["near_threshold"] = near_threshold(policy, dets, near.below, near.above)
    if cfg.disagreement:
        places["disagreement"] = disagreement(policy, dets, near.below, cfg.disagreement_iou)
    for reason, boxes in places.items():
        places[reason] = quota.new_places(reason, boxes)
        if places[reason]:
            reasons.append(reason)
    if not reasons:
        return Decision()
    if quota.kept >= cfg.per_stream_per_hour:
        return Decision(capped=True)
    return Decision(tuple(reasons), slot=slot, places={r: b for r, b in places.items() if b})


def commit(quota: Quota, decision: Decision) -> None:
    """Count a queued frame against the hour's cap (and fill its uniform slot)."""
    quota.kept += 1
    if decision.slot is not None:
        quota.slots.add(decision.slot)
    for reason, boxes in decision.places.items():
        quota.places.setdefault(reason, []).extend(boxes)
