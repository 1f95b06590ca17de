"""Label Studio: tasks JSON out (pre-annotations as ``predictions``, or finished labels as
``annotations``), its export JSON back in, and the labeling config that matches.

A task is ``{"data": {"image": URL}, "predictions": [{"model_version", "score", "result": [...]}]}``;
each result region is ``{"id", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
"original_width", "original_height", "image_rotation": 0, "value": {"x", "y", "width", "height" (percent
of the image, x/y the top-left corner), "rotation": 0, "rectanglelabels": [label]}, "score"}``. ``data.image``
is whatever ``image_url`` makes of each image: :func:`local_files_url` for Label Studio's local file
serving (``/data/local-files/?d=<path under its document root>``), :func:`url_prefix` for a web server.

Import takes Label Studio's "JSON" export (a list of tasks): per task the latest annotation that was not
cancelled (``was_cancelled``); cancelled ones are counted, a task with none is unlabelled (counted, not
imported); ``result: []`` is an image labelled with nothing in it. The task maps back to its image by the
file named in ``data.image`` (:class:`~training.labelio.images.ImageResolver`). ``source="predictions"``
reads the task's latest prediction instead (of ``model_version`` when given). The "JSON_MIN" export
(one flat record per annotation, regions under the control's name) reads too. Rotated regions come back
as their upright envelope, counted.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from training.labelio.classmap import ClassMap
from training.labelio.images import ImageResolver, image_size, name_from_ref
from training.labelio.model import (
    Box,
    LabelExportError,
    LabelImportError,
    LabelledImage,
    check_names,
    clip_xyxy,
    default_names,
    rotated_envelope,
)
from training.labelio.report import ImportContext, ImportReport

ImageURL = Callable[[LabelledImage], str]
Mode = Literal["predictions", "annotations"]
LOCAL_FILES = "/data/local-files/?d="
NO_LABEL = "(no label)"  # the class name a region without a label is reported under


def local_files_url(document_root: Path) -> ImageURL:
    """``data.image`` for Label Studio's local file serving: ``/data/local-files/?d=<path under
    document_root>`` (Label Studio runs with ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=document_root``)."""
    return _relative_url(document_root, LOCAL_FILES, "Label Studio document root")


def url_prefix(base: str, root: Path) -> ImageURL:
    """``data.image`` from a web server that serves ``root`` at ``base``: ``base/<path under root>``."""
    return _relative_url(root, base.rstrip("/") + "/", f"folder served at {base}")


def _relative_url(root: Path, prefix: str, what: str) -> ImageURL:
    top = Path(root).resolve()

    def url(img: LabelledImage) -> str:
        try:
            rel = img.path.resolve().relative_to(top)
        except ValueError as err:
            raise LabelExportError(f"{img.path} is not under the {what} {top}") from err
        return prefix + quote(rel.as_posix(), safe="/")

    return url


def label_studio_config(
    names: Sequence[str], *, from_name: str = "label", to_name: str = "image", data_key: str = "image"
) -> str:
    """The labeling config (XML) for boxes of ``names`` on ``$data_key`` (rotation switched off)."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=to_name, value=f"${data_key}")
    rl = ET.SubElement(view, "RectangleLabels", name=from_name, toName=to_name, canRotate="false")
    for n in names:
        ET.SubElement(rl, "Label", value=n)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def label_studio_tasks(
    images: Iterable[LabelledImage],
    *,
    image_url: ImageURL,
    mode: Mode = "predictions",
    model_version: str = "",
    names: Sequence[str] | None = None,
    from_name: str = "label",
    to_name: str = "image",
    data_key: str = "image",
    extra_data: Callable[[LabelledImage], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One task per image. ``mode="predictions"``: the boxes as a pre-annotation of ``model_version``
    (its ``score`` the lowest box score, so sorting by it shows the least sure first);
    ``mode="annotations"``: as a finished annotation. ``extra_data`` adds keys to ``data``."""
    imgs = list(images)
    if names is not None:
        check_names(imgs, names)
    tasks = []
    for img in imgs:
        data: dict[str, Any] = dict(extra_data(img)) if extra_data else {}
        data[data_key] = image_url(img)
        result = [_region(img, b, i, from_name, to_name, mode) for i, b in enumerate(img.boxes)]
        if mode == "predictions":
            pred: dict[str, Any] = {"model_version": model_version, "result": result}
            scores = [b.score for b in img.boxes if b.score is not None]
            if scores:
                pred["score"] = round(min(scores), 5)
            tasks.append({"data": data, "predictions": [pred]})
        elif mode == "annotations":
            ann = {"result": result, "was_cancelled": False, "ground_truth": False}
            tasks.append({"data": data, "annotations": [ann]})
        else:
            raise LabelExportError(f"Label Studio mode must be predictions or annotations, not {mode!r}")
    return tasks


def _region(img: LabelledImage, b: Box, i: int, from_name: str, to_name: str, mode: Mode) -> dict[str, Any]:
    x1, y1, x2, y2 = clip_xyxy(b.xyxy, img.width, img.height)
    region: dict[str, Any] = {
        "id": f"r{i}",
        "from_name": from_name,
        "to_name": to_name,
        "type": "rectanglelabels",
        "original_width": img.width,
        "original_height": img.height,
        "image_rotation": 0,
        "value": {
            "x": x1 / img.width * 100,
            "y": y1 / img.height * 100,
            "width": (x2 - x1) / img.width * 100,
            "height": (y2 - y1) / img.height * 100,
            "rotation": 0,
            "rectanglelabels": [b.label],
        },
    }
    if mode == "predictions" and b.score is not None:
        region["score"] = round(b.score, 5)
    return region


def write_label_studio(
    images: Iterable[LabelledImage],
    out: Path,
    *,
    image_url: ImageURL,
    mode: Mode = "predictions",
    model_version: str = "",
    names: Sequence[str] | None = None,
    config_out: Path | None = None,
    extra_data: Callable[[LabelledImage], Mapping[str, Any]] | None = None,
) -> Path:
    """Write the tasks JSON ``out`` (and, with ``config_out``, the labeling config for ``names``, default
    our labels and any other label present)."""
    imgs = list(images)
    names = list(names) if names is not None else default_names(imgs)
    tasks = label_studio_tasks(
        imgs, image_url=image_url, mode=mode, model_version=model_version, names=names, extra_data=extra_data
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    if config_out is not None:
        Path(config_out).write_text(label_studio_config(names), encoding="utf-8")
    return out


def read_label_studio(
    path: Path,
    *,
    images_dir: Path | None = None,
    source: Mode = "annotations",
    model_version: str | None = None,
    class_map: ClassMap | None = None,
    skip_unknown: bool = False,
    data_key: str = "image",
) -> tuple[list[LabelledImage], ImportReport]:
    """Read Label Studio's JSON (or JSON_MIN) export; images are looked up under ``images_dir`` (default:
    the file's folder)."""
    path = Path(path)
    items = _load(path)
    folder = Path(images_dir) if images_dir is not None else path.parent
    ctx = ImportContext(
        "labelstudio", path, class_map=class_map, skip_unknown=skip_unknown, images_dir=folder
    )
    resolver = ImageResolver(folder)
    if items and all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in items):
        picked = [_pick(ctx, t, source, model_version, data_key) for t in items]
    elif all(isinstance(t, dict) and data_key in t for t in items):
        picked = _pick_min(items, data_key)
    else:
        raise LabelImportError(
            f"{path}: not a Label Studio JSON or JSON_MIN export (tasks with data.{data_key})"
        )
    out = []
    for ref, regions in picked:
        if regions is None:
            continue
        image = _image(ctx, resolver, ref, regions)
        if image is not None:
            out.append(ctx.image(image))
    return ctx.finish(out)


def _load(path: Path) -> list[Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise LabelImportError(f"{path}: cannot read it ({err.strerror})") from err
    except json.JSONDecodeError as err:
        raise LabelImportError(f"{path}: not valid JSON: {err}") from err
    return [doc] if isinstance(doc, dict) else doc if isinstance(doc, list) else []


def _when(entry: Mapping[str, Any]) -> tuple[datetime, float]:
    """Sort key: updated (else created) time, then the numeric id; missing ones sort first."""
    stamp = entry.get("updated_at") or entry.get("created_at")
    try:
        when = datetime.fromisoformat(str(stamp)) if stamp else datetime.min
    except ValueError:
        when = datetime.min
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    try:
        num = float(entry.get("id") or entry.get("annotation_id") or 0)
    except (TypeError, ValueError):
        num = 0.0
    return when, num


def _pick(
    ctx: ImportContext, task: dict[str, Any], source: Mode, model_version: str | None, data_key: str
) -> tuple[str, list[Any] | None]:
    ref = str(task["data"].get(data_key, ""))
    if source == "annotations":
        anns = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        live = [a for a in anns if not a.get("was_cancelled")]
        ctx.report.cancelled += len(anns) - len(live)
        chosen = max(enumerate(live), key=lambda ia: (_when(ia[1]), ia[0]))[1] if live else None
    else:
        preds = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
        if model_version is not None:
            preds = [p for p in preds if p.get("model_version") == model_version]
        chosen = max(enumerate(preds), key=lambda ip: (_when(ip[1]), ip[0]))[1] if preds else None
    if chosen is None:
        ctx.report.unlabelled += 1
        return ref, None
    return ref, [r for r in chosen.get("result") or [] if isinstance(r, dict)]


def _pick_min(records: list[dict[str, Any]], data_key: str) -> list[tuple[str, list[Any] | None]]:
    """JSON_MIN: the latest record per task; its regions are the lists of dicts under any key."""
    latest: dict[Any, tuple[int, dict[str, Any]]] = {}
    for i, rec in enumerate(records):
        key = rec.get("id", rec[data_key])
        if key not in latest or (_when(rec), i) >= (_when(latest[key][1]), latest[key][0]):
            latest[key] = (i, rec)
    out: list[tuple[str, list[Any] | None]] = []
    for _, rec in sorted(latest.values(), key=lambda ir: ir[0]):
        regions = []
        for k, v in rec.items():
            if k != data_key and isinstance(v, list) and all(isinstance(r, dict) for r in v):
                regions += [{"type": _min_type(r), "value": r, **_size(r)} for r in v]
        out.append((str(rec[data_key]), regions))
    return out


def _min_type(region: Mapping[str, Any]) -> str:
    kinds = [k for k in region if k.endswith("labels") and isinstance(region[k], list)]
    return kinds[0] if kinds else "unknown"


def _size(region: Mapping[str, Any]) -> dict[str, Any]:
    return {k: region[k] for k in ("original_width", "original_height") if k in region}


def _image(
    ctx: ImportContext, resolver: ImageResolver, ref: str, regions: list[dict[str, Any]]
) -> LabelledImage | None:
    found = resolver.resolve(ref)
    name = name_from_ref(ref).rsplit("/", 1)[-1]
    if found is None:
        ctx.missing(name or ref)
        return None
    sized = [r for r in regions if r.get("original_width") and r.get("original_height")]
    if sized:
        w, h = int(sized[0]["original_width"]), int(sized[0]["original_height"])
    else:
        w, h = image_size(found)
    boxes = []
    for r in regions:
        if r.get("type") != "rectanglelabels":
            ctx.report.other_shapes[str(r.get("type"))] += 1
            continue
        v = r.get("value") or {}
        try:
            rw, rh = float(r.get("original_width") or w), float(r.get("original_height") or h)
            x, y = float(v["x"]) / 100 * rw, float(v["y"]) / 100 * rh
            bw, bh = float(v["width"]) / 100 * rw, float(v["height"]) / 100 * rh
            rotation = float(v.get("rotation") or 0)
            labels = [str(n) for n in v.get("rectanglelabels") or []]
        except (KeyError, TypeError, ValueError) as err:
            raise LabelImportError(
                f"{ctx.report.source}: a region of {name} is not a rectangle: {v}"
            ) from err
        rotated = rotation % 360 != 0
        xyxy = (
            rotated_envelope(x, y, [(0, 0), (bw, 0), (bw, bh), (0, bh)], rotation)
            if rotated
            else (x, y, x + bw, y + bh)
        )
        if (rw, rh) != (w, h):  # regions sized against another resolution: percent holds, pixels scale
            xyxy = (xyxy[0] * w / rw, xyxy[1] * h / rh, xyxy[2] * w / rw, xyxy[3] * h / rh)
        score = float(r["score"]) if r.get("score") is not None else None
        for label in labels or [NO_LABEL]:
            box = ctx.box(name, label, xyxy, (w, h), score, rotated=rotated)
            if box is not None:
                boxes.append(box)
    return LabelledImage(path=found, width=w, height=h, boxes=boxes)
