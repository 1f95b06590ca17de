"""Vehicle recall and invented objects on real labelled images (e.g. nadir aerial tiles).

For every image of a YOLO folder (``images/*.jpg`` + ``labels/*.txt``, class 0 = vehicle) each model
is run once; a labelled vehicle is found when a detection with the rule label ``vehicle`` overlaps it
with IoU >= ``--iou``. ``invented`` counts what a case could be opened on although nothing of the
kind is there: detections of stall / litter / structure (rule labels vendor / litter / structure) at
or above ``--min-score`` (the rules' default threshold) — the real images hold none of those — and
vehicle detections that match no labelled vehicle. Prints one JSON object per model.

    .venv/bin/python bench/real_labels.py datasets/real-aerial-test --model citywatch-synth@1.1.0 \
        --model citywatch-synth@1.2.0 --model yolov8n-coco
    .venv/bin/python bench/real_labels.py --quick   # the default model on 8 bundled real tiles

The full set is not in the repository (real photos under their own licences): without it a full run
says what to fetch and exits 2. The README's figures came from ``jekhor/aerial-cars-dataset`` (Minsk
drone photos, KIT AIS Munich strips), the held-out sites ``MunichStreet02`` and ``DJI_0762`` cut into
640 px tiles with ``python -m training.tiles``. ``--quick`` without a folder runs on 8 of those tiles
that are bundled in ``bench/data/real-aerial-quick`` (CC BY-SA, see its SOURCES.md), so a fresh clone
measures real imagery with nothing to fetch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _common
import _data
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config import ModelConfig
from detector.inference.model import load_model
from training.tiles import read_yolo

DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / "datasets" / "real-aerial-test"
QUICK_FOLDER = Path(__file__).resolve().parent / "data" / "real-aerial-quick"
FETCH = (
    "real labelled aerial images, which are not in the repository: fetch jekhor/aerial-cars-dataset "
    "(github.com/jekhor/aerial-cars-dataset), cut the held-out sites (--only MunichStreet02,DJI_0762) into "
    "640 px tiles with `python -m training.tiles IMAGES LABELS --out datasets/real-aerial-test`, "
    "or pass any YOLO folder (images/*.jpg, labels/*.txt, class 0 = vehicle)"
)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9))


def measure(
    folder: Path,
    ref: str | None,
    iou: float,
    min_score: float,
    vehicle_conf: float,
    limit: int | None = None,
    zoom_imgsz: int | None = None,
    zoom_model: str | None = None,
) -> dict[str, Any]:
    conf = min(min_score, vehicle_conf)
    path, name = (Path(ref), None) if ref is not None and Path(ref).exists() else (None, ref)
    # a weights file (.onnx, .pt, *_openvino_model) or a manifest name
    cfg = ModelConfig(name=name, path=path, conf=conf, zoom_imgsz=zoom_imgsz, zoom_model=zoom_model)
    model = load_model(cfg)
    labels = model.info.rule_labels
    names = model.info.class_names
    files = sorted((folder / "images").glob("*.jpg"))[:limit]
    found = total = false_vehicles = 0
    invented: dict[str, int] = {"vendor": 0, "litter": 0, "structure": 0}
    for f in files:
        img = _common.read_image(f)
        h, w = img.shape[:2]
        _, truth = read_yolo(folder / "labels" / f"{f.stem}.txt", (w, h))
        dets = model.backend.infer([img])[0]
        rule = np.array([labels.get(names[c], "") for c in dets.class_id.tolist()], dtype=object)
        veh = (rule == "vehicle") & (dets.confidence >= vehicle_conf)
        m = iou_matrix(truth, dets.xyxy[veh])
        total += len(truth)
        found += int((m >= iou).any(axis=1).sum()) if m.size else 0
        false_vehicles += int((~(m >= iou).any(axis=0)).sum()) if m.size else int(veh.sum())
        for label in invented:
            invented[label] += int(((rule == label) & (dets.confidence >= min_score)).sum())
    n = max(len(files), 1)
    return {
        "model": f"{model.info.name}@{model.info.version}",
        "images": len(files),
        "vehicles": total,
        "vehicle_recall": round(found / total, 3) if total else None,
        "false_vehicles_per_image": round(false_vehicles / n, 2),
        "invented_per_image": {k: round(v / n, 2) for k, v in invented.items()},
        "invented_total": sum(invented.values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "folder",
        type=Path,
        nargs="?",
        default=None,
        help="YOLO folder: images/*.jpg, labels/*.txt (every box a vehicle); default "
        "datasets/real-aerial-test,"
        " with --quick bench/data/real-aerial-quick when that is absent",
    )
    p.add_argument(
        "--model",
        action="append",
        help="manifest name[@version] or weights file; repeatable (default: the default)",
    )
    p.add_argument("--zoom-imgsz", type=int, default=None, help="also a whole-frame pass at this size")
    p.add_argument("--zoom-model", default=None, help="the zoomed pass's model (default: the model itself)")
    p.add_argument("--iou", type=float, default=0.3, help="IoU that counts a vehicle as found (0.3)")
    p.add_argument("--min-score", type=float, default=0.35, help="rule threshold for invented objects")
    p.add_argument("--vehicle-conf", type=float, default=0.25, help="vehicle detection threshold (0.25)")
    p.add_argument("--quick", action="store_true", help="a short run: the first 8 images")
    a = p.parse_args(argv)
    if a.folder is None:
        has_full = any((DEFAULT_FOLDER / "images").glob("*.jpg"))
        a.folder = QUICK_FOLDER if a.quick and not has_full else DEFAULT_FOLDER
    if not any((a.folder / "images").glob("*.jpg")):
        _data.needs("bench/real_labels.py", f"{a.folder} holds no images/*.jpg; it needs {FETCH}")
    limit = 8 if a.quick else None
    for ref in a.model or [None]:
        result = measure(a.folder, ref, a.iou, a.min_score, a.vehicle_conf, limit, a.zoom_imgsz, a.zoom_model)
        print(json.dumps({"folder": str(a.folder), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
