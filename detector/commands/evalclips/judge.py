"""Judging what a clip produced against its expectations: pure functions, no models, no files.

Videos: every ``opened`` case is matched to a ``must_open`` entry of its rule whose region it lies
in; a case that matches none, or that exceeds its entry's ``count.max``, is a *false* case; an
entry left below ``count.min`` is *missed*. Stills: a detection of a checked label at or above its
threshold is *false* unless a ``must_detect`` entry takes it or an ``allow`` region covers it; a
``must_detect`` entry no detection satisfies is *missed*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from detector.commands.evalclips.spec import STILL_CHECKED_LABELS, MustOpen, StillClip, VideoClip

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Case:
    """One opened violation of a replay; ``bbox`` normalised, times in seconds of video."""

    rule: str
    label: str
    bbox: Box
    score: float
    first_seen_s: float
    opened_at_s: float
    violation_id: str = ""
    evidence: str | None = None  # where its evidence JPEG was saved, if it was

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "label": self.label,
            "bbox": [round(v, 4) for v in self.bbox],
            "score": round(self.score, 3),
            "first_seen_s": round(self.first_seen_s, 1),
            "opened_at_s": round(self.opened_at_s, 1),
            "violation_id": self.violation_id,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Seen:
    """One detection on a still, mapped onto its rule label; ``bbox`` normalised."""

    label: str
    class_name: str
    score: float
    bbox: Box

    @property
    def area(self) -> float:
        return max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1])


@dataclass
class Verdict:
    """What one clip opened (or detected), and what of it was false or missed."""

    opened: dict[str, int] = field(default_factory=dict)
    false: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    detections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.false and not self.missed


def centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def in_region(where: Sequence[float] | None, box: Sequence[float]) -> bool:
    """None: anywhere; ``[x, y]``: ``box`` contains the point; ``[x1, y1, x2, y2]``: its centre is inside."""
    if where is None:
        return True
    if len(where) == 2:
        return box[0] <= where[0] <= box[2] and box[1] <= where[1] <= box[3]
    cx, cy = centre(box)
    return where[0] <= cx <= where[2] and where[1] <= cy <= where[3]


def _distance(where: Sequence[float] | None, box: Sequence[float]) -> float:
    if where is None:
        return 1.0
    wx, wy = centre(where) if len(where) == 4 else (where[0], where[1])
    cx, cy = centre(box)
    return float(((wx - cx) ** 2 + (wy - cy) ** 2) ** 0.5)


def _region_text(where: Sequence[float] | None) -> str:
    return "anywhere" if where is None else "[" + ", ".join(f"{v:g}" for v in where) + "]"


def cases_from_events(events: Iterable[Mapping[str, Any]], start_ts: float) -> list[Case]:
    """The ``opened`` events of a replay as cases; ``start_ts`` is the frame time of video second 0."""

    def at(iso: str) -> float:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - start_ts

    return [
        Case(
            rule=str(e["rule"]),
            label=str(e.get("label", "")),
            bbox=(float(e["bbox"][0]), float(e["bbox"][1]), float(e["bbox"][2]), float(e["bbox"][3])),
            score=float(e.get("score_median", 0.0)),
            first_seen_s=at(e["first_seen"]),
            opened_at_s=at(e["last_seen"]),
            violation_id=str(e.get("violation_id", "")),
        )
        for e in events
        if e.get("event") == "opened"
    ]


def judge_video(clip: VideoClip, cases: Sequence[Case]) -> Verdict:
    """Match ``cases`` to ``clip.must_open``; see the module docstring."""
    verdict = Verdict()
    taken = [0] * len(clip.must_open)
    for case in sorted(cases, key=lambda c: (c.opened_at_s, c.rule, c.bbox)):
        verdict.opened[case.rule] = verdict.opened.get(case.rule, 0) + 1
        matches = [
            i for i, m in enumerate(clip.must_open) if m.rule == case.rule and in_region(m.where, case.bbox)
        ]
        room = [i for i in matches if _has_room(clip.must_open[i], taken[i])]
        if room:
            best = min(
                room,
                key=lambda i: (
                    taken[i] >= clip.must_open[i].count.min,
                    _distance(clip.must_open[i].where, case.bbox),
                    i,
                ),
            )
            taken[best] += 1
            continue
        verdict.false.append({**case.as_dict(), "reason": _false_reason(clip, case, matches)})
    for i, (entry, got) in enumerate(zip(clip.must_open, taken, strict=True)):
        if got < entry.count.min:
            verdict.missed.append(_missed(i, entry, got))
    return verdict


def _has_room(entry: MustOpen, taken: int) -> bool:
    return entry.count.max is None or taken < entry.count.max


def _false_reason(clip: VideoClip, case: Case, matches: list[int]) -> str:
    if matches:
        limits = ", ".join(f"must_open[{i}] allows {clip.must_open[i].count}" for i in matches)
        return f"one case more than expected there ({limits})"
    if case.rule in clip.must_not_open:
        return f"{case.rule} is in must_not_open"
    return "not expected: no must_open entry of this rule covers it"


def _missed(index: int, entry: MustOpen, got: int) -> dict[str, Any]:
    return {
        "entry": f"must_open[{index}]",
        "rule": entry.rule,
        "where": entry.where,
        "expected": str(entry.count),
        "opened": got,
        "note": entry.note,
        "reason": f"{got} case(s) opened {_region_text(entry.where)}, expected {entry.count}",
    }


def still_limits(clip: StillClip, rule_min_score: Mapping[str, float]) -> dict[str, float]:
    """The score at or above which a detection of each checked label is false."""
    limits = {label: rule_min_score[label] for label in STILL_CHECKED_LABELS if label in rule_min_score}
    limits.update({str(label): score for label, score in clip.max_score.items()})
    return limits


def judge_still(
    clip: StillClip,
    seen: Sequence[Seen],
    rule_min_score: Mapping[str, float],
    litter_min_area: float = 0.0,
) -> Verdict:
    """Judge a still's detections. ``rule_min_score`` maps each label to its rule's ``min_score``;
    litter smaller than ``litter_min_area`` (fraction of the image) never makes a case: not judged."""
    verdict = Verdict()
    limits = still_limits(clip, rule_min_score)
    used: dict[int, str] = {}
    for k, want in enumerate(clip.must_detect):
        floor = want.min_score if want.min_score is not None else rule_min_score.get(want.label, 0.0)
        fits = [
            i
            for i, s in enumerate(seen)
            if i not in used and s.label == want.label and s.score >= floor and in_region(want.where, s.bbox)
        ]
        if fits:
            used[max(fits, key=lambda i: seen[i].score)] = f"must_detect[{k}]"
            continue
        near = [s.score for s in seen if s.label == want.label and in_region(want.where, s.bbox)]
        verdict.missed.append(
            {
                "entry": f"must_detect[{k}]",
                "label": want.label,
                "where": want.where,
                "min_score": floor,
                "best_score": round(max(near), 3) if near else None,
                "note": want.note,
                "reason": f"no {want.label} at >= {floor:g} {_region_text(want.where)}"
                + (f" (best there: {max(near):.2f})" if near else " (none there)"),
            }
        )
    for i, s in enumerate(seen):
        status = _still_status(clip, s, i, used, limits, litter_min_area)
        record = {
            "label": s.label,
            "class": s.class_name,
            "score": round(s.score, 3),
            "bbox": [round(v, 4) for v in s.bbox],
            "status": status,
        }
        verdict.detections.append(record)
        if status == "false":
            verdict.false.append(
                {**record, "reason": f"{s.label} at {s.score:.2f} >= {limits[s.label]:g} and not allowed"}
            )
    return verdict


def _still_status(
    clip: StillClip, s: Seen, i: int, used: Mapping[int, str], limits: Mapping[str, float], min_area: float
) -> str:
    if i in used:
        return f"expected ({used[i]})"
    if s.label not in limits:
        return "unchecked"
    if s.label == "litter" and s.area < min_area:
        return "below min_area"
    if s.score < limits[s.label]:
        return "below threshold"
    if any(a.label == s.label and in_region(a.where, s.bbox) for a in clip.allow):
        return "allowed"
    return "false"


__all__ = [
    "Case",
    "Seen",
    "Verdict",
    "cases_from_events",
    "in_region",
    "judge_still",
    "judge_video",
    "still_limits",
]
