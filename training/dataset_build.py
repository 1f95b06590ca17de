"""`citywatch dataset build`: a training set from the bureau's frames, the desk's verdicts, synthetic scenes.

Inputs (any mix):

* **collections** (``--collection DIR``, repeatable): the detector's frames (``detector/collect``: a JPEG and
  a JSON sidecar per frame). A frame enters with the *labeller's* boxes when it was labelled (``labels``,
  from ``citywatch collect import``). A frame the desk judged but nobody labelled enters with the model's
  boxes at or above ``--pseudo-conf`` as the rest of the frame, corrected by the verdict as
  ``citywatch collect export`` corrects its pre-annotations (:func:`training.collection.frame_boxes`): a
  case *rejected as a false positive* loses its box (a hard negative: the model's mistake is now labelled
  as nothing), one rejected as out of scope or self-resolved keeps it (the object was there), a
  *corrected* case's box is replaced by the desk's box and class, a *confirmed* one stays. Frames that
  are neither labelled nor reviewed are left out (nobody has said what is in them).
* **synthetic scenes** (``--synth DATASET_YAML --synth-ratio R``): R synthetic images per real image, drawn
  from the synthetic train and val splits into ours (never into test).

Real frames are split by **camera and day**: every frame of one stream on one day goes to the same split, so
the same scene is never in train and test. Writes ``OUT/images/<split>``, ``OUT/labels/<split>`` (YOLO),
``OUT/dataset.yaml`` (with ``rule_labels``) and the dataset card ``OUT/CARD.md`` + ``OUT/card.json``
(sources, counts per class, split and camera, corrections and negatives, the data hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from detector.contracts.frames import CollectError, FrameRecord, read_record, sidecars
from detector.contracts.manifest import load_manifest
from training.collection import VerdictCounts, frame_boxes
from training.dataset import label_path, load_dataset
from training.errors import DatasetError
from training.labelio import Box

SPLITS = ("train", "val", "test")


@dataclass
class Item:
    """One image of the dataset to be."""

    source: str  # labelled | reviewed | synth
    image: Path
    width: int
    height: int
    boxes: list[Box]
    group: str  # camera/day for real frames; "synth" for synthetic ones
    stream: str | None = None
    split: str | None = None  # synthetic images keep the split they came from
    name: str = ""
    corrected: int = 0
    negatives: int = 0


@dataclass
class BuildResult:
    out: Path
    yaml_path: Path
    card: dict[str, Any]
    items: list[Item] = field(repr=False)


def record_boxes(record: FrameRecord, pseudo_conf: float) -> tuple[list[Box], VerdictCounts]:
    """Labels of a labelled frame; a reviewed one's predictions >= ``pseudo_conf``, verdict applied."""
    counts = VerdictCounts()
    boxes = frame_boxes(record, counts)
    return [b for b in boxes if b.score is None or b.score >= pseudo_conf], counts


def read_collection(folder: Path, pseudo_conf: float) -> tuple[list[Item], Counter[str]]:
    """The usable frames of a collection and the count of those left out, by reason."""
    if not folder.is_dir():
        raise DatasetError(f"collection {folder} is not a folder (the detector's collect.dir)")
    items: list[Item] = []
    left_out: Counter[str] = Counter()
    for sidecar in sidecars(folder):
        try:
            record = read_record(sidecar)
        except CollectError as err:
            raise DatasetError(str(err)) from err
        image = sidecar.with_suffix(".jpg")
        if not image.is_file():
            left_out["image missing"] += 1
            continue
        if record.labels is None and record.review is None:
            left_out["neither labelled nor reviewed"] += 1
            continue
        boxes, counts = record_boxes(record, pseudo_conf)
        if counts.unmatched:
            left_out["reviewed, the case's box not among the predictions (kept as predicted)"] += 1
        items.append(
            Item(
                source="labelled" if record.labels is not None else "reviewed",
                image=image,
                width=record.width,
                height=record.height,
                boxes=boxes,
                group=f"{record.stream}/{record.captured_at.astimezone(UTC).date().isoformat()}",
                stream=record.stream,
                name=record.id,
                corrected=counts.replaced,
                negatives=counts.removed,
            )
        )
    return items, left_out


def assign_splits(
    groups: Iterable[str], counts: dict[str, int], fractions: dict[str, float], seed: int
) -> dict[str, str]:
    """camera/day group -> split: whole groups, in an order fixed by ``seed``, filled test first, then val.

    Needs at least two groups (one for test, one for train); with fewer than three, val shares test's groups.
    """
    ordered = sorted(set(groups), key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    if len(ordered) < 2:
        raise DatasetError(
            f"the real frames come from {len(ordered)} camera-day(s) ({', '.join(ordered) or 'none'}): "
            "splitting by camera and day needs at least 2 (label frames of more cameras or days)"
        )
    total = sum(counts[g] for g in ordered)
    out: dict[str, str] = {}
    filled = {"test": 0, "val": 0}
    wanted = [
        s for s in ("test", "val") if fractions.get(s, 0.0) > 0 and len(ordered) >= (3 if s == "val" else 2)
    ]
    for g in ordered:
        target = next((s for s in wanted if filled[s] < fractions[s] * total), None)
        left = len(ordered) - len(out)
        if target is None or left <= 1:  # the last group always trains
            out[g] = "train"
            continue
        out[g] = target
        filled[target] += counts[g]
    if "test" not in out.values():  # tiny fractions: still hold one group out
        out[ordered[0]] = "test"
    return out


def _class_map(classes: list[str], rule_labels: dict[str, str]) -> dict[str, int]:
    """rule label (or class name) -> class id of the dataset."""
    out: dict[str, int] = {}
    for i, name in enumerate(classes):
        out.setdefault(rule_labels.get(name, name), i)
        out.setdefault(name, i)
    return out


def _yolo_lines(item: Item, ids: dict[str, int]) -> str:
    lines = []
    for b in item.boxes:
        x1, y1, x2, y2 = b.xyxy
        x1, x2 = sorted((max(0.0, min(x1, item.width)), max(0.0, min(x2, item.width))))
        y1, y2 = sorted((max(0.0, min(y1, item.height)), max(0.0, min(y2, item.height))))
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        cx, cy = (x1 + x2) / 2 / item.width, (y1 + y2) / 2 / item.height
        w, h = (x2 - x1) / item.width, (y2 - y1) / item.height
        lines.append(f"{ids[b.label]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(f"{line}\n" for line in lines)


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def synth_items(yaml_path: Path, wanted: dict[str, int], seed: int) -> list[Item]:
    """``wanted[split]`` images drawn (seeded) from the synthetic dataset's train / val splits."""
    spec = load_dataset(yaml_path)
    out: list[Item] = []
    rng = random.Random(seed)
    for split, n in wanted.items():
        if n <= 0 or not spec.has(split):
            continue
        pool = spec.images(split)
        for image in sorted(rng.sample(pool, min(n, len(pool)))):
            out.append(
                Item(
                    source="synth",
                    image=image,
                    width=0,
                    height=0,
                    boxes=[],
                    group="synth",
                    split=split,
                    name=f"synth-{image.stem}",
                )
            )
    return out


def build(
    out: Path,
    collections: Sequence[Path],
    *,
    synth: Path | None = None,
    synth_ratio: float = 0.0,
    fractions: dict[str, float] | None = None,
    pseudo_conf: float = 0.5,
    seed: int = 0,
    model: str | None = None,
    include_reviewed: bool = True,
) -> BuildResult:
    """Build the dataset in ``out`` (which must not exist or be empty); returns its card."""
    fractions = fractions or {"test": 0.2, "val": 0.1}
    if out.exists() and any(out.iterdir()):
        raise DatasetError(
            f"{out} exists and is not empty: choose a new folder (datasets are never overwritten)"
        )
    entry = load_manifest().get(model)
    classes, rule_labels = list(entry.classes), {k: str(v) for k, v in entry.rule_labels.items()}
    ids = _class_map(classes, rule_labels)
    items: list[Item] = []
    left_out: Counter[str] = Counter()
    for folder in collections:
        got, skipped = read_collection(folder, pseudo_conf)
        items += [i for i in got if include_reviewed or i.source != "reviewed"]
        left_out += skipped
    unknown = Counter(b.label for i in items for b in i.boxes if b.label not in ids)
    if unknown:
        raise DatasetError(
            f"labels the model {entry.ref} has no class for: {dict(unknown)} (its classes: {classes}); "
            "map them when importing (`citywatch collect import --class-map`)"
        )
    counts = Counter(i.group for i in items)
    groups = assign_splits(counts, dict(counts), fractions, seed)
    for i in items:
        i.split = groups[i.group]
    val_note = "own camera-days" if "val" in groups.values() else "val = test (fewer than 3 camera-days)"
    if synth is not None and synth_ratio > 0:
        real = Counter(i.split for i in items)
        items += synth_items(synth, {s: round(real.get(s, 0) * synth_ratio) for s in ("train", "val")}, seed)
    args = {
        "collections": [str(c) for c in collections],
        "synth": None if synth is None else str(synth),
        "synth_ratio": synth_ratio,
        "fractions": fractions,
        "pseudo_conf": pseudo_conf,
        "seed": seed,
        "model": entry.ref,
        "include_reviewed": include_reviewed,
    }
    return _write(out, items, classes, rule_labels, ids, left_out, val_note, args)


def _write(
    out: Path,
    items: list[Item],
    classes: list[str],
    rule_labels: dict[str, str],
    ids: dict[str, int],
    left_out: Counter[str],
    val_note: str,
    args: dict[str, Any],
) -> BuildResult:
    digest = hashlib.sha256()
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    per_camera: dict[str, Counter[str]] = defaultdict(Counter)
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    for item in sorted(items, key=lambda i: (i.split or "", i.name)):
        split = item.split or "train"
        img = out / "images" / split / f"{item.name}{item.image.suffix.lower()}"
        _place(item.image, img)
        lbl = out / "labels" / split / f"{item.name}.txt"
        lbl.parent.mkdir(parents=True, exist_ok=True)
        if item.source == "synth":
            src = label_path(item.image)
            text = src.read_text(encoding="utf-8") if src.is_file() else ""
        else:
            text = _yolo_lines(item, ids)
        lbl.write_text(text, encoding="utf-8")
        for line in text.splitlines():
            per_class[split][classes[int(line.split()[0])]] += 1
        per_source[split][item.source] += 1
        if item.stream is not None:
            per_camera[item.stream][split] += 1
        digest.update(f"{split}/{img.name}\0{hashlib.sha256(img.read_bytes()).hexdigest()}\0".encode())
        digest.update(f"{hashlib.sha256(text.encode()).hexdigest()}\n".encode())
    splits = {s: f"images/{s}" for s in SPLITS if (out / "images" / s).is_dir()}
    if "val" not in splits and "test" in splits:
        splits["val"] = splits["test"]
    data = {"path": ".", **splits, "names": dict(enumerate(classes)), "rule_labels": rule_labels}
    yaml_path = out / "dataset.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    card = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": digest.hexdigest(),
        "args": args,
        "classes": classes,
        "images": {s: sum(c.values()) for s, c in sorted(per_source.items())},
        "sources": {s: dict(c) for s, c in sorted(per_source.items())},
        "boxes_per_class": {s: dict(c) for s, c in sorted(per_class.items())},
        "per_camera": {cam: dict(c) for cam, c in sorted(per_camera.items())},
        "camera_days": {
            s: sorted({i.group for i in items if i.split == s and i.source != "synth"}) for s in SPLITS
        },
        "corrections": sum(i.corrected for i in items),
        "negatives": sum(i.negatives for i in items),
        "left_out": dict(left_out),
        "val": val_note,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "CARD.md").write_text(card_markdown(card), encoding="utf-8")
    return BuildResult(out=out, yaml_path=yaml_path, card=card, items=items)


def card_markdown(card: dict[str, Any]) -> str:
    """The dataset card for people: where every image came from and what is in each split."""
    lines = [
        f"# Dataset card — built {card['created']}",
        "",
        f"- sha256 (images + labels): `{card['sha256']}`",
        f"- classes: {', '.join(card['classes'])} (model {card['args']['model']})",
        f"- collections: {', '.join(card['args']['collections']) or '—'}",
        f"- synthetic: {card['args']['synth'] or '—'} (ratio {card['args']['synth_ratio']})",
        f"- desk corrections: {card['corrections']}; hard negatives (rejected cases): {card['negatives']}",
        f"- frames left out: {card['left_out'] or 'none'}; val: {card['val']}",
        "",
        "| split | images | by source | boxes per class | camera-days |",
        "|---|---:|---|---|---|",
    ]
    for s in SPLITS:
        if s not in card["images"]:
            continue
        lines.append(
            f"| {s} | {card['images'][s]} | {card['sources'].get(s, {})} | "
            f"{card['boxes_per_class'].get(s, {})} | {', '.join(card['camera_days'][s]) or '—'} |"
        )
    lines += ["", "| camera | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
    for cam, c in card["per_camera"].items():
        lines.append(f"| {cam} | " + " | ".join(str(c.get(s, 0)) for s in SPLITS) + " |")
    return "\n".join(lines) + "\n"
