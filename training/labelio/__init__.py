"""Label interchange: send frames to labelling tools and bring their labels back.

One in-memory form, :class:`LabelledImage` ``(path, width, height, boxes)`` with :class:`Box`
``(label, xyxy pixels, score=None)``; ``boxes == []`` is an image labelled with nothing in it. Every
reader maps their class names through a :class:`ClassMap`, clips boxes to the image and returns
``(images, ImportReport)``; unknown class names raise :class:`LabelImportError` listing them unless
``skip_unknown=True`` (then they are counted as ``skipped``).

Public functions (names and signatures kept stable)::

    write_yolo(images, out_dir, *, names=None, copy=True) -> Path            # data.yaml
    read_yolo_dataset(folder, *, names=None, class_map=None, skip_unknown=False,
                      missing_as_empty=False) -> (list[LabelledImage], ImportReport)
    write_coco(images, out, *, names=None, images_folder=None, copy=True) -> Path
    read_coco(path, *, images_dir=None, class_map=None, skip_unknown=False) -> (images, report)

    ClassMap(mapping=None, *, labels=RULE_LABELS); ClassMap.load(path); ClassMap.parse(["a=b,c="]);
    ClassMap.from_arg(file_or_pairs_or_None)
    image_size(path) -> (width, height); ImageResolver(root).resolve(name_or_url) -> Path | None
"""

from __future__ import annotations

from training.labelio.classmap import ClassMap
from training.labelio.coco import read_coco, write_coco
from training.labelio.images import ImageResolver, image_size
from training.labelio.model import Box, LabelExportError, LabelImportError, LabelledImage
from training.labelio.report import ImportReport
from training.labelio.yolo import read_yolo_dataset, write_yolo

__all__ = [
    "Box",
    "ClassMap",
    "ImageResolver",
    "ImportReport",
    "LabelExportError",
    "LabelImportError",
    "LabelledImage",
    "image_size",
    "read_coco",
    "read_yolo_dataset",
    "write_coco",
    "write_yolo",
]
