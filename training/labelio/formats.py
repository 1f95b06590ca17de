"""One entry per direction for the command line: ``export_labels(fmt, ...)`` and ``import_labels(fmt, ...)``
over the four formats, each export laid out the way its tool takes it::

    yolo         OUT/data.yaml, classes.txt, images/, labels/
    coco         OUT/annotations.json, images/
    cvat         OUT/annotations.xml, images/       (create the task from images/, upload the XML as CVAT 1.1)
    labelstudio  OUT/tasks.json, labeling_config.xml (images stay where ``image_url`` points)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from training.labelio.classmap import ClassMap
from training.labelio.coco import read_coco, write_coco
from training.labelio.cvat import read_cvat, write_cvat
from training.labelio.labelstudio import ImageURL, Mode, read_label_studio, write_label_studio
from training.labelio.model import LabelExportError, LabelImportError, LabelledImage
from training.labelio.report import ImportReport
from training.labelio.yolo import read_yolo_dataset, write_yolo

Format = Literal["labelstudio", "cvat", "yolo", "coco"]
FORMATS: tuple[str, ...] = get_args(Format)


def export_labels(
    fmt: str,
    images: Iterable[LabelledImage],
    out_dir: Path,
    *,
    names: Sequence[str] | None = None,
    image_url: ImageURL | None = None,
    mode: Mode = "predictions",
    model_version: str = "",
    copy: bool = True,
    extra_data: Callable[[LabelledImage], Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``images`` for ``fmt`` into ``out_dir`` (module docstring); returns the file to hand over.

    ``image_url``, ``mode``, ``model_version`` and ``extra_data`` are Label Studio's (``image_url`` is
    required there); ``copy=False`` writes no images (the tool already has them).
    """
    out_dir = Path(out_dir)
    imgs = list(images)
    if fmt == "yolo":
        return write_yolo(imgs, out_dir, names=names, copy=copy)
    if fmt == "coco":
        return write_coco(
            imgs, out_dir / "annotations.json", names=names, images_folder=out_dir / "images", copy=copy
        )
    if fmt == "cvat":
        return write_cvat(
            imgs, out_dir / "annotations.xml", names=names, images_folder=out_dir / "images", copy=copy
        )
    if fmt == "labelstudio":
        if image_url is None:
            raise LabelExportError(
                "a Label Studio export needs image_url (how Label Studio reaches each image)"
            )
        return write_label_studio(
            imgs,
            out_dir / "tasks.json",
            image_url=image_url,
            mode=mode,
            model_version=model_version,
            names=names,
            config_out=out_dir / "labeling_config.xml",
            extra_data=extra_data,
        )
    raise LabelExportError(f"unknown label format {fmt!r}; one of {', '.join(FORMATS)}")


def import_labels(
    fmt: str,
    path: Path,
    *,
    images_dir: Path | None = None,
    class_map: ClassMap | None = None,
    skip_unknown: bool = False,
    source: Mode = "annotations",
    model_version: str | None = None,
) -> tuple[list[LabelledImage], ImportReport]:
    """Read ``path`` as ``fmt``; images are looked up under ``images_dir`` (by path, then by file name).

    ``source`` and ``model_version`` are Label Studio's (read its annotations, or a model's predictions).
    """
    path = Path(path)
    if not path.exists():
        raise LabelImportError(f"{path}: not found")
    opts: dict[str, Any] = {"class_map": class_map, "skip_unknown": skip_unknown, "images_dir": images_dir}
    if fmt == "yolo":
        return read_yolo_dataset(path, **opts)
    if fmt == "coco":
        return read_coco(path, **opts)
    if fmt == "cvat":
        return read_cvat(path, **opts)
    if fmt == "labelstudio":
        return read_label_studio(path, source=source, model_version=model_version, **opts)
    raise LabelImportError(f"unknown label format {fmt!r}; one of {', '.join(FORMATS)}")
