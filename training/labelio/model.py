"""The one in-memory form every reader returns and every writer takes: images with pixel boxes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.dataset import RULE_LABELS
from training.errors import TrainingError

XYXY = tuple[float, float, float, float]


class LabelImportError(TrainingError):
    """Labels could not be brought back: unknown classes, a malformed file, images not found.

    ``report`` is the :class:`~training.labelio.report.ImportReport` so far when there is one (the
    unknown-class refusal carries the whole report, so a caller can print every name at once).
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class LabelExportError(TrainingError):
    """Images could not be written out for a labelling tool (a label not in the names, a name clash)."""


@dataclass(frozen=True, slots=True)
class Box:
    """One box in pixels of its image; ``score`` set means a model prediction (a pre-annotation)."""

    label: str
    xyxy: XYXY
    score: float | None = None

    def __post_init__(self) -> None:
        if len(self.xyxy) != 4:
            raise ValueError(f"Box.xyxy needs 4 numbers (x1, y1, x2, y2), got {len(self.xyxy)}")
        if not self.label:
            raise ValueError("Box.label is empty")

    @property
    def width(self) -> float:
        return self.xyxy[2] - self.xyxy[0]

    @property
    def height(self) -> float:
        return self.xyxy[3] - self.xyxy[1]


@dataclass(slots=True)
class LabelledImage:
    """An image file, its size in pixels and its boxes; ``boxes == []`` means labelled, nothing there."""

    path: Path
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"{self.path}: image size must be positive, got {self.width}x{self.height}")


def clip_xyxy(xyxy: Sequence[float], width: float, height: float) -> XYXY:
    """``xyxy`` ordered (x1 <= x2, y1 <= y2) and clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    return (
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
        min(max(x2, 0.0), width),
        min(max(y2, 0.0), height),
    )


def rotated_envelope(cx: float, cy: float, corners: Iterable[tuple[float, float]], degrees: float) -> XYXY:
    """Axis-aligned envelope of ``corners`` (offsets from the pivot ``cx, cy``) turned by ``degrees``
    clockwise on screen (y down), the way both CVAT and Label Studio turn boxes."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    pts = [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in corners]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def default_names(images: Iterable[LabelledImage]) -> list[str]:
    """Class names for an export: the rule labels in their fixed order, then any other label sorted.

    Every rule label is listed even when no box has it, so a labeller can draw any of them.
    """
    seen = {b.label for img in images for b in img.boxes}
    return [*RULE_LABELS, *sorted(seen - set(RULE_LABELS))]


def check_names(images: Iterable[LabelledImage], names: Sequence[str]) -> dict[str, int]:
    """``{name: index}`` for ``names``; a box whose label is not among them is refused by name."""
    if len(set(names)) != len(names):
        raise LabelExportError(f"class names repeat a name: {list(names)}")
    index = {n: i for i, n in enumerate(names)}
    missing: dict[str, str] = {}
    for img in images:
        for b in img.boxes:
            if b.label not in index:
                missing.setdefault(b.label, img.path.name)
    if missing:
        listed = ", ".join(f"{k!r} (e.g. {v})" for k, v in sorted(missing.items()))
        raise LabelExportError(f"labels not among the class names {list(names)}: {listed}")
    return index
