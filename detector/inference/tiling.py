"""Tiled inference for small, far objects (the slicing idea of SAHI, written for our ``Detections``).

A 1080p camera frame shrinks three times to reach a 640 px model input, and a car parked 60 m down the
kerb of a raised camera becomes 20 pixels wide: the COCO model scores it 0.25-0.45, below the rules'
floor. Run the model on the whole frame **and** on an ``n x n`` grid of overlapping tiles (each tile
reaches the model at up to ``n`` times the detail), then merge the two passes:

* a tile box that touches a tile edge inside the frame is cut off by the tile; it is dropped (the
  overlap puts an object smaller than it whole into a neighbouring tile, and larger objects are the
  whole-frame pass's work);
* boxes of one class group (car / truck / bus / motorcycle are one ``vehicle``) that overlap with an IoU
  of at least ``match`` are one object: it keeps the highest score of the passes, and the whole-frame box
  where there is one (its geometry is never cut by a tile). IoU, not intersection over the smaller box:
  a small car in front of a larger one, inside its box in a raised camera's view, stays its own object.

Frames smaller than ``min_scale`` times the model input gain nothing from slicing (the tiles would only
be upscaled) and run the whole-frame pass alone. Cost: up to ``1 + n*n`` model runs per frame, batched
with the other streams' frames in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.contracts.detections import Detections, FloatArray, box_iou
from detector.inference.base import Image, InferenceBackend, WrappingBackend

Window = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels
EDGE_PX = 2.0  # a tile box this close to an inner tile edge is cut by it


def tile_windows(height: int, width: int, grid: int, overlap: float) -> list[Window]:
    """``grid x grid`` windows covering a ``height x width`` frame, neighbours overlapping by ``overlap``
    of a window's size. ``grid`` 1 gives the whole frame."""
    if grid < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile grid {grid} / overlap {overlap}: need grid >= 1 and 0 <= overlap < 1")
    if grid == 1:
        return [(0, 0, width, height)]
    th = int(np.ceil(height / (grid - (grid - 1) * overlap)))
    tw = int(np.ceil(width / (grid - (grid - 1) * overlap)))
    ys = np.linspace(0, height - th, grid).round().astype(int)
    xs = np.linspace(0, width - tw, grid).round().astype(int)
    return [(int(x), int(y), int(x) + tw, int(y) + th) for y in ys for x in xs]


def cut_by_tile(xyxy: FloatArray, window: Window, height: int, width: int) -> np.ndarray:
    """Mask of tile boxes (frame pixels) touching an edge of ``window`` that lies inside the frame."""
    x1, y1, x2, y2 = window
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    cut = np.zeros(len(b), dtype=bool)
    if x1 > 0:
        cut |= b[:, 0] <= x1 + EDGE_PX
    if y1 > 0:
        cut |= b[:, 1] <= y1 + EDGE_PX
    if x2 < width:
        cut |= b[:, 2] >= x2 - EDGE_PX
    if y2 < height:
        cut |= b[:, 3] >= y2 - EDGE_PX
    return cut


def merge_passes(
    full: Detections,
    tiles: Sequence[tuple[Detections, Window]],
    height: int,
    width: int,
    group_of: dict[int, int],
    match: float = 0.5,
) -> Detections:
    """One frame's whole-frame detections merged with its tiles' (tile-pixel boxes, moved into the frame
    here). ``group_of`` maps a class id to its group (classes not in it are their own group)."""
    parts = [full]
    for dets, window in tiles:
        if not len(dets):
            continue
        moved = dets[np.arange(len(dets))]
        moved.xyxy = moved.xyxy + np.array([window[0], window[1], window[0], window[1]], np.float32)
        parts.append(moved[~cut_by_tile(moved.xyxy, window, height, width)])
    if len(parts) == 1:
        return full
    merged = Detections.merge(parts)
    if len(merged) == 0:
        return merged
    from_full = _origin(parts)
    groups = np.array([group_of.get(int(c), -1 - int(c)) for c in merged.class_id], np.int64)
    # Whole-frame boxes first (their geometry wins), then by score.
    order = np.lexsort((-merged.confidence, ~from_full))
    overlaps = box_iou(merged.xyxy, merged.xyxy)
    keep: list[int] = []
    score = merged.confidence.copy()
    taken = np.zeros(len(merged), dtype=bool)
    for i in order:
        if taken[i]:
            continue
        same = (groups == groups[i]) & ~taken & (overlaps[i] >= match)
        same[i] = True
        score[i] = float(merged.confidence[same].max())
        taken |= same
        keep.append(int(i))
    out = merged[np.asarray(keep, np.int64)]
    out.confidence = score[keep].astype(np.float32)
    return out[np.argsort(-out.confidence, kind="stable")]


def _origin(parts: Sequence[Detections]) -> np.ndarray:
    """Which rows of ``Detections.merge(parts)`` come from the first part (merge skips empty parts)."""
    flags = [np.full(len(p), i == 0, bool) for i, p in enumerate(parts) if len(p)]
    return np.concatenate(flags) if flags else np.zeros(0, bool)


class TiledBackend(WrappingBackend):
    """Wraps a backend: whole frame plus an ``grid x grid`` tile pass, merged (module docstring)."""

    def __init__(
        self, inner: InferenceBackend, grid: int, overlap: float = 0.2, min_scale: float = 1.25
    ) -> None:
        if grid < 2:
            raise ValueError(f"tiles {grid}: a tiled backend needs a grid of at least 2")
        super().__init__(inner)
        self.grid, self.overlap, self.min_scale = grid, overlap, min_scale

    def windows(self, image: Image) -> list[Window]:
        """The tiles of ``image``: none when it is smaller than ``min_scale`` times the model input."""
        height, width = image.shape[:2]
        if max(height, width) < self.min_scale * self.imgsz:
            return []
        return tile_windows(height, width, self.grid, self.overlap)

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        plans = [self.windows(img) for img in images]
        crops: list[Image] = list(images)
        for img, wins in zip(images, plans, strict=True):
            crops.extend(np.ascontiguousarray(img[y1:y2, x1:x2]) for x1, y1, x2, y2 in wins)
        results = self.inner.infer(crops)
        group_of = {cls: g for g, members in enumerate(self.class_groups) for cls in members}
        out: list[Detections] = []
        cursor = len(images)
        for index, (img, wins) in enumerate(zip(images, plans, strict=True)):
            tiles = list(zip(results[cursor : cursor + len(wins)], wins, strict=True))
            cursor += len(wins)
            height, width = img.shape[:2]
            out.append(merge_passes(results[index], tiles, height, width, group_of))
        return out

    def __repr__(self) -> str:
        return f"TiledBackend({self.inner!r}, grid={self.grid}, overlap={self.overlap})"
