"""Write a standard ultralytics YOLO dataset from the synthetic generator.

Seeds are disjoint per split (train / val / test) so held-out sets never share a scene with
training. The same seeds give byte-identical label files.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import yaml
from tqdm import tqdm

from .canvas import CLASS_ID, CLASSES, RULE_LABELS, U8
from .scenes import Label, drone_sample, street_sample

# Seed ranges per split; training never uses a seed from val or test.
SPLIT_SEED_BASE = {"train": 0, "val": 10_000_000, "test": 20_000_000}
VIEWS: dict[str, Callable[[int], tuple[U8, list[Label]]]] = {"street": street_sample, "drone": drone_sample}
# synth-v2, the set the default model was trained on (`make dataset`); the benches render parts of it
SYNTH_V2: dict[str, dict[str, int]] = {
    "train": {"street": 5000, "drone": 2000},
    "val": {"street": 100, "drone": 80},
    "test": {"street": 200, "drone": 200},
}


def yolo_lines(labels: list[Label], width: int, height: int) -> str:
    rows = []
    for cls, (x1, y1, x2, y2) in labels:
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        rows.append(f"{CLASS_ID[cls]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(rows) + ("\n" if rows else "")


def _write_one(args: tuple[str, str, int, str]) -> str:
    root, view, seed, split = args
    img, labels = VIEWS[view](seed)
    name = f"{view}_{seed:08d}"
    out = Path(root)
    cv2.imwrite(str(out / "images" / split / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    text = yolo_lines(labels, img.shape[1], img.shape[0])
    (out / "labels" / split / f"{name}.txt").write_text(text)
    return name


def split_seeds(split: str, view: str, n: int, seed_offset: int = 0) -> list[int]:
    """The seeds of a split's first ``n`` images of ``view``."""
    base = SPLIT_SEED_BASE[split] + seed_offset + (0 if view == "street" else 5_000_000)
    return [base + i for i in range(n)]


def build(root: Path, counts: dict[str, dict[str, int]], workers: int = 2, seed_offset: int = 0) -> Path:
    """``counts[split][view]`` images; returns the dataset yaml path."""
    seeds = {
        split: {view: split_seeds(split, view, n, seed_offset) for view, n in per_view.items()}
        for split, per_view in counts.items()
    }
    return build_seeds(root, seeds, workers)


def build_seeds(root: Path, seeds: dict[str, dict[str, list[int]]], workers: int = 2) -> Path:
    """The images of exactly ``seeds[split][view]`` (a part of a set: the same files the whole set has);
    returns the dataset yaml path."""
    jobs: list[tuple[str, str, int, str]] = []
    lists: dict[str, list[str]] = {}
    for split, per_view in seeds.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for view, view_seeds in per_view.items():
            jobs += [(str(root), view, seed, split) for seed in view_seeds]
            # "./" makes ultralytics resolve list entries against the list file's folder
            lists[f"{split}_{view}"] = [f"./images/{split}/{view}_{seed:08d}.jpg" for seed in view_seeds]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in tqdm(pool.map(_write_one, jobs, chunksize=8), total=len(jobs), desc="rendering", unit="img"):
            pass
    for key, files in lists.items():
        (root / f"{key}.txt").write_text("\n".join(files) + "\n")
    spec: dict[str, object] = {
        "path": str(root.resolve()),
        "names": dict(enumerate(CLASSES)),
        "rule_labels": dict(RULE_LABELS),
    }
    for split in seeds:
        spec[split] = f"images/{split}"
        for view in seeds[split]:
            spec[f"{split}_{view}"] = f"{split}_{view}.txt"
    path = root / "dataset.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def labels_hash(root: Path, split: str = "train") -> str:
    h = hashlib.sha256()
    for f in sorted((root / "labels" / split).glob("*.txt")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="citywatch synth dataset", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    # the defaults are synth-v2, the set the default model was trained on (make dataset)
    for split, views in SYNTH_V2.items():
        default = (views["street"], views["drone"])
        p.add_argument(f"--{split}", type=int, nargs=2, default=default, metavar=("STREET", "DRONE"))
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    counts = {
        s: {"street": v[0], "drone": v[1]} for s, v in (("train", a.train), ("val", a.val), ("test", a.test))
    }
    path = build(a.out, counts, a.workers)
    print(f"dataset written: {path} (train labels sha256 {labels_hash(a.out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
