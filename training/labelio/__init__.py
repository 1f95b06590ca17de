"""Label interchange: send frames to labelling tools (YOLO, COCO, CVAT, Label Studio) and bring their
labels back.

One in-memory form: :class:`LabelledImage` ``(path, width, height, boxes)`` with :class:`Box`
``(label, xyxy pixels, score=None)`` (a score marks a model prediction); ``boxes == []`` is an image
labelled with nothing in it. Every reader maps their class names through a :class:`ClassMap`, clips
boxes to the image, drops and counts degenerate ones, looks the image up under ``images_dir`` (by path,
then by file name; not found = counted in ``missing_images``) and returns ``(images, ImportReport)``.
Unknown class names raise :class:`LabelImportError` listing every one with counts and example files
(``.report`` holds the report), unless ``skip_unknown=True``: then their boxes are counted as
``skipped``. Nothing is dropped without a count. Both errors derive from ``TrainingError``.

Public API (names and signatures kept stable; ``images`` is any iterable of LabelledImage)::

    export_labels(fmt, images, out_dir, *, names=None, image_url=None, mode="predictions",
                  model_version="", copy=True, extra_data=None) -> Path
    import_labels(fmt, path, *, images_dir=None, class_map=None, skip_unknown=False,
                  source="annotations", model_version=None) -> tuple[list[LabelledImage], ImportReport]
    FORMATS = ("labelstudio", "cvat", "yolo", "coco")

    write_yolo(images, out_dir, *, names=None, copy=True) -> Path                      # data.yaml
    read_yolo_dataset(folder, *, names=None, class_map=None, skip_unknown=False,
                      missing_as_empty=False, images_dir=None) -> (images, report)
    write_coco(images, out, *, names=None, images_folder=None, copy=True) -> Path
    read_coco(path, *, images_dir=None, class_map=None, skip_unknown=False) -> (images, report)
    write_cvat(images, out, *, names=None, images_folder=None, copy=True, task="citywatch") -> Path
    read_cvat(path, *, images_dir=None, class_map=None, skip_unknown=False) -> (images, report)
    write_label_studio(images, out, *, image_url, mode="predictions", model_version="", names=None,
                       config_out=None, extra_data=None) -> Path                     # tasks JSON
    label_studio_tasks(images, *, image_url, mode="predictions", model_version="", names=None,
                       from_name="label", to_name="image", data_key="image", extra_data=None) -> list[dict]
    label_studio_config(names, *, from_name="label", to_name="image", data_key="image") -> str
    read_label_studio(path, *, images_dir=None, source="annotations", model_version=None,
                      class_map=None, skip_unknown=False, data_key="image") -> (images, report)
    local_files_url(document_root) -> image_url      # "/data/local-files/?d=<path under document_root>"
    url_prefix(base, root) -> image_url              # "<base>/<path under root>"

    ClassMap(mapping=None, *, labels=RULE_LABELS); ClassMap.load(path)  # YAML/JSON {their: our}
    ClassMap.parse(["car=vehicle,person="]); ClassMap.from_arg(file_or_pairs_or_None)
    ImportReport: .summary() -> str, .to_dict() -> dict, .images .empty .boxes .per_label .unknown
                  .skipped .ignored .clipped .degenerate .rotated .other_shapes .missing_images
                  .unlabelled .cancelled
    default_names(images) -> list[str]   # our labels in order, then any other label
    image_size(path) -> (width, height); ImageResolver(root).resolve(name_or_url) -> Path | None
"""

from __future__ import annotations

from training.labelio.classmap import ClassMap
from training.labelio.coco import read_coco, write_coco
from training.labelio.cvat import read_cvat, write_cvat
from training.labelio.formats import FORMATS, export_labels, import_labels
from training.labelio.images import ImageResolver, image_size
from training.labelio.labelstudio import (
    label_studio_config,
    label_studio_tasks,
    local_files_url,
    read_label_studio,
    url_prefix,
    write_label_studio,
)
from training.labelio.model import Box, LabelExportError, LabelImportError, LabelledImage, default_names
from training.labelio.report import ImportReport
from training.labelio.yolo import read_yolo_dataset, write_yolo

__all__ = [
    "FORMATS",
    "Box",
    "ClassMap",
    "ImageResolver",
    "ImportReport",
    "LabelExportError",
    "LabelImportError",
    "LabelledImage",
    "default_names",
    "export_labels",
    "image_size",
    "import_labels",
    "label_studio_config",
    "label_studio_tasks",
    "local_files_url",
    "read_coco",
    "read_cvat",
    "read_label_studio",
    "read_yolo_dataset",
    "url_prefix",
    "write_coco",
    "write_cvat",
    "write_label_studio",
    "write_yolo",
]
