"""The tile pass (detector/inference/tiling.py): windows, cut boxes, merging, the wrapping backend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from detector.config.model import ModelConfig
from detector.contracts.detections import Detections
from detector.inference.base import Image, InferenceBackend
from detector.inference.tiling import TiledBackend, cut_by_tile, merge_passes, tile_windows

NAMES = ["car", "truck", "person"]
VEHICLE = {0: 0, 1: 0}  # car and truck are one group


def dets(rows: Sequence[tuple[float, float, float, float, float, int]]) -> Detections:
    if not rows:
        return Detections.empty()
    arr = np.asarray(rows, np.float32)
    return Detections.from_arrays(arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64), NAMES)


@pytest.mark.parametrize(
    ("height", "width", "grid", "overlap", "expected"),
    [
        (100, 200, 1, 0.2, [(0, 0, 200, 100)]),
        (100, 100, 2, 0.0, [(0, 0, 50, 50), (50, 0, 100, 50), (0, 50, 50, 100), (50, 50, 100, 100)]),
        (
            1080,
            1920,
            2,
            0.2,
            [(0, 0, 1067, 600), (853, 0, 1920, 600), (0, 480, 1067, 1080), (853, 480, 1920, 1080)],
        ),
    ],
)
def test_tile_windows(
    height: int, width: int, grid: int, overlap: float, expected: list[tuple[int, ...]]
) -> None:
    assert tile_windows(height, width, grid, overlap) == expected


@pytest.mark.parametrize("grid", [2, 3, 4])
def test_tiles_cover_the_frame_and_overlap(grid: int) -> None:
    wins = tile_windows(1080, 1920, grid, 0.2)
    covered = np.zeros((1080, 1920), bool)
    for x1, y1, x2, y2 in wins:
        covered[y1:y2, x1:x2] = True
        assert x2 <= 1920 and y2 <= 1080
    assert covered.all() and len(wins) == grid * grid


@pytest.mark.parametrize(("grid", "overlap"), [(0, 0.2), (2, 1.0), (2, -0.1)])
def test_bad_grids_are_refused(grid: int, overlap: float) -> None:
    with pytest.raises(ValueError, match="grid"):
        tile_windows(100, 100, grid, overlap)


@pytest.mark.parametrize(
    ("box", "cut"),
    [
        ((10, 10, 40, 40), False),  # inside the top-left tile
        ((10, 10, 59, 40), True),  # touches the tile's right edge (inside the frame)
        ((0, 0, 30, 30), False),  # touches the frame's own edges: not cut
        ((10, 10, 40, 59), True),  # touches the tile's bottom edge
    ],
)
def test_cut_by_tile(box: tuple[float, float, float, float], cut: bool) -> None:
    mask = cut_by_tile(np.asarray([box], np.float32), (0, 0, 60, 60), 100, 100)
    assert bool(mask[0]) is cut


@pytest.mark.parametrize(
    ("full", "tile", "expected"),
    [
        # the same car in both passes: one detection, the whole-frame box, the higher (tile) score
        ([(100, 100, 140, 130, 0.40, 0)], [(100, 100, 140, 130, 0.70, 0)], [(100, 100, 140, 130, 0.70, 0)]),
        # car in the frame pass, truck in the tile pass: one vehicle group, one detection
        ([(100, 100, 140, 130, 0.60, 0)], [(101, 100, 140, 131, 0.55, 1)], [(100, 100, 140, 130, 0.60, 0)]),
        # a person where the tile sees a car: different groups, both stay
        (
            [(100, 100, 140, 130, 0.60, 2)],
            [(100, 100, 140, 130, 0.55, 0)],
            [(100, 100, 140, 130, 0.60, 2), (100, 100, 140, 130, 0.55, 0)],
        ),
        # a small car only the tile pass finds
        ([], [(300, 300, 320, 312, 0.52, 0)], [(300, 300, 320, 312, 0.52, 0)]),
        # a box cut by the tile's inner edge (x2 = 500) is dropped
        ([], [(480, 100, 500, 120, 0.9, 0)], []),
        # two neighbouring cars, one of them inside the other's larger box: IoU < 0.5, both stay
        (
            [(100, 100, 200, 160, 0.50, 0)],
            [(150, 120, 180, 140, 0.60, 0)],
            [(150, 120, 180, 140, 0.60, 0), (100, 100, 200, 160, 0.50, 0)],
        ),
    ],
)
def test_merge_passes(
    full: list[tuple[float, ...]], tile: list[tuple[float, ...]], expected: list[tuple[float, ...]]
) -> None:
    out = merge_passes(dets(full), [(dets(tile), (0, 0, 500, 500))], 1000, 1000, VEHICLE)
    got = [
        (*(round(float(v)) for v in box), round(float(s), 2), int(c))
        for box, s, c in zip(out.xyxy, out.confidence, out.class_id, strict=True)
    ]
    assert got == [(*e[:4], e[4], e[5]) for e in expected]


def test_tile_boxes_move_into_frame_pixels() -> None:
    out = merge_passes(
        Detections.empty(), [(dets([(10, 20, 30, 40, 0.8, 0)]), (500, 400, 1000, 800))], 800, 1000, VEHICLE
    )
    assert out.xyxy.tolist() == [[510.0, 420.0, 530.0, 440.0]]


class FakeBackend(InferenceBackend):
    """Finds one car in the middle of every image it is given; records the image shapes."""

    name = "onnx"

    def __init__(self) -> None:
        self.class_names, self.imgsz, self.conf, self.iou = list(NAMES), 640, 0.25, 0.5
        self.calls: list[list[tuple[int, ...]]] = []

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        self.calls.append([img.shape for img in images])
        out = []
        for img in images:
            h, w = img.shape[:2]
            out.append(dets([(w * 0.45, h * 0.45, w * 0.55, h * 0.55, 0.6, 0)]))
        return out


def test_tiled_backend_batches_frames_and_tiles_in_one_call() -> None:
    inner = FakeBackend()
    tiled = TiledBackend(inner, 2)
    big, small = np.zeros((1080, 1920, 3), np.uint8), np.zeros((360, 640, 3), np.uint8)
    out = tiled.infer([big, small])
    assert len(inner.calls) == 1
    # the 1080p frame is sliced into 4 tiles; the 640x360 frame (under 1.25 x 640) is not
    assert inner.calls[0][:2] == [(1080, 1920, 3), (360, 640, 3)] and len(inner.calls[0]) == 6
    assert len(out) == 2 and len(out[1]) == 1
    # the frame's own centre car plus each tile's centre car (none cut, none the same box)
    assert len(out[0]) == 5
    tiled.class_groups = ((0, 1),)
    assert inner.class_groups == ((0, 1),)


def test_model_config_tiles() -> None:
    assert ModelConfig().tiles == 1
    assert ModelConfig(tiles=2).tiles == 2
    with pytest.raises(ValueError, match="tiles"):
        ModelConfig(tiles=9)
