"""Real frames as training data: a teacher model labels the vehicles, nothing else is labelled.

``citywatch teacher-label SOURCE.. --out DIR`` takes real stills and videos (a video gives one frame every
``--every`` seconds), runs a teacher (default: ``yolov8n-coco`` from the manifest) and writes a YOLO
folder ``DIR/images/*.jpg`` + ``DIR/labels/*.txt`` in citywatch's class ids: every teacher vehicle (car,
truck, bus, motorcycle) at or above ``--conf`` becomes class 0 ``vehicle``; no stall, litter or structure
box is written. Mixed into training (``train:`` may list several folders), these frames teach the model
that real people, cars, shop fronts and lawns are not stalls, litter or structures — the hard negatives a
synthetic world never shows — while its vehicles stay vehicles.

Only use footage the bureau knows to be free of the other three classes (or review the frames first):
a real stall in a "negative" frame would teach the model to miss stalls.
sheet per source with the teacher's boxes for a person to check.

``--all-classes`` writes every class the teacher sees, in the teacher's own class ids, for a student with
the teacher's class list: self-training a model on the bureau's own views. With ``--tiles 2`` the teacher
also looks at 2x2 overlapping tiles of each frame (detector/inference/tiling.py), so it sees the far, small
vehicles the student misses on the whole frame, and the student learns them (a tiled teacher distilled into
a whole-frame student: the tile pass's recall without its cost at run time).

A vehicle seen only faintly (teacher score between ``--ignore`` and ``--conf``) is not labelled, and the
frame area it covers is greyed out, so the student is neither taught it is a vehicle nor that it is not.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.errors import TrainingError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts"}
VEHICLE = 0  # citywatch class id of `vehicle`
GREY = 114  # the letterbox grey ultralytics pads with


def iter_frames(source: Path, every_s: float) -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    """``(name, BGR image)`` for a still, or one frame every ``every_s`` seconds of a video."""
    import cv2

    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        img = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if img is None:
            raise TrainingError(f"{source}: not a readable image")
        yield source.stem, np.asarray(img, dtype=np.uint8)
        return
    if suffix not in VIDEO_SUFFIXES:
        raise TrainingError(f"{source}: neither an image ({sorted(IMAGE_SUFFIXES)}) nor a video")
    import av

    try:
        container = av.open(str(source))
    except av.error.FFmpegError as err:
        raise TrainingError(f"{source}: cannot open the video: {err}") from err
    with container:
        stream = container.streams.video[0]
        next_t = 0.0
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            if t + 1e-6 < next_t:
                continue
            next_t = t + every_s
            yield f"{source.stem}_t{t:07.1f}", np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)


def expand(sources: Sequence[Path]) -> list[Path]:
    """Files as given; folders expanded to their images and videos (sorted, recursive)."""
    out: list[Path] = []
    for s in sources:
        if s.is_dir():
            out += sorted(p for p in s.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        elif s.is_file():
            out.append(s)
        else:
            raise TrainingError(f"{s}: no such file or folder")
    return out


def yolo_lines(xyxy: npt.NDArray[np.float32], size: tuple[int, int], cls: int = VEHICLE) -> list[str]:
    """YOLO label lines (``cls cx cy w h``, normalised) for pixel boxes in an image of ``size`` (w, h)."""
    w, h = size
    lines = []
    for x1, y1, x2, y2 in xyxy.tolist():
        x1, x2 = max(0.0, x1), min(float(w), x2)
        y1, y2 = max(0.0, y1), min(float(h), y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        cx, cy = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return lines


def grey_out(img: npt.NDArray[np.uint8], xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """A copy with the given boxes painted grey (regions the student is taught nothing about)."""
    out = img.copy()
    for x1, y1, x2, y2 in xyxy.astype(int).tolist():
        out[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)] = GREY
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="citywatch teacher-label",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", type=Path, help="images, videos or folders of them")
    p.add_argument("--out", type=Path, required=True, help="YOLO folder to write (images/, labels/)")
    p.add_argument("--teacher", default="yolov8n-coco", help="manifest name or a model file (yolov8n-coco)")
    p.add_argument("--conf", type=float, default=0.4, help="teacher score that makes a vehicle label (0.4)")
    p.add_argument("--ignore", type=float, default=0.2, help="fainter vehicles above this are greyed (0.2)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between frames taken from a video (5)")
    p.add_argument("--max-side", type=int, default=1280, help="downscale larger frames to this side (1280)")
    p.add_argument("--prefix", default="", help="prefix for the written file names")
    p.add_argument("--tiles", type=int, default=1, help="teacher also on n x n tiles of each frame (1: off)")
    p.add_argument(
        "--all-classes",
        action="store_true",
        help="label every class the teacher sees in its own class ids (self-training), not only vehicles",
    )
    a = p.parse_args(list(argv) if argv is not None else None)
    try:
        n = label(a)
    except TrainingError as err:
        print(f"citywatch teacher-label: {err}", file=sys.stderr)
        return 1
    what = "the teacher's labels (its class ids)" if a.all_classes else "vehicle labels"
    print(f"wrote {n} frames to {a.out}/images with {what} in {a.out}/labels")
    return 0


def label(a: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from detector.config import ModelConfig
    from detector.inference.model import ModelResolveError, load_model

    files = expand(a.sources)
    if not files:
        raise TrainingError("no images or videos in the sources given")
    cfg = (
        ModelConfig(path=Path(a.teacher), conf=a.ignore, tiles=a.tiles)
        if Path(a.teacher).exists()
        else ModelConfig(name=a.teacher, conf=a.ignore, tiles=a.tiles)
    )
    try:
        teacher = load_model(cfg)
    except ModelResolveError as err:
        raise TrainingError(str(err)) from err
    vehicle_ids = [
        i for i, n in enumerate(teacher.info.class_names) if teacher.info.rule_labels.get(n) == "vehicle"
    ]
    if not vehicle_ids:
        raise TrainingError(f"teacher {a.teacher} maps no class onto `vehicle`")
    (a.out / "images").mkdir(parents=True, exist_ok=True)
    (a.out / "labels").mkdir(parents=True, exist_ok=True)
    written = 0
    for src in tqdm(files, desc="teacher-label", unit="file", file=sys.stderr):
        for name, img in iter_frames(src, a.every):
            h, w = img.shape[:2]
            if max(h, w) > a.max_side:
                k = a.max_side / max(h, w)
                size = (round(w * k), round(h * k))
                img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
                h, w = img.shape[:2]
            dets = teacher.backend.infer([img])[0]
            is_vehicle = np.ones(len(dets), bool) if a.all_classes else np.isin(dets.class_id, vehicle_ids)
            sure = is_vehicle & (dets.confidence >= a.conf)
            faint = is_vehicle & ~sure
            img = grey_out(img, dets.xyxy[faint])
            digest = hashlib.sha1(str(src).encode()).hexdigest()[:6]
            stem = f"{a.prefix}{name}_{digest}"
            cv2.imwrite(str(a.out / "images" / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if a.all_classes:
                lines = [
                    line
                    for box, cls in zip(dets.xyxy[sure], dets.class_id[sure], strict=True)
                    for line in yolo_lines(box[None], (w, h), int(cls))
                ]
            else:
                lines = yolo_lines(dets.xyxy[sure], (w, h))
            (a.out / "labels" / f"{stem}.txt").write_text("".join(f"{x}\n" for x in lines))
            written += 1
    return written


if __name__ == "__main__":
    sys.exit(main())
