"""Inference throughput and accuracy of each backend against the naive baseline, in one process.

    python bench/inference.py [--images 400] [--timed 200] [--batch 8] [--threads 2] [--model X.pt --imgsz N]
    python bench/inference.py --quick   # 32 frames, one round, only the exports the manifest lists

Baseline: ``YOLO(pt).predict(frame)`` one frame at a time, ultralytics defaults (the way most code calls
it). Candidates: the detector's backends (``detector.inference``) on the same frames in batches of
``--batch`` (the inference service's batch), ``--threads`` threads: ultralytics (PyTorch), ONNX Runtime
fp32 and INT8, OpenVINO fp32 and INT8. INT8 models are calibrated on our own training split (never the
ultralytics default dataset); exports listed in the manifest are used, missing ones are made under
``var/bench/exports``.

Frames: the held-out synthetic test split (street and drone views; the frames it needs are rendered once
into ``var/bench/data``, the same files ``make dataset`` writes, see ``bench/_data.py``; so is the INT8
calibration sample when an INT8 export has to be made). fps is timed at the deployed
confidence (0.25) on ``--timed`` frames in ``--rounds`` rounds (the baseline, then every candidate, in
turn; each model's best round counts, so a busy spell on a shared box hits all of them alike); mAP50
(COCO 101-point, IoU 0.5, mean over classes) at conf 0.001
on ``--images`` frames, every model scored by the same code. Prints one JSON object: ``naive_fps``,
``naive_map50`` and, for the fastest candidate within 1.0 mAP50 point of the PyTorch model (``backend``),
``fps``, ``speedup``, ``map50`` and ``map50_drop`` (points below the PyTorch model); every candidate
under ``backends``; ``deployed`` names the manifest's backend and precision.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common
import _data
import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections
from detector.inference import load_backend

Image = npt.NDArray[np.uint8]
Pred = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]


# ------------------------------------------------------------------------------------------ data
def load_split(n: int) -> tuple[list[Image], list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]]:
    """Test images (street and drone interleaved) and their boxes in pixels."""
    from training.dataset import label_path, load_dataset

    spec = load_dataset(_data.test_split(n))
    files = [spec.images(k) for k in ("test_street", "test_drone")]
    mixed = [f for pair in zip(*files, strict=False) for f in pair][:n]
    images, truths = [], []
    for f in mixed:
        img = _common.read_image(f)
        h, w = img.shape[:2]
        rows = np.loadtxt(label_path(f), ndmin=2) if label_path(f).is_file() else np.zeros((0, 5))
        rows = rows.reshape(-1, 5)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        images.append(img)
        truths.append((boxes, rows[:, 0].astype(np.int64)))
    return images, truths


# ------------------------------------------------------------------------------------------ mAP
def _iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9), np.float32)


def map50(
    preds: Sequence[Pred], truths: Sequence[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]
) -> float:
    """COCO-style AP at IoU 0.5 (101-point interpolation), averaged over the classes that have labels."""
    classes = sorted({int(c) for _, cls in truths for c in cls})
    aps = []
    for c in classes:
        scored: list[tuple[float, bool]] = []
        n_gt = 0
        for (pb, ps, pc), (tb, tc) in zip(preds, truths, strict=True):
            gt = tb[tc == c]
            n_gt += len(gt)
            mine = pc == c
            boxes, scores = pb[mine], ps[mine]
            order = np.argsort(-scores, kind="stable")
            used = np.zeros(len(gt), bool)
            ious = _iou(boxes[order], gt) if len(gt) and len(boxes) else np.zeros((len(boxes), 0), np.float32)
            for k, idx in enumerate(order):
                hit = False
                if ious.shape[1]:
                    cand = np.where(~used & (ious[k] >= 0.5), ious[k], -1.0)
                    j = int(np.argmax(cand))
                    if cand[j] >= 0.5:
                        used[j] = hit = True
                scored.append((float(scores[idx]), hit))
        if n_gt == 0:
            continue
        scored.sort(key=lambda t: -t[0])
        tp = np.cumsum([h for _, h in scored], dtype=np.float64)
        fp = np.cumsum([not h for _, h in scored], dtype=np.float64)
        recall = tp / n_gt if len(scored) else np.zeros(0)
        precision = tp / np.maximum(tp + fp, 1e-9) if len(scored) else np.zeros(0)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.flip(np.maximum.accumulate(np.flip(np.concatenate([[1.0], precision, [0.0]]))))
        x = np.linspace(0, 1, 101)
        aps.append(float(np.trapezoid(np.interp(x, mrec, mpre), x)))
    return float(np.mean(aps)) if aps else 0.0


def as_pred(d: Detections) -> Pred:
    return d.xyxy.astype(np.float32), d.confidence.astype(np.float32), d.class_id.astype(np.int64)


# ------------------------------------------------------------------------------------------ runs
REPEATS = 1  # timing passes per call; main() times every model in several rounds and keeps the best


def timed(run: Callable[[list[Image]], Any], images: list[Image], batch: int) -> float:
    """Frames per second of ``run`` over ``images`` in chunks of ``batch``: the best of ``REPEATS`` passes
    after a short warm-up."""
    run(images[:batch])
    best = 0.0
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for k in range(0, len(images), batch):
            run(images[k : k + batch])
        best = max(best, len(images) / (time.perf_counter() - t0))
    return best


def naive(pt: Path, imgsz: int, images: list[Image], timed_n: int) -> tuple[Callable[[], float], list[Pred]]:
    from detector.inference.ultralytics_backend import prepare_ultralytics_offline

    prepare_ultralytics_offline()
    from ultralytics.models import YOLO

    model = YOLO(str(pt), task="detect")

    def predict(imgs: list[Image], conf: float = 0.25) -> list[Any]:
        return [next(iter(model.predict(img, imgsz=imgsz, conf=conf, verbose=False))) for img in imgs]

    preds = [as_pred(Detections.from_ultralytics(r)) for img in images for r in predict([img], 0.001)]
    return lambda: timed(predict, images[:timed_n], 1), preds


def _timer(backend: Any, images: list[Image], batch: int) -> Callable[[], float]:
    return lambda: timed(backend.infer, images, batch)


def candidates(
    m: _common.ModelUnderTest, make_missing: bool, wanted: set[str] | None
) -> dict[str, tuple[str, Path]]:
    """name -> (backend kind, path): the .pt, and each export (from the manifest, else made here)."""
    out: dict[str, tuple[str, Path]] = {"ultralytics_fp32": ("ultralytics", m.pt)}
    from training.dataset import load_dataset
    from training.export import artifact_name, export_key, export_model

    stem = f"{m.name}-{m.version}"
    for fmt in ("onnx", "openvino"):
        for int8 in (False, True):
            key = export_key(fmt, int8)
            name = f"{fmt}_{'int8' if int8 else 'fp32'}"
            if wanted is not None and name not in wanted:
                continue
            path = m.exports.get(key)
            if path is None or not path.exists():
                path = _common.VAR / "exports" / f"{m.imgsz}-dynamic" / artifact_name(stem, fmt, int8)
                if not path.exists():
                    if not make_missing:
                        continue
                    _common.log(f"exporting {key} of {m.pt} at {m.imgsz} px ...")
                    calib = load_dataset(_data.calibration_split()) if int8 else None
                    export_model(  # as `citywatch export` makes them: any input height and width
                        m.pt,
                        fmt,
                        imgsz=m.imgsz,
                        dest_dir=path.parent,
                        stem=stem,
                        int8=int8,
                        calib=calib,
                        dynamic=True,
                    )
            out[name] = (fmt, path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400, help="frames scored for mAP50")
    p.add_argument("--timed", type=int, default=200, help="frames timed for fps")
    p.add_argument("--batch", type=int, default=8, help="frames per call (the inference service's batch)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--model", help="a .pt instead of the manifest default (with --imgsz)")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--only", default=None, help="comma-separated candidates, e.g. onnx_int8,openvino_int8")
    p.add_argument("--no-export", action="store_true", help="skip candidates whose export is missing")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (best per model counts)")
    p.add_argument(
        "--quick", action="store_true", help="a short run: --images 32 --timed 32 --rounds 1 --no-export"
    )
    a = p.parse_args(argv)
    if a.quick:
        a.images, a.timed, a.rounds, a.no_export = min(a.images, 32), min(a.timed, 32), 1, True
    m = _common.default_model(a.model, a.imgsz)
    images, truths = load_split(a.images)
    _common.log(f"{m.name}@{m.version} at {m.imgsz} px: {len(images)} frames, {a.threads} threads")
    import torch

    torch.set_num_threads(a.threads)
    time_naive, naive_preds = naive(m.pt, m.imgsz, images, a.timed)
    naive_map = map50(naive_preds, truths)
    results: dict[str, dict[str, Any]] = {}
    wanted = set(a.only.split(",")) if a.only else None
    timers: dict[str, Callable[[], float]] = {}
    for name, (kind, path) in candidates(m, not a.no_export, wanted).items():
        scorer = load_backend(kind, path, m.classes, m.imgsz, 0.001, 0.5, a.threads)
        preds = [
            as_pred(d) for k in range(0, len(images), a.batch) for d in scorer.infer(images[k : k + a.batch])
        ]
        scorer.close()
        score = map50(preds, truths)
        fast = load_backend(kind, path, m.classes, m.imgsz, 0.25, 0.5, a.threads)
        timers[name] = _timer(fast, images[: a.timed], a.batch)
        results[name] = {
            "fps": 0.0,
            "map50": round(score, 4),
            "map50_drop": round((naive_map - score) * 100, 2),
            "path": str(path.relative_to(_common.REPO) if path.is_relative_to(_common.REPO) else path),
        }
    # timing in rounds, the baseline and every candidate in turn, so a busy spell on a shared box hits all
    naive_fps = 0.0
    for rnd in range(a.rounds):
        naive_fps = max(naive_fps, time_naive())
        for name, timer in timers.items():
            results[name]["fps"] = round(max(results[name]["fps"], timer()), 1)
        _common.log(f"round {rnd + 1}: naive {naive_fps:.1f} fps, " + ", ".join(
            f"{k} {r['fps']}" for k, r in results.items()))  # fmt: skip
    for r in results.values():
        r["speedup"] = round(r["fps"] / naive_fps, 2)
    deployed = f"{m.backend}_{m.precision}"
    # the headline: the fastest candidate that keeps mAP50 within 1 point of the PyTorch model
    within = {k: r for k, r in results.items() if r["map50_drop"] <= 1.0} or results
    best = max(within, key=lambda k: within[k]["fps"])
    chosen = results[best]
    _common.emit(
        {
            "model": f"{m.name}@{m.version}",
            "imgsz": m.imgsz,
            "images": len(images),
            "timed": min(a.timed, len(images)),
            "threads": a.threads,
            "batch": a.batch,
            "backend": best,
            "deployed": deployed,
            "naive_fps": round(naive_fps, 1),
            "naive_map50": round(naive_map, 4),
            "fps": chosen["fps"],
            "speedup": chosen["speedup"],
            "map50": chosen["map50"],
            "map50_drop": chosen["map50_drop"],
            "backends": results,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
