"""YOLO detection datasets: ``images/`` + ``labels/`` (same relative paths, ``.txt``), class names in
``data.yaml`` (also written: ``classes.txt``).

A label line is ``class cx cy w h`` normalised to the image; a sixth number, where a tool wrote one, is
read as the score (we never write it: ultralytics refuses six-column detection labels). An empty label
file is an image labelled with nothing in it. An image without a label file is unlabelled and is not
imported (``missing_as_empty=True`` takes it as empty, ultralytics' background convention). The layout
CVAT's "YOLO 1.1" export uses (labels next to the images, names in ``obj.names``) reads too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from training.dataset import IMAGE_SUFFIXES, RULE_LABELS
from training.labelio.classmap import ClassMap
from training.labelio.images import ImageResolver, image_size, place_images
from training.labelio.model import LabelImportError, LabelledImage, check_names, clip_xyxy, default_names
from training.labelio.report import ImportContext, ImportReport

NAME_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names")


def write_yolo(
    images: Iterable[LabelledImage], out_dir: Path, *, names: Sequence[str] | None = None, copy: bool = True
) -> Path:
    """Write a YOLO dataset folder (images linked or copied into ``images/``); returns its ``data.yaml``.

    ``names`` fixes the class order (default: our labels, then any other label sorted). The yaml has
    ``train``/``val`` both on ``images`` and ``rule_labels`` for names that are rule labels, so
    ``citywatch train --data`` takes it as it is.
    """
    imgs = list(images)
    names = list(names) if names is not None else default_names(imgs)
    index = check_names(imgs, names)
    out_dir = Path(out_dir)
    placed = place_images(imgs, out_dir / "images", copy=copy)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    for img in imgs:
        lines = []
        for b in img.boxes:
            x1, y1, x2, y2 = clip_xyxy(b.xyxy, img.width, img.height)
            cx, cy = (x1 + x2) / 2 / img.width, (y1 + y2) / 2 / img.height
            w, h = (x2 - x1) / img.width, (y2 - y1) / img.height
            lines.append(f"{index[b.label]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        (out_dir / "labels" / Path(placed[img.path]).with_suffix(".txt")).write_text("".join(lines))
    (out_dir / "classes.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    data: dict[str, Any] = {
        "train": "images",
        "val": "images",
        "names": dict(enumerate(names)),
        "nc": len(names),
        "rule_labels": {n: n for n in names if n in RULE_LABELS},
    }
    dest = out_dir / "data.yaml"
    dest.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return dest


def read_yolo_names(folder: Path) -> list[str]:
    """Class names of a YOLO folder: ``data.yaml``/``dataset.yaml`` ``names``, else ``classes.txt`` or
    ``obj.names`` (one a line)."""
    for fn in NAME_FILES:
        p = folder / fn
        if not p.is_file():
            continue
        if p.suffix == ".yaml":
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
            names = raw.get("names") if isinstance(raw, dict) else None
            if isinstance(names, dict):
                try:
                    names = [names[k] for k in sorted(names, key=int)]
                except (TypeError, ValueError) as err:
                    raise LabelImportError(f"{p}: `names` keys must be class ids") from err
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise LabelImportError(f"{p}: `names` must be a list (or id -> name map) of class names")
            return [str(n) for n in names]
        return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise LabelImportError(f"{folder}: no class names ({', '.join(NAME_FILES)}); pass names")


def read_yolo_dataset(
    folder: Path,
    *,
    names: Sequence[str] | None = None,
    class_map: ClassMap | None = None,
    skip_unknown: bool = False,
    missing_as_empty: bool = False,
    images_dir: Path | None = None,
) -> tuple[list[LabelledImage], ImportReport]:
    """Read a YOLO folder (or its data.yaml; module docstring); class names go through ``class_map``.

    With ``images_dir``, each image is returned as the file of the same name under it (e.g. the frame in
    the collection the dataset was exported from); one not found there is reported missing.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix in (".yaml", ".yml"):
        folder = folder.parent
    if not folder.is_dir():
        raise LabelImportError(f"{folder}: not a folder (a YOLO dataset has images/ and labels/)")
    names = list(names) if names is not None else read_yolo_names(folder)
    ctx = ImportContext(
        "yolo", folder, class_map=class_map, skip_unknown=skip_unknown, images_dir=images_dir or folder
    )
    resolver = ImageResolver(images_dir) if images_dir is not None else None
    img_root = folder / "images" if (folder / "images").is_dir() else folder
    out: list[LabelledImage] = []
    for path in sorted(p for p in img_root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        rel = path.relative_to(img_root).with_suffix(".txt")
        label_file = folder / "labels" / rel if img_root != folder else path.with_suffix(".txt")
        if not label_file.is_file():
            if not missing_as_empty:
                ctx.report.unlabelled += 1
                continue
            rows: list[tuple[int, list[str]]] = []
        else:
            rows = [
                (i, line.split())
                for i, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1)
                if line.strip()
            ]
        found = resolver.resolve(path.relative_to(img_root).as_posix()) if resolver else path
        if found is None:
            ctx.missing(path.name)
            continue
        w, h = image_size(path)
        boxes = []
        for lineno, parts in rows:
            where = f"{label_file.name}:{lineno}"
            cls, vals, score = _parse_line(label_file, lineno, parts)
            if not 0 <= cls < len(names):
                raise LabelImportError(f"{where}: class id {cls} is not among the {len(names)} names {names}")
            cx, cy, bw, bh = vals[0] * w, vals[1] * h, vals[2] * w, vals[3] * h
            box = ctx.box(
                where, names[cls], (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), (w, h), score
            )
            if box is not None:
                boxes.append(box)
        out.append(ctx.image(LabelledImage(path=found, width=w, height=h, boxes=boxes)))
    return ctx.finish(out)


def _parse_line(path: Path, lineno: int, parts: list[str]) -> tuple[int, list[float], float | None]:
    if len(parts) not in (5, 6):
        raise LabelImportError(
            f"{path}:{lineno}: a detection label line is `class cx cy w h` (and maybe a score), "
            f"got {len(parts)} fields (segments and keypoints are not boxes)"
        )
    try:
        cls = int(parts[0])
        vals = [float(v) for v in parts[1:]]
    except ValueError as err:
        raise LabelImportError(f"{path}:{lineno}: not numbers: {' '.join(parts)}") from err
    return cls, vals[:4], vals[4] if len(vals) == 5 else None
