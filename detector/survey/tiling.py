"""Sliced (tiled) inference for small objects in large frames.

The frame is cut into ``tile`` x ``tile`` crops overlapping by ``overlap`` (the last row and column
are pushed back to end at the frame edge), every crop goes to the backend in batches, boxes are
shifted back into frame pixels, and the pieces of one object cut by tile edges are merged greedily:
highest score first, a box absorbs every other box of its class whose intersection over the smaller
box is at least ``match`` (SAHI's GREEDYNMM on IOS, 0.5), growing to their union. Seen from above,
objects do not stack: a box overlapping a stronger box of another class by IoU >= ``cross_iou`` is the
same object given a second class, and is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections, box_iou
from detector.inference import InferenceBackend

Image = npt.NDArray[np.uint8]


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return sorted(set(starts))


def tile_grid(
    width: int, height: int, tile: int = 640, overlap: float = 0.2
) -> list[tuple[int, int, int, int]]:
    """Crop rectangles ``(x1, y1, x2, y2)`` covering a ``width`` x ``height`` frame."""
    if tile < 32 or not 0.0 <= overlap < 0.9:
        raise ValueError(f"need tile >= 32 and 0 <= overlap < 0.9, got tile={tile} overlap={overlap}")
    step = max(1, round(tile * (1.0 - overlap)))
    xs, ys = _starts(width, tile, step), _starts(height, tile, step)
    return [(x, y, min(width, x + tile), min(height, y + tile)) for y in ys for x in xs]


def intersection_over_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoS of one box ``a (4,)`` against boxes ``b (n, 4)``."""
    tl = np.maximum(a[:2], b[:, :2])
    br = np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=1)
    area_a = float(np.prod(np.clip(a[2:] - a[:2], 0, None)))
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    smaller = np.minimum(area_a, area_b)
    out: np.ndarray = np.where(smaller > 0, inter / np.maximum(smaller, 1e-9), 0.0)
    return out


def greedy_merge(dets: Detections, match: float = 0.5, cross_iou: float = 0.7) -> Detections:
    """Greedy non-maximum merging per class on intersection-over-smaller, then cross-class suppression."""
    if len(dets) <= 1:
        return dets
    order = np.argsort(-dets.confidence, kind="stable")
    boxes = dets.xyxy.astype(np.float64)
    used = np.zeros(len(dets), bool)
    keep: list[int] = []
    merged = boxes.copy()
    for i in order:
        if used[i]:
            continue
        used[i] = True
        keep.append(int(i))
        same = np.flatnonzero(~used & (dets.class_id == dets.class_id[i]))
        if len(same) == 0:
            continue
        ios = intersection_over_smaller(boxes[i], boxes[same])
        hits = same[ios >= match]
        if len(hits):
            used[hits] = True
            group = np.vstack([boxes[i][None], boxes[hits]])
            merged[i] = [group[:, 0].min(), group[:, 1].min(), group[:, 2].max(), group[:, 3].max()]
    out = dets[np.array(keep, np.int64)]
    out.xyxy = merged[keep].astype(np.float32)
    iou = box_iou(out.xyxy, out.xyxy)  # ``keep`` is in descending score order
    drop = np.zeros(len(out), bool)
    for i in range(len(out)):
        if not drop[i]:
            later = np.arange(i + 1, len(out))
            drop[later[(iou[i, later] >= cross_iou) & (out.class_id[later] != out.class_id[i])]] = True
    return out[~drop] if drop.any() else out


def merge_until_stable(dets: Detections, match: float = 0.5, rounds: int = 3) -> Detections:
    """Greedy merging repeated on the grown boxes: a large object cut into four tiles comes together even
    when its strongest piece touches only some of the others."""
    for _ in range(rounds):
        merged = greedy_merge(dets, match)
        if len(merged) == len(dets):
            return merged
        dets = merged
    return dets


class SlicedDetector:
    """Run a backend over tiles of each frame and merge the pieces; one backend per instance."""

    def __init__(
        self,
        backend: InferenceBackend,
        tile: int = 640,
        overlap: float = 0.2,
        *,
        batch: int = 8,
        match: float = 0.5,
        full_frame: bool = False,
    ) -> None:
        self.backend = backend
        self.tile, self.overlap, self.batch, self.match = tile, overlap, max(1, batch), match
        self.full_frame = full_frame
        self.tiles_run = 0

    def __call__(self, image: Image) -> Detections:
        h, w = image.shape[:2]
        rects = tile_grid(w, h, self.tile, self.overlap)
        parts: list[Detections] = []
        for start in range(0, len(rects), self.batch):
            chunk = rects[start : start + self.batch]
            crops = [np.ascontiguousarray(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in chunk]
            for (x1, y1, _, _), d in zip(chunk, self.backend.infer(crops), strict=True):
                if len(d):
                    d.xyxy = d.xyxy + np.array([x1, y1, x1, y1], np.float32)
                    parts.append(d)
            self.tiles_run += len(chunk)
        if self.full_frame and len(rects) > 1:
            parts.extend(d for d in self.backend.infer([image]) if len(d))
        return merge_until_stable(Detections.merge(parts), self.match)

    def detect_many(self, images: Sequence[Image]) -> list[Detections]:
        return [self(img) for img in images]
