"""What the tile pass (``tiles:``) and the zoomed pass (``zoom_imgsz:``) of a model section cost and find.

    python bench/tiling.py [--model yolov8n-coco] [--grids 1,2,3] [--zooms 960] [--frames 24] [--batch 8]
    python bench/tiling.py --quick   # 8 frames per row

Per grid (1 = the whole frame only, the baseline) and per zoom_imgsz (rows with ``zoom_imgsz``: the whole
frame at the model's size plus once more at that size; detector/inference/tiling.py), in one process:
``ms_per_frame`` for a 1920x1080 camera frame (the bundled street scene scaled up) in batches of
``--batch``, its ratio to the baseline, and the vehicles found at >= 0.5 on the real stills of
``tests/realworld/images`` (``vehicles_ge_0_5``). Prints one JSON object; the CPU model is in ``cpu``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common
import cv2
import numpy as np

from detector.config.model import ModelConfig
from detector.inference.base import InferenceBackend
from detector.inference.model import load_model

STILLS = _common.REPO / "tests" / "realworld" / "images"
VEHICLE_CLASSES = {"car", "truck", "bus", "motorcycle", "vehicle"}


def camera_frame() -> np.ndarray:
    """A 1080p frame: the first frame of the bundled street clip, scaled up."""
    clip = _common.REPO / "tests" / "realworld" / "videos" / "street_curbside_parked_cars_fixedcam.mp4"
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read a frame of {clip}")
    return cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR)


def vehicles(backend: InferenceBackend, stills: list[Path]) -> dict[str, int]:
    out = {}
    for path in stills:
        dets = backend.infer([_common.read_image(path)])[0]
        names = [str(n) for n in dets.class_name]
        out[path.name] = int(
            sum(1 for n, s in zip(names, dets.confidence, strict=True) if n in VEHICLE_CLASSES and s >= 0.5)
        )
    return out


def timing(backend: InferenceBackend, frame: np.ndarray, frames: int, batch: int) -> float:
    backend.infer([frame] * batch)  # warm-up
    start = time.perf_counter()
    done = 0
    while done < frames:
        backend.infer([frame] * batch)
        done += batch
    return 1000.0 * (time.perf_counter() - start) / done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="yolov8n-coco")
    p.add_argument("--grids", default="1,2,3")
    p.add_argument("--zooms", default="960", help="zoom_imgsz values to measure (whole frame + a pass at N)")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="a short run: --frames 8")
    args = p.parse_args(argv)
    if args.quick:
        args.frames = min(args.frames, 8)
    grids = [int(g) for g in args.grids.split(",")]
    stills = sorted(STILLS.glob("*.jpg"))
    frame = camera_frame()
    rows: list[dict[str, Any]] = []
    for grid in grids:
        _common.log(f"grid {grid}: timing {args.frames} 1080p frames")
        loaded = load_model(ModelConfig(name=args.model, tiles=grid, conf=0.25, batch=args.batch))
        ms = timing(loaded.backend, frame, args.frames, args.batch)
        found = vehicles(loaded.backend, stills)
        loaded.backend.close()
        rows.append({"grid": grid, "ms_per_frame": round(ms, 1), "vehicles_ge_0_5": found})
    for zoom in [int(z) for z in args.zooms.split(",") if z.strip()]:
        _common.log(f"zoom_imgsz {zoom}: timing {args.frames} 1080p frames")
        loaded = load_model(ModelConfig(name=args.model, zoom_imgsz=zoom, conf=0.25, batch=args.batch))
        ms = timing(loaded.backend, frame, args.frames, args.batch)
        found = vehicles(loaded.backend, stills)
        loaded.backend.close()
        rows.append({"grid": 1, "zoom_imgsz": zoom, "ms_per_frame": round(ms, 1), "vehicles_ge_0_5": found})
    base = rows[0]["ms_per_frame"] if rows and rows[0]["grid"] == 1 else None
    for row in rows:
        row["ratio"] = round(row["ms_per_frame"] / base, 2) if base else None
    _common.emit({"model": args.model, "cpu": _common.cpu_model(), "frame": "1920x1080", "grids": rows})


if __name__ == "__main__":
    main()
