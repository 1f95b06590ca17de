"""Survey tiled inference on 4K frames: citywatch's SlicedDetector vs SAHI's get_sliced_prediction.

Both cut each 3840x2160 frame into 640 px tiles with 20 % overlap and merge with greedy NMM on IOS 0.5,
with the same model file, on the same frames, in the same run. citywatch batches the tiles of a frame
into few inference calls; SAHI (batch_size=1, its default) runs one call per tile. Prints one JSON
object: frames_per_min, sahi_frames_per_min, ratio (ours / SAHI), and what was measured.

    .venv/bin/python bench/survey.py [--model NAME|PATH] [--backend onnx|ultralytics] [--frames 4]
    .venv/bin/python bench/survey.py --quick   # 2 frames

The frames are rendered here (the synthetic survey flight), nothing needs preparing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.inference import load_backend
from detector.inference.ultralytics_backend import prepare_ultralytics_offline
from detector.survey.cli import resolve_model
from detector.survey.tiling import SlicedDetector, tile_grid


def frames_4k(n: int) -> list[np.ndarray]:
    """``n`` nadir 4K frames of the synthetic survey flight (24 mm equivalent at 100 m: GSD 3.9 cm)."""
    import av

    from training.synth.flight import CameraSpec, FlightScene, FlightSpec, render_flight

    with tempfile.TemporaryDirectory() as tmp:
        video = render_flight(
            FlightScene.generate(3), tmp, CameraSpec(3840, 2160, 13.2, 8.8), FlightSpec(), max_frames=n
        )
        with av.open(str(video)) as c:
            return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def source_pt(path: Path) -> Path:
    """The weights an export was made from: ``X_openvino_model`` / ``X_int8_openvino_model`` /
    ``X.onnx`` / ``X_int8.onnx`` -> ``X.pt``."""
    for tail in ("_int8_openvino_model", "_openvino_model", "_int8.onnx", ".onnx"):
        if path.name.endswith(tail):
            return path.with_name(path.name[: -len(tail)] + ".pt")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="manifest name or model file (default: the manifest's default)")
    p.add_argument("--backend", choices=["onnx", "ultralytics", "openvino"], help="citywatch's backend")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--conf", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch", type=int, default=8, help="tiles per inference call (citywatch)")
    p.add_argument("--quick", action="store_true", help="a short run: --frames 2")
    a = p.parse_args(argv)
    if a.quick:
        a.frames = min(a.frames, 2)
    spec, _ = resolve_model(a.model, a.backend, a.conf, 640, 0.2, a.threads, None)
    frames = frames_4k(a.frames)
    tiles = len(tile_grid(3840, 2160, 640, 0.2))

    backend = load_backend(spec.backend, spec.path, spec.class_names, spec.imgsz, a.conf, 0.5, a.threads)
    ours = SlicedDetector(backend, 640, 0.2, batch=a.batch)
    ours(frames[0])  # warm-up
    t0 = time.perf_counter()
    found = [len(ours(f)) for f in frames]
    ours_s = time.perf_counter() - t0

    prepare_ultralytics_offline()
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    pt = source_pt(Path(spec.path))  # SAHI's ultralytics model loads the .pt the export came from
    if not pt.is_file():  # ultralytics would try to download a missing file by its name
        raise SystemExit(f"bench/survey.py: SAHI needs the .pt of {spec.path}, and {pt} does not exist")
    sahi_model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics",
        model_path=str(pt),
        confidence_threshold=a.conf,
        device="cpu",
        image_size=backend.imgsz,
    )
    rgb = [np.ascontiguousarray(f[..., ::-1]) for f in frames]  # SAHI takes RGB arrays
    kw: dict[str, Any] = dict(
        slice_height=640,
        slice_width=640,
        overlap_height_ratio=0.2,
        overlap_width_ratio=0.2,
        perform_standard_pred=False,
        postprocess_type="GREEDYNMM",
        postprocess_match_metric="IOS",
        postprocess_match_threshold=0.5,
        verbose=0,
    )
    get_sliced_prediction(rgb[0], sahi_model, **kw)  # warm-up
    t0 = time.perf_counter()
    sahi_found = [len(get_sliced_prediction(f, sahi_model, **kw).object_prediction_list) for f in rgb]
    sahi_s = time.perf_counter() - t0

    fpm, sahi_fpm = 60.0 * len(frames) / ours_s, 60.0 * len(frames) / sahi_s
    print(
        json.dumps(
            {
                "frames": len(frames),
                "frame_size": "3840x2160",
                "tiles_per_frame": tiles,
                "tile": 640,
                "overlap": 0.2,
                "model": spec.name,
                "model_path": str(spec.path),
                "imgsz": backend.imgsz,
                "backend": spec.backend,
                "batch": a.batch,
                "threads": a.threads,
                "frames_per_min": round(fpm, 2),
                "sahi_frames_per_min": round(sahi_fpm, 2),
                "ratio": round(fpm / sahi_fpm, 2),
                "detections": sum(found),
                "sahi_detections": sum(sahi_found),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
