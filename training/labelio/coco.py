"""COCO detection JSON ("instances"): ``images`` (id, file_name, width, height), ``annotations``
(image_id, category_id, ``bbox`` = [x, y, width, height] in pixels, ``score`` where a model made it) and
``categories`` (id, name). Classes are matched by category *name*.

An image listed without annotations is labelled with nothing in it. Crowd regions (``iscrowd: 1``) are
not boxes of one object and are counted under ``other_shapes``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from training.labelio.classmap import ClassMap
from training.labelio.images import ImageResolver, place_images
from training.labelio.model import LabelImportError, LabelledImage, check_names, clip_xyxy, default_names
from training.labelio.report import ImportContext, ImportReport


def coco_dict(
    images: Iterable[LabelledImage],
    *,
    names: Sequence[str] | None = None,
    file_name: Callable[[LabelledImage], str] | None = None,
) -> dict[str, Any]:
    """The COCO document for ``images``; ``file_name`` (default: the image's file name) names each image."""
    imgs = list(images)
    names = list(names) if names is not None else default_names(imgs)
    index = check_names(imgs, names)
    doc: dict[str, Any] = {
        "info": {"description": "citywatch labelio export", "version": "1.0"},
        "licenses": [],
        "categories": [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(names)],
        "images": [],
        "annotations": [],
    }
    ann_id = 0
    for img_id, img in enumerate(imgs, 1):
        name = file_name(img) if file_name else img.path.name
        doc["images"].append({"id": img_id, "file_name": name, "width": img.width, "height": img.height})
        for b in img.boxes:
            x1, y1, x2, y2 = clip_xyxy(b.xyxy, img.width, img.height)
            ann_id += 1
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": img_id,
                "category_id": index[b.label] + 1,
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "area": round((x2 - x1) * (y2 - y1), 3),
                "iscrowd": 0,
                "segmentation": [],
            }
            if b.score is not None:
                ann["score"] = round(b.score, 5)
            doc["annotations"].append(ann)
    return doc


def write_coco(
    images: Iterable[LabelledImage],
    out: Path,
    *,
    names: Sequence[str] | None = None,
    images_folder: Path | None = None,
    copy: bool = True,
) -> Path:
    """Write ``out`` (a COCO JSON file); with ``images_folder``, the images are linked or copied there
    under their file names (the ``file_name`` of each entry)."""
    imgs = list(images)
    if images_folder is not None:
        place_images(imgs, images_folder, copy=copy)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco_dict(imgs, names=names), indent=1), encoding="utf-8")
    return out


def read_coco(
    path: Path,
    *,
    images_dir: Path | None = None,
    class_map: ClassMap | None = None,
    skip_unknown: bool = False,
) -> tuple[list[LabelledImage], ImportReport]:
    """Read a COCO JSON file; images are looked up under ``images_dir`` (default: the file's folder)."""
    path = Path(path)
    doc = _load(path)
    root = Path(images_dir) if images_dir is not None else path.parent
    ctx = ImportContext("coco", path, class_map=class_map, skip_unknown=skip_unknown, images_dir=root)
    resolver = ImageResolver(root)
    try:
        cats = {int(c["id"]): str(c["name"]) for c in doc.get("categories", [])}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for a in doc.get("annotations", []):
            by_image.setdefault(int(a["image_id"]), []).append(a)
        out: list[LabelledImage] = []
        for entry in doc["images"]:
            name = str(entry["file_name"])
            w, h = int(entry["width"]), int(entry["height"])
            found = resolver.resolve(name)
            if found is None:
                ctx.missing(name)
                continue
            boxes = []
            for a in by_image.get(int(entry["id"]), []):
                if a.get("iscrowd"):
                    ctx.report.other_shapes["crowd"] += 1
                    continue
                if int(a["category_id"]) not in cats:
                    raise LabelImportError(
                        f"{path}: annotation {a.get('id')} has category {a['category_id']}, "
                        f"which `categories` does not list"
                    )
                x, y, bw, bh = (float(v) for v in a["bbox"])
                score = float(a["score"]) if a.get("score") is not None else None
                box = ctx.box(name, cats[int(a["category_id"])], (x, y, x + bw, y + bh), (w, h), score)
                if box is not None:
                    boxes.append(box)
            out.append(ctx.image(LabelledImage(path=found, width=w, height=h, boxes=boxes)))
    except (KeyError, TypeError, ValueError) as err:
        raise LabelImportError(f"{path}: not a COCO detection file ({type(err).__name__}: {err})") from err
    return ctx.finish(out)


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise LabelImportError(f"{path}: cannot read it ({err.strerror})") from err
    except json.JSONDecodeError as err:
        raise LabelImportError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise LabelImportError(f"{path}: not a COCO file (no `images` list)")
    return doc
