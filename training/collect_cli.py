"""``citywatch collect export|import``: the collected frames out to a labelling tool and its labels back.

    citywatch collect export --format labelstudio|cvat|yolo|coco --out DIR [--dir var/collect]
        [--reasons rejected,corrected,near_threshold,...] [--streams cam-01,cam-02] [--since DAY_OR_TIME]
        [--unlabelled-only] [--image-url local-files:ROOT | prefix:URL]
    citywatch collect import FILE_OR_DIR --format labelstudio|cvat|yolo|coco [--dir var/collect]
        [--class-map MAP] [--skip-unknown] [--by NAME]

``export`` writes the selected frames with the model's boxes as pre-annotations (scores kept), corrected by
the desk's verdicts (a false positive's box left out, a corrected box replaced by the desk's); a labelled
frame goes out with its labels. Label Studio gets ``tasks.json`` + ``labeling_config.xml``; each task's
``data.image`` points at the frame in the collection (default: Label Studio's local file serving rooted at
the collection, ``local-files:ROOT`` for another document root, ``prefix:URL`` for a web server serving
the collection) and ``data`` carries ``frame_id``, ``stream``, ``reasons``, ``violation_id``. YOLO, COCO
and CVAT get the images linked into ``OUT/images``.

``import`` reads the tool's export (``training.labelio``; their class names through ``--class-map``), finds
each image's sidecar in the collection and writes ``labels`` and ``labelled_by`` (the tool, or ``--by``).
Unknown class names fail the import with every name listed, unless ``--skip-unknown`` (then counted).

Exit codes: 0 done, 1 an error explained on stderr, 2 a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from training.collection import (
    LABELLED_BY,
    REASONS,
    CollectionError,
    Selection,
    VerdictCounts,
    parse_since,
    pick_frames,
    to_image,
    write_label_studio_tasks,
    write_labels,
)
from training.errors import TrainingError
from training.labelio import FORMATS, ClassMap, export_labels, import_labels, local_files_url, url_prefix
from training.labelio.labelstudio import ImageURL

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_DIR = Path("var/collect")
#: the file an import takes when it is given the export's folder
EXPORT_FILES = {"labelstudio": "tasks.json", "coco": "annotations.json", "cvat": "annotations.xml"}


class UsageError(TrainingError):
    """A bad option value (exit 2)."""


def _csv(value: str | None) -> frozenset[str]:
    return frozenset(filter(None, (v.strip() for v in (value or "").split(","))))


def selection_of(a: argparse.Namespace) -> Selection:
    reasons = _csv(a.reasons)
    unknown = sorted(reasons - set(REASONS))
    if unknown:
        raise UsageError(f"--reasons: {', '.join(unknown)} not among {', '.join(REASONS)}")
    try:
        since = parse_since(a.since) if a.since else None
    except CollectionError as err:
        raise UsageError(str(err)) from None
    return Selection(reasons, _csv(a.streams), since, a.unlabelled_only)


def image_url_of(value: str | None, root: Path) -> tuple[ImageURL, list[str]]:
    """``--image-url``: the URL maker, and how to set Label Studio up for it (next-step lines).

    The default serves the collection's *parent* folder: Label Studio refuses a Local files storage on its
    document root itself ("add a subdirectory"), so the storage goes on the collection below it."""
    kind, _, where = (value or f"local-files:{root.resolve().parent}").partition(":")
    if kind == "local-files" and where:
        top = Path(where).resolve()
        return local_files_url(top), [
            f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={top} "
            "label-studio start",
            f"in its Settings > Cloud Storage add a Local files storage on {root.resolve()} (no sync needed)",
        ]
    if kind == "prefix" and where:
        return url_prefix(where, root), [f"serve {root.resolve()} at {where} (the tasks' images point there)"]
    raise UsageError(f"--image-url {value!r}: give local-files:ROOT or prefix:URL")


def next_step(fmt: str, out: Path, root: Path, setup: Sequence[str]) -> str:
    imp = f"citywatch collect import {{}} --format {fmt} --dir {root}"
    if fmt == "labelstudio":
        steps = [
            *setup[:1],
            f"create a project with the labeling config {out.parent / 'labeling_config.xml'}",
            *setup[1:],
            f"import {out} into the project",
            f"when labelled: Export > JSON, then `{imp.format('EXPORT.json')}`",
        ]
    elif fmt == "cvat":
        steps = [
            f"create a CVAT task from the images in {out.parent / 'images'}",
            f"upload {out} to it as CVAT 1.1 annotations",
            f"when labelled: export the task as 'CVAT for images 1.1', then `{imp.format('EXPORT.zip')}`",
        ]
    elif fmt == "coco":
        steps = [
            f"load {out} with the images in {out.parent / 'images'} into the labelling tool",
            f"when labelled: export COCO JSON, then `{imp.format('EXPORT.json')}`",
        ]
    else:
        steps = [
            f"label {out.parent} (images/, labels/, data.yaml) in a YOLO tool",
            f"when labelled: `{imp.format(out.parent)}`",
        ]
    return "next:\n" + "\n".join(f"  {s}" for s in steps)


def cmd_export(a: argparse.Namespace) -> int:
    selection = selection_of(a)
    image_url: ImageURL | None = None
    setup: list[str] = []
    if a.format == "labelstudio":
        image_url, setup = image_url_of(a.image_url, a.dir)
    elif a.image_url is not None:
        raise UsageError(f"--image-url is for Label Studio; a {a.format} export links the images into --out")
    picked = pick_frames(a.dir, selection)
    if picked.unreadable:
        print(
            f"citywatch collect export: {len(picked.unreadable)} sidecars unreadable, left out "
            f"(e.g. {', '.join(picked.unreadable[:3])})",
            file=sys.stderr,
        )
    if not picked.frames:
        missing = f", {picked.no_image} without their JPEG" if picked.no_image else ""
        print(
            f"citywatch collect export: no frame of the {picked.scanned} in {a.dir} matches{missing} "
            "(see `citywatch collect stats`; --reasons, --streams, --since, --unlabelled-only)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    counts = VerdictCounts()
    items = [(f, to_image(f, counts)) for f in picked.frames]
    if image_url is not None:
        out = write_label_studio_tasks(items, a.out, image_url)
    else:
        out = export_labels(a.format, [img for _, img in items], a.out)
    per_label = Counter(b.label for _, img in items for b in img.boxes)
    reasons = Counter[str](r for f in picked.frames for r in f.record.reasons)
    labelled = sum(f.record.labels is not None for f in picked.frames)
    lines = [
        f"{a.dir}: {len(items)} frames ({labelled} labelled, with their labels) for {a.format}: {out}",
        "boxes: " + (", ".join(f"{k} {v}" for k, v in sorted(per_label.items())) or "none"),
        "by reason: " + ", ".join(f"{r} {reasons[r]}" for r in REASONS if reasons[r]),
        *counts.lines(),
    ]
    if picked.no_image:
        lines.append(f"{picked.no_image} selected frames left out: their JPEG is gone")
    print("\n".join(lines))
    print(next_step(a.format, out, a.dir, setup))
    return EXIT_OK


def import_source(path: Path, fmt: str) -> Path:
    """The file to read: ``path``, or in a folder the export's usual file (the only one of its kind)."""
    if not path.is_dir() or fmt == "yolo":
        return path
    usual = path / EXPORT_FILES[fmt]
    if usual.is_file():
        return usual
    suffixes = (".xml", ".zip") if fmt == "cvat" else (".json",)
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    if len(found) != 1:
        raise CollectionError(
            f"{path}: give the {fmt} file itself ({len(found)} {'/'.join(suffixes)} files in the folder)"
        )
    return found[0]


def cmd_import(a: argparse.Namespace) -> int:
    if not a.dir.is_dir():
        raise CollectionError(f"{a.dir}: no such collection folder (collect.dir of streams.yaml; --dir)")
    source = import_source(a.path, a.format)
    class_map = ClassMap.from_arg(a.class_map)
    images, report = import_labels(
        a.format, source, images_dir=a.dir, class_map=class_map, skip_unknown=a.skip_unknown
    )
    written = write_labels(images, a.by or LABELLED_BY[a.format])
    print(report.summary())
    print("\n".join(f"{a.dir}: {line}" if i == 0 else f"  {line}" for i, line in enumerate(written.lines())))
    if images and not written.updated and not written.unchanged:
        print("citywatch collect import: no image had a sidecar: nothing was labelled", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="citywatch collect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="frames with pre-annotations for a labelling tool")
    e.add_argument("--format", required=True, choices=FORMATS)
    e.add_argument("--out", type=Path, required=True, help="folder to write the export into")
    e.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the collection (collect.dir)")
    e.add_argument("--reasons", default=None, help=f"frames kept for any of these: {','.join(REASONS)}")
    e.add_argument("--streams", default=None, help="only these streams, comma-separated")
    e.add_argument("--since", default=None, help="captured at or after: a day or an ISO 8601 time (UTC)")
    e.add_argument("--unlabelled-only", action="store_true", help="leave out frames already labelled")
    e.add_argument(
        "--image-url",
        default=None,
        help="Label Studio's data.image: local-files:ROOT (its document root; default: the collection's "
        "parent) "
        "or prefix:URL (a web server serving the collection)",
    )
    e.set_defaults(run=cmd_export)
    i = sub.add_parser("import", help="a labelling tool's export back into the sidecars")
    i.add_argument("path", type=Path, help="the tool's export: a file, or its folder (YOLO: the dataset)")
    i.add_argument("--format", required=True, choices=FORMATS)
    i.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the collection (collect.dir)")
    i.add_argument(
        "--class-map", default=None, help="their class -> our label: a YAML/JSON file or car=vehicle,person="
    )
    i.add_argument("--skip-unknown", action="store_true", help="leave out (and count) unknown classes")
    i.add_argument("--by", default=None, help="labelled_by to record (default: the format)")
    i.set_defaults(run=cmd_import)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``argv`` is ``[export|import, *options]`` (``detector.commands.cli`` passes it so)."""
    try:
        a = parser().parse_args(argv)
    except SystemExit as stop:  # argparse: --help (0) or a bad command line (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        code: int = a.run(a)
    except UsageError as err:
        print(f"citywatch collect {a.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingError as err:  # labelio's import/export errors, the collection's
        print(f"citywatch collect {a.command}: {err}", file=sys.stderr)
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
