"""Cut large labelled images (nadir aerial strips, 4K drone frames) into training tiles.

``python -m training.tiles IMAGES_DIR LABELS_DIR --out DIR [--size 640] [--overlap 0.15] [--scale 1.0]``
writes ``DIR/images/*.jpg`` and ``DIR/labels/*.txt`` (YOLO, normalised to the tile). A box is kept in a
tile when at least ``--min-inside`` of its area lies inside; it is clipped to the tile. Tiles are what the
survey runs on (``detector/survey/tiling.py``), so a model trained on them sees objects at the scale it
meets in a survey. ``--scale`` resizes the image first (e.g. 0.5 for imagery twice as sharp as the
flights it should match).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.errors import TrainingError
from training.teacher import IMAGE_SUFFIXES


def read_yolo(path: Path, size: tuple[int, int]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``(classes, xyxy pixels)`` from a YOLO label file for an image of ``size`` (w, h)."""
    w, h = size
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4))
    arr = np.array([[float(v) for v in r[:5]] for r in rows])
    cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return arr[:, 0].astype(np.int64), xyxy


def tile_origins(length: int, size: int, overlap: float) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``size`` overlapping by ``overlap``."""
    if length <= size:
        return [0]
    step = max(1, int(size * (1 - overlap)))
    starts = list(range(0, length - size, step))
    return [*starts, length - size]


def boxes_in_tile(
    cls: npt.NDArray[np.int64],
    xyxy: npt.NDArray[np.float64],
    tile: tuple[int, int, int, int],
    min_inside: float,
) -> list[str]:
    """YOLO lines for the boxes at least ``min_inside`` inside ``tile`` (x0, y0, x1, y1), clipped to it."""
    x0, y0, x1, y1 = tile
    tw, th = x1 - x0, y1 - y0
    lines = []
    for c, (a, b, c2, d) in zip(cls.tolist(), xyxy.tolist(), strict=True):
        area = max(0.0, c2 - a) * max(0.0, d - b)
        ca, cb, cc, cd = max(a, x0), max(b, y0), min(c2, x1), min(d, y1)
        inside = max(0.0, cc - ca) * max(0.0, cd - cb)
        if area <= 0 or inside / area < min_inside:
            continue
        cx, cy = ((ca + cc) / 2 - x0) / tw, ((cb + cd) / 2 - y0) / th
        lines.append(f"{c} {cx:.6f} {cy:.6f} {(cc - ca) / tw:.6f} {(cd - cb) / th:.6f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    import cv2

    p = argparse.ArgumentParser(prog="python -m training.tiles", description=__doc__)
    p.add_argument("images", type=Path, help="folder of large images")
    p.add_argument("labels", type=Path, help="folder of YOLO label files with the same stems")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--overlap", type=float, default=0.15)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--min-inside", type=float, default=0.6)
    p.add_argument("--only", default="", help="comma-separated stem prefixes to take (default: all)")
    p.add_argument("--skip", default="", help="comma-separated stem prefixes to leave out")
    a = p.parse_args(list(argv) if argv is not None else None)
    only = tuple(filter(None, a.only.split(",")))
    skip = tuple(filter(None, a.skip.split(",")))
    files = sorted(f for f in a.images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    files = [
        f for f in files if (not only or f.stem.startswith(only)) and not (skip and f.stem.startswith(skip))
    ]
    if not files:
        print(f"python -m training.tiles: no images selected in {a.images}", file=sys.stderr)
        return 1
    (a.out / "images").mkdir(parents=True, exist_ok=True)
    (a.out / "labels").mkdir(parents=True, exist_ok=True)
    n = 0
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise TrainingError(f"{f}: not a readable image")
        h, w = img.shape[:2]
        cls, xyxy = read_yolo(a.labels / f"{f.stem}.txt", (w, h))
        if a.scale != 1.0:
            img = cv2.resize(img, (round(w * a.scale), round(h * a.scale)), interpolation=cv2.INTER_AREA)
            xyxy = xyxy * a.scale
            h, w = img.shape[:2]
        for y in tile_origins(h, a.size, a.overlap):
            for x in tile_origins(w, a.size, a.overlap):
                tile = (x, y, min(w, x + a.size), min(h, y + a.size))
                stem = f"{f.stem}_{x}_{y}"
                cv2.imwrite(str(a.out / "images" / f"{stem}.jpg"), img[tile[1] : tile[3], tile[0] : tile[2]])
                lines = boxes_in_tile(cls, xyxy, tile, a.min_inside)
                (a.out / "labels" / f"{stem}.txt").write_text("".join(f"{x}\n" for x in lines))
                n += 1
    print(f"{len(files)} images -> {n} tiles in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
