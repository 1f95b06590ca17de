"""What an import found, and the one place every reader turns raw boxes into our boxes.

Every reader hands each raw box (their class name, pixel corners, score) to :class:`ImportContext`,
which maps the name through the class map, clips the box to its image, drops and counts degenerate ones,
and counts everything for the :class:`ImportReport`. Unknown class names are collected across the whole
file, then :meth:`ImportContext.finish` refuses the import with all of them listed (unless
``skip_unknown``, which counts the boxes it leaves out). Nothing is dropped without a count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.labelio.classmap import ClassMap
from training.labelio.model import Box, LabelImportError, LabelledImage, clip_xyxy

EXAMPLES = 3  # example files kept per finding
MIN_SIZE = 1.0  # pixels: a box narrower or lower than this after clipping is degenerate
CLIP_TOLERANCE = 0.5  # pixels: clipping by less is rounding (percent round trips), not counted


@dataclass
class Finding:
    """A count with a few example files."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, n: int = 1) -> None:
        self.count += n
        if where not in self.examples and len(self.examples) < EXAMPLES:
            self.examples.append(where)


@dataclass
class ImportReport:
    """Counts of one import. ``images`` were returned (``empty`` of them labelled with no box)."""

    format: str
    source: str
    images: int = 0
    empty: int = 0
    boxes: int = 0
    per_label: Counter[str] = field(default_factory=Counter)
    unknown: dict[str, Finding] = field(default_factory=dict)  # their name -> boxes, files
    skipped: int = 0  # boxes of unknown classes left out (skip_unknown=True)
    ignored: Counter[str] = field(default_factory=Counter)  # boxes of classes the map leaves out
    clipped: int = 0  # boxes reaching outside their image, clipped to it
    degenerate: Finding = field(default_factory=Finding)  # boxes with no area after clipping, dropped
    rotated: int = 0  # rotated boxes, taken as their axis-aligned envelope
    other_shapes: Counter[str] = field(default_factory=Counter)  # polygons, points, tags...: not boxes
    missing_images: Finding = field(default_factory=Finding)  # named in the file, not found on disk
    unlabelled: int = 0  # images/tasks with no usable annotation (not returned)
    cancelled: int = 0  # Label Studio annotations skipped as cancelled

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (sorted keys in the counters)."""
        return {
            "format": self.format,
            "source": self.source,
            "images": self.images,
            "empty": self.empty,
            "boxes": self.boxes,
            "per_label": dict(sorted(self.per_label.items())),
            "unknown": {
                k: {"boxes": v.count, "examples": v.examples} for k, v in sorted(self.unknown.items())
            },
            "skipped": self.skipped,
            "ignored": dict(sorted(self.ignored.items())),
            "clipped": self.clipped,
            "degenerate": {"boxes": self.degenerate.count, "examples": self.degenerate.examples},
            "rotated": self.rotated,
            "other_shapes": dict(sorted(self.other_shapes.items())),
            "missing_images": {"count": self.missing_images.count, "examples": self.missing_images.examples},
            "unlabelled": self.unlabelled,
            "cancelled": self.cancelled,
        }

    def unknown_text(self) -> str:
        return ", ".join(
            f"{name!r} ({f.count} box{'es' if f.count != 1 else ''}, e.g. {', '.join(f.examples)})"
            for name, f in sorted(self.unknown.items(), key=lambda kv: (-kv[1].count, kv[0]))
        )

    def summary(self) -> str:
        """A few lines for a person: what came in, and every count that is not zero."""
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.per_label.items())) or "none"
        lines = [
            f"{self.source} ({self.format}): {self.images} images ({self.empty} labelled empty), "
            f"{self.boxes} boxes: {labels}"
        ]
        if self.unknown:
            verb = "skipped" if self.skipped else "unknown"
            lines.append(f"  {verb} classes: {self.unknown_text()}")
        if self.ignored:
            lines.append(
                "  left out by the class map: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.ignored.items()))
            )
        for n, what in (
            (self.clipped, "boxes clipped to their image"),
            (self.rotated, "rotated boxes taken as their upright envelope"),
            (self.unlabelled, "images without a usable annotation (not imported)"),
            (self.cancelled, "cancelled annotations ignored"),
        ):
            if n:
                lines.append(f"  {n} {what}")
        if self.degenerate.count:
            lines.append(
                f"  {self.degenerate.count} degenerate boxes dropped (no area in the image), "
                f"e.g. {', '.join(self.degenerate.examples)}"
            )
        if self.other_shapes:
            lines.append(
                "  not boxes, left out: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.other_shapes.items()))
            )
        if self.missing_images.count:
            lines.append(
                f"  {self.missing_images.count} images not found (not imported), "
                f"e.g. {', '.join(self.missing_images.examples)}"
            )
        return "\n".join(lines)


class ImportContext:
    """Builds one import's boxes and its report; see the module docstring."""

    def __init__(
        self,
        fmt: str,
        source: Path | str,
        *,
        class_map: ClassMap | None = None,
        skip_unknown: bool = False,
        images_dir: Path | None = None,
    ) -> None:
        self.report = ImportReport(format=fmt, source=str(source))
        self.class_map = class_map if class_map is not None else ClassMap()
        self.skip_unknown = skip_unknown
        self.images_dir = images_dir
        self.named = 0  # images the file names, found or not

    def box(
        self,
        where: str,
        name: str,
        xyxy: Sequence[float],
        size: tuple[float, float],
        score: float | None = None,
        *,
        rotated: bool = False,
    ) -> Box | None:
        """Our box for a raw one, or ``None`` (counted: unknown, left out, or degenerate)."""
        if not self.class_map.knows(name):
            self.report.unknown.setdefault(name, Finding()).add(where)
            if self.skip_unknown:
                self.report.skipped += 1
            return None
        label = self.class_map.label_for(name)
        if label is None:
            self.report.ignored[name] += 1
            return None
        w, h = size
        if len(xyxy) != 4 or not all(math.isfinite(float(v)) for v in xyxy):
            self.report.degenerate.add(where)
            return None
        clipped = clip_xyxy(xyxy, w, h)
        if max(abs(a - b) for a, b in zip(clipped, _ordered(xyxy), strict=True)) > CLIP_TOLERANCE:
            self.report.clipped += 1
        if clipped[2] - clipped[0] < MIN_SIZE or clipped[3] - clipped[1] < MIN_SIZE:
            self.report.degenerate.add(where)
            return None
        if rotated:
            self.report.rotated += 1
        return Box(label=label, xyxy=clipped, score=score)

    def image(self, image: LabelledImage) -> LabelledImage:
        """Count an image that is returned."""
        self.report.images += 1
        self.report.empty += not image.boxes
        self.report.boxes += len(image.boxes)
        self.report.per_label.update(b.label for b in image.boxes)
        return image

    def missing(self, name: str) -> None:
        self.report.missing_images.add(name)

    def finish(self, images: list[LabelledImage]) -> tuple[list[LabelledImage], ImportReport]:
        """The images and the report; refuses unknown classes (unless skipped) and a wrong images folder."""
        r = self.report
        if r.unknown and not self.skip_unknown:
            raise LabelImportError(
                f"{r.source}: {len(r.unknown)} class name{'s are' if len(r.unknown) != 1 else ' is'} not in "
                f"the class map: {r.unknown_text()}. Map each to one of our labels "
                f"({', '.join(self.class_map.labels)}) in the class map (their_name=our_label; "
                "their_name= leaves a class out), or skip those boxes with skip_unknown (--skip-unknown).",
                report=r,
            )
        if r.missing_images.count and not images:
            where = f" under {self.images_dir}" if self.images_dir else ""
            raise LabelImportError(
                f"{r.source}: none of its {r.missing_images.count} images was found{where} "
                f"(e.g. {', '.join(r.missing_images.examples)}); point images_dir (--images) at the folder "
                "that holds them",
                report=r,
            )
        return images, r


def _ordered(xyxy: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
