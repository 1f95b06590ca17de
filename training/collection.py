"""The detector's collection as the labelling tools see it (``citywatch collect export|import``).

A collection (``detector.contracts.frames``) is ``<dir>/<stream>/<day>/<frame_id>.jpg`` with a
:class:`~detector.contracts.frames.FrameRecord` sidecar ``<frame_id>.json`` beside it.

* :func:`pick_frames` selects frames by reason, stream, capture time and whether they are labelled.
* :func:`frame_boxes` is what a frame goes out with: its ``labels`` when it is labelled, else the
  model's ``predictions`` of our rule labels (with scores: pre-annotations; a COCO ``person`` the rules
  use as a veto is no class of a dataset) corrected by the desk's verdict. A verdict is
  about the case's own box (``review.case_xyxy``: the predictions overlapping it by ``MATCH_IOU``, as
  ``citywatch dataset build`` matches them; else those of ``review.case_label``; else a frame's only
  prediction). The desk's box (``review.label`` + ``xyxy``, a correction) replaces the case's box and
  any prediction overlapping it. A case *rejected* as ``false_positive`` has its box left out; rejected
  as ``out_of_scope`` or ``self_resolved`` the object was there (only the violation was not), so the box
  stays. A verdict whose box cannot be found leaves the predictions as they are, counted.
* :func:`write_labels` brings imported images back: each image's sidecar (same stem, ``.json``) gets
  ``labels`` (pixels of the stored frame) and ``labelled_by``; ``reasons`` stay (why it was kept).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any, get_args

from detector.contracts.frames import (
    CollectError,
    FrameRecord,
    Label,
    Prediction,
    Reason,
    Review,
    iso_ms,
    read_record,
    sidecars,
    write_record,
)
from training.dataset import RULE_LABELS
from training.errors import TrainingError
from training.labelio import Box, LabelledImage, default_names, label_studio_config, label_studio_tasks
from training.labelio.labelstudio import ImageURL, Mode

REASONS: tuple[str, ...] = get_args(Reason)
#: a prediction is the case's detection (or the desk's box) when it overlaps it this much
MATCH_IOU = 0.3
#: rejection reasons that say the detection itself was wrong (None: a rejection from before reasons)
WRONG_DETECTION = frozenset({"false_positive", None})
#: ``labelled_by`` of an import in each format (the design's names)
LABELLED_BY = {"labelstudio": "label-studio", "cvat": "cvat", "yolo": "yolo", "coco": "coco"}
EXAMPLES = 3


class CollectionError(TrainingError):
    """The collection cannot be read or written; the message names the file or folder."""


@dataclass(frozen=True)
class Selection:
    """Which frames an export takes; an empty set means any."""

    reasons: frozenset[str] = frozenset()
    streams: frozenset[str] = frozenset()
    since: datetime | None = None
    unlabelled_only: bool = False

    def matches(self, record: FrameRecord) -> bool:
        return (
            (not self.reasons or not self.reasons.isdisjoint(record.reasons))
            and (not self.streams or record.stream in self.streams)
            and (self.since is None or record.captured_at >= self.since)
            and not (self.unlabelled_only and record.labels is not None)
        )


@dataclass(frozen=True)
class Frame:
    sidecar: Path
    record: FrameRecord

    @property
    def image(self) -> Path:
        return self.sidecar.with_suffix(".jpg")


@dataclass
class Picked:
    frames: list[Frame] = field(default_factory=list)
    scanned: int = 0  # sidecars read
    unreadable: list[str] = field(default_factory=list)  # sidecars that are not a FrameRecord
    no_image: int = 0  # selected sidecars whose JPEG is gone


def parse_since(text: str) -> datetime:
    """``--since``: a day (``2026-06-01``, from its start in UTC) or an ISO 8601 time (UTC without a zone)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CollectionError(
            f"--since {text!r} is not a day (2026-06-01) or an ISO 8601 time (2026-06-01T08:00:00Z)"
        ) from None
    if len(text.strip()) == 10:
        when = datetime.combine(when.date(), time())
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def pick_frames(root: Path, selection: Selection) -> Picked:
    """The frames under ``root`` that ``selection`` takes, in path order (stream, day, time)."""
    if not root.is_dir():
        raise CollectionError(f"{root}: no such collection folder (collect.dir of streams.yaml; --dir)")
    picked = Picked()
    for path in sidecars(root):
        try:
            record = read_record(path)
        except CollectError:
            picked.unreadable.append(str(path))
            continue
        picked.scanned += 1
        if not selection.matches(record):
            continue
        frame = Frame(path, record)
        if not frame.image.is_file():
            picked.no_image += 1
            continue
        picked.frames.append(frame)
    return picked


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def case_predictions(predictions: Sequence[Prediction], review: Review) -> set[int]:
    """Indices of the predictions that are the case's detection; empty when it cannot be told."""
    if review.case_xyxy is not None:
        return {i for i, p in enumerate(predictions) if iou(p.xyxy, review.case_xyxy) >= MATCH_IOU}
    if review.case_label is not None:
        return {i for i, p in enumerate(predictions) if p.label == review.case_label}
    return {0} if len(predictions) == 1 else set()


@dataclass
class VerdictCounts:
    """What the desk's verdicts did to the pre-annotations of one export."""

    removed: int = 0  # case boxes left out: rejected as a false positive
    replaced: int = 0  # desk boxes put in place of the case's box (corrections)
    kept: int = 0  # rejected as out of scope or self-resolved: the object was there, its box stays
    unmatched: list[str] = field(default_factory=list)  # frames whose case box was not found: as predicted

    def lines(self) -> list[str]:
        out = []
        done = [
            f"{n} {what}"
            for n, what in (
                (self.removed, "false-positive boxes left out"),
                (self.replaced, "boxes replaced by the desk's correction"),
                (self.kept, "boxes kept (rejected as out of scope or self-resolved: the object was there)"),
            )
            if n
        ]
        if done:
            out.append("desk verdicts: " + ", ".join(done))
        if self.unmatched:
            out.append(
                f"{len(self.unmatched)} reviewed frames whose case box is not among the predictions, "
                f"left as predicted (e.g. {', '.join(self.unmatched[:EXAMPLES])})"
            )
        return out


def frame_boxes(record: FrameRecord, counts: VerdictCounts) -> list[Box]:
    """The boxes a frame goes out with (module docstring)."""
    if record.labels is not None:
        return [Box(label=lb.label, xyxy=lb.xyxy) for lb in record.labels]
    # only what a dataset labels: a COCO `person` or `bicycle` (a veto of the rules) is no class of ours
    preds = [p for p in record.predictions if p.label in RULE_LABELS]
    boxes = [Box(label=p.label, xyxy=p.xyxy, score=p.score) for p in preds]
    review = record.review
    if review is None or review.verdict == "confirmed":
        return boxes
    desk = Box(label=review.label, xyxy=review.xyxy) if review.label and review.xyxy else None
    if desk is None and (review.verdict != "rejected" or review.reason not in WRONG_DETECTION):
        if review.verdict == "rejected":
            counts.kept += 1
        else:  # corrected without the desk's box: nothing to put in its place
            counts.unmatched.append(record.id)
        return boxes
    case = case_predictions(preds, review)
    if desk is not None:
        drop = case | {i for i, b in enumerate(boxes) if iou(b.xyxy, desk.xyxy) >= MATCH_IOU}
        counts.replaced += 1
        return [b for i, b in enumerate(boxes) if i not in drop] + [desk]
    if not case:
        counts.unmatched.append(record.id)
        return boxes
    counts.removed += len(case)
    return [b for i, b in enumerate(boxes) if i not in case]


def to_image(frame: Frame, counts: VerdictCounts) -> LabelledImage:
    r = frame.record
    return LabelledImage(path=frame.image, width=r.width, height=r.height, boxes=frame_boxes(r, counts))


def model_version(record: FrameRecord) -> str:
    return f"{record.model.name}@{record.model.version}" if record.model else ""


def task_data(record: FrameRecord) -> dict[str, Any]:
    """Label Studio ``data`` beside the image: what finds the sidecar again, and what to sort by."""
    return {
        "frame_id": record.id,
        "stream": record.stream,
        "captured_at": iso_ms(record.captured_at),
        "reasons": ",".join(record.reasons),
        "violation_id": record.violation_id,
        "verdict": record.review.verdict if record.review else None,
    }


def write_label_studio_tasks(
    items: Sequence[tuple[Frame, LabelledImage]], out_dir: Path, image_url: ImageURL
) -> Path:
    """``out_dir/tasks.json`` + ``labeling_config.xml``: a labelled frame as a finished annotation, any
    other frame with its boxes as the pre-annotation of the model that found them (``model_version``)."""
    names = default_names(img for _, img in items)
    tasks: list[dict[str, Any]] = []
    for frame, img in items:
        rec = frame.record
        mode: Mode = "annotations" if rec.labels is not None else "predictions"
        task = label_studio_tasks(
            [img], image_url=image_url, mode=mode, model_version=model_version(rec), names=names
        )[0]
        task["data"] = {**task_data(rec), **task["data"]}
        tasks.append(task)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "tasks.json"
    out.write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    (out_dir / "labeling_config.xml").write_text(label_studio_config(names), encoding="utf-8")
    return out


@dataclass
class Written:
    """What an import did to the sidecars."""

    updated: int = 0
    unchanged: int = 0
    per_label: Counter[str] = field(default_factory=Counter)
    no_sidecar: list[str] = field(default_factory=list)  # images in the collection without a sidecar
    repeated: list[str] = field(default_factory=list)  # images given more than once (the last one kept)
    scored: int = 0  # boxes with a score: model predictions, not a person's labels?

    def lines(self) -> list[str]:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.per_label.items())) or "no boxes"
        out = [f"sidecars: {self.updated} labelled ({labels}), {self.unchanged} already so"]
        if self.no_sidecar:
            out.append(
                f"{len(self.no_sidecar)} images without a sidecar, not labelled "
                f"(e.g. {', '.join(self.no_sidecar[:EXAMPLES])})"
            )
        if self.repeated:
            out.append(
                f"{len(self.repeated)} images given more than once, the last one kept "
                f"(e.g. {', '.join(self.repeated[:EXAMPLES])})"
            )
        if self.scored:
            out.append(
                f"{self.scored} boxes carry a model score (imported as labels): did a person check them?"
            )
        return out


def write_labels(images: Iterable[LabelledImage], by: str) -> Written:
    """Write each image's boxes as the ``labels`` of its sidecar (module docstring)."""
    latest: dict[Path, LabelledImage] = {}
    written = Written()
    for img in images:
        sidecar = img.path.with_suffix(".json")
        if sidecar in latest:
            written.repeated.append(img.path.name)
        latest[sidecar] = img
    for sidecar, img in latest.items():
        if not sidecar.is_file():
            written.no_sidecar.append(img.path.name)
            continue
        try:
            record = read_record(sidecar)
        except CollectError as err:
            raise CollectionError(str(err)) from err
        sx, sy = record.width / img.width, record.height / img.height
        labels = [
            Label(label=b.label, xyxy=_scaled(b.xyxy, sx, sy)) for b in img.boxes
        ]  # pixels of the stored frame, whatever size the tool saw
        written.scored += sum(b.score is not None for b in img.boxes)
        written.per_label.update(b.label for b in img.boxes)
        updated = record.model_copy(update={"labels": labels, "labelled_by": by})
        if updated == record:
            written.unchanged += 1
            continue
        write_record(sidecar, updated)
        written.updated += 1
    return written


def _scaled(xyxy: Sequence[float], sx: float, sy: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = xyxy
    return (round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2))
