"""What the tile pass (``tiles:``) and the zoomed pass (``zoom_imgsz:``) of a model section cost and find.

    python bench/tiling.py [--model yolov8n-coco] [--grids 1,2,3] [--zooms 960] [--zoom-model NAME]
                           [--frames 24] [--batch 8] [--every 2]
    python bench/tiling.py --quick   # 8 frames per row

Per grid (1 = the whole frame only, the baseline) and per zoom_imgsz (rows with ``zoom_imgsz``: the whole
frame at the model's size plus once more at that size; detector/inference/tiling.py), in one process:
``ms_per_frame`` for a 1920x1080 camera frame (the bundled street scene scaled up) in batches of
``--batch``, its ratio to the baseline, and the vehicles found at >= 0.5 on the real stills of
``tests/realworld/images`` (``vehicles_ge_0_5``). The zoomed pass runs only on a frame where the native
pass has an unsure box (detector/inference/zoom.py), so the 1080p frame is its worst case; ``clips`` says
what it costs on real and synthetic video: per clip (the real street clip and the bundled scenarios,
sampled every ``--every`` s and sent one at a time like a stream's, so the zoomed pass runs at most every
``zoom_every_s`` (10 s) and its memory serves the samples between), the share of samples the zoomed pass
ran on (``zoomed_share``) and ms per sample against the plain model on the same samples (``ratio``).
Prints one JSON object; the CPU model is in ``cpu``.
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
from detector.inference.zoom import ZoomBackend

STILLS = _common.REPO / "tests" / "realworld" / "images"
CLIPS = [
    _common.REPO / "tests" / "realworld" / "videos" / "street_curbside_parked_cars_fixedcam.mp4",
    *sorted((_common.REPO / "training" / "synth" / "scenarios").glob("*.mp4")),
]
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


def samples(clip: Path, every_s: float) -> list[np.ndarray]:
    """The frames of ``clip`` a stream sampling every ``every_s`` seconds would see."""
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, round(every_s * fps))
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(frame)
        i += 1
    cap.release()
    return out


def clip_cost(
    plain: InferenceBackend, zoomed: ZoomBackend, frames: list[np.ndarray], name: str, every_s: float
) -> dict[str, Any]:
    """``zoomed_share`` and ms per sample of ``zoomed`` vs ``plain`` on ``frames``, one sample at a time as
    a stream sends them (``infer_streams``: the zoomed pass's memory at work)."""
    plain.infer(frames[:1])
    zoomed.infer(frames[:1])
    frames0, zoomed0 = zoomed.frames, zoomed.zoomed_frames
    ms = []
    for backend in (plain, zoomed):
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            backend.infer_streams([frame], [(name, i * every_s)])
        ms.append(1000.0 * (time.perf_counter() - start) / len(frames))
    seen = zoomed.frames - frames0
    return {
        "samples": len(frames),
        "zoomed_share": round((zoomed.zoomed_frames - zoomed0) / seen, 3) if seen else None,
        "ms_plain": round(ms[0], 1),
        "ms_zoom": round(ms[1], 1),
        "ratio": round(ms[1] / ms[0], 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="yolov8n-coco")
    p.add_argument("--grids", default="1,2,3")
    p.add_argument("--zooms", default="960", help="zoom_imgsz values to measure (whole frame + a pass at N)")
    p.add_argument("--zoom-model", default=None, help="zoom_model of the zoom rows (default: the same model)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between the clip samples (clips)")
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
    clips: list[dict[str, Any]] = []
    clip_frames = {clip.name: samples(clip, args.every) for clip in CLIPS[: 1 if args.quick else None]}
    plain = load_model(ModelConfig(name=args.model, conf=0.25, batch=args.batch)).backend
    for zoom in [int(z) for z in args.zooms.split(",") if z.strip()]:
        _common.log(f"zoom_imgsz {zoom}: timing {args.frames} 1080p frames")
        cfg = ModelConfig(
            name=args.model, zoom_imgsz=zoom, zoom_model=args.zoom_model, conf=0.25, batch=args.batch
        )
        loaded = load_model(cfg)
        if not isinstance(loaded.backend, ZoomBackend):  # not reached: zoom_imgsz makes one
            raise SystemExit(f"{args.model} with zoom_imgsz {zoom} loaded without its zoomed pass")
        ms = timing(loaded.backend, frame, args.frames, args.batch)
        found = vehicles(loaded.backend, stills)
        row = {"grid": 1, "zoom_imgsz": zoom, "zoom_model": args.zoom_model}
        rows.append(row | {"ms_per_frame": round(ms, 1), "vehicles_ge_0_5": found})
        for name, frames in clip_frames.items():
            _common.log(f"zoom_imgsz {zoom}: {len(frames)} samples of {name}")
            clips.append(
                {"clip": name, "zoom_imgsz": zoom}
                | clip_cost(plain, loaded.backend, frames, name, args.every)
            )
        loaded.backend.close()
    plain.close()
    base = rows[0]["ms_per_frame"] if rows and rows[0]["grid"] == 1 else None
    for row in rows:
        row["ratio"] = round(row["ms_per_frame"] / base, 2) if base else None
    _common.emit(
        {"model": args.model, "cpu": _common.cpu_model(), "frame": "1920x1080", "grids": rows, "clips": clips}
    )


if __name__ == "__main__":
    main()
