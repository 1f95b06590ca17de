"""Per-class score thresholds calibrated on a labelled validation split.

``python -m training.calibrate MODEL --data DATASET_YAML [--split val] [--recall 0.95] [--real DIR ...]``

For each class the threshold is the highest score that still keeps ``--recall`` of the split's labelled
objects (a labelled object counts as found at score s when a detection of its class with score >= s
overlaps it with IoU >= 0.5). With ``--real`` folders of real frames that hold none of a class (the real
negatives; every detection of stall / litter / structure there is invented), it also prints how many
invented detections each threshold leaves — the trade the rule's ``min_score`` makes. Prints JSON:
``{class: {"threshold", "recall_at", "invented_at": {folder: n}}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.errors import TrainingError


def threshold_for_recall(best_scores: Sequence[float], recall: float) -> float:
    """The highest threshold keeping ``recall`` of the objects, given each object's best matching score
    (0 when never found)."""
    if not best_scores:
        raise TrainingError("no labelled objects of this class in the split")
    s = np.sort(np.asarray(best_scores, np.float64))[::-1]
    k = max(1, int(np.ceil(recall * len(s))))
    return float(s[k - 1])


def main(argv: Sequence[str] | None = None) -> int:
    import cv2

    from detector.contracts.detections import box_iou
    from training.dataset import label_path, load_dataset
    from training.tiles import read_yolo

    p = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__)
    p.add_argument("model", help="a .pt file")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--recall", type=float, default=0.95)
    p.add_argument("--real", type=Path, nargs="*", default=[], help="folders of real negative frames")
    p.add_argument("--imgsz", type=int, default=640)
    a = p.parse_args(list(argv) if argv is not None else None)
    from training.runtime import yolo

    model = yolo(a.model)
    spec = load_dataset(a.data)
    best: dict[int, list[float]] = {i: [] for i in range(len(spec.names))}
    for img_path in spec.images(a.split):
        img = cv2.imread(str(img_path))
        if img is None:
            raise TrainingError(f"{img_path}: not a readable image")
        h, w = img.shape[:2]
        cls, truth = read_yolo(label_path(img_path), (w, h))
        r = model.predict(img, conf=0.05, imgsz=a.imgsz, verbose=False)[0]
        dc = r.boxes.cls.cpu().numpy().astype(int)
        ds = r.boxes.conf.cpu().numpy()
        dx = r.boxes.xyxy.cpu().numpy()
        for c, box in zip(cls.tolist(), truth, strict=True):
            same = dc == c
            iou = box_iou(box[None, :], dx[same])[0] if same.any() else np.zeros(0)
            best[c].append(float(ds[same][iou >= 0.5].max()) if (iou >= 0.5).any() else 0.0)
    out: dict[str, dict[str, object]] = {}
    for c, scores in best.items():
        name = spec.names[c]
        t = threshold_for_recall(scores, a.recall) if scores else None
        invented: dict[str, int] = {}
        for folder in a.real:
            n = 0
            for f in sorted(folder.rglob("*.jpg")):
                r = model.predict(str(f), conf=max(t or 0.05, 0.05), imgsz=a.imgsz, verbose=False)[0]
                n += int((r.boxes.cls.cpu().numpy().astype(int) == c).sum())
            invented[str(folder)] = n
        out[name] = {
            "threshold": None if t is None else round(t, 3),
            "objects": len(scores),
            "invented": invented,
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
