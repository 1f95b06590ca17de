"""Survey inputs: a video with its DJI ``.SRT``, or a folder of photos with EXIF/XMP.

:func:`open_input` finds the telemetry and lists every candidate frame (video frame times come from
demuxing packets, no decoding). :func:`read_frames` decodes just the wanted frames, seeking past long
gaps, so a worker given a few frames of a long video does not decode all of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from detector.survey.errors import SurveyInputError
from detector.survey.telemetry import (
    PHOTO_SUFFIXES,
    Telemetry,
    TelemetryError,
    parse_srt,
    read_photo_folder,
)

log = logging.getLogger(__name__)
Image = npt.NDArray[np.uint8]
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".m4v")


@dataclass(frozen=True)
class Candidate:
    """A frame that could be sampled: video frame ``index`` at ``t`` seconds (``pts`` in stream units),
    or photo ``index`` (``path``)."""

    index: int
    t: float
    pts: int | None = None
    path: str | None = None


@dataclass
class SurveyInput:
    kind: Literal["video", "photos"]
    path: Path
    telemetry: Telemetry
    candidates: list[Candidate]
    width: int
    height: int
    srt: Path | None = None

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "video" else self.path.name


def find_srt(video: Path) -> Path | None:
    for suffix in (".SRT", ".srt", ".Srt"):
        p = video.with_suffix(suffix)
        if p.is_file():
            return p
    return None


def _video_candidates(path: Path) -> tuple[list[Candidate], int, int]:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise SurveyInputError(
            f"{path}: cannot open the video ({exc}); is it a complete video file?"
        ) from exc
    try:
        if not container.streams.video:
            raise SurveyInputError(f"{path}: no video stream in this file")
        stream = container.streams.video[0]
        tb = stream.time_base or Fraction(1, 1000)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    pts.append(int(packet.pts))
        except av.error.FFmpegError as exc:
            log.warning("%s: the video is damaged after %d frames (%s); using those", path, len(pts), exc)
    finally:
        container.close()
    if not pts:
        raise SurveyInputError(f"{path}: the video has no frames")
    pts.sort()
    first = pts[0]
    return [Candidate(i, float((p - first) * tb), p) for i, p in enumerate(pts)], width, height


def open_input(
    path: str | Path, srt: str | Path | None = None, latlon_order: str | None = None
) -> SurveyInput:
    """A video (its ``.SRT`` beside it, or ``srt``) or a folder of photos."""
    p = Path(path)
    try:
        if p.is_dir():
            photos, tel = read_photo_folder(p)
            first = next((r.time for r in tel.records if r.time is not None), None)
            by_index = {r.index: r for r in tel.records}
            cands: list[Candidate] = []
            for i, photo in enumerate(photos):
                rec = by_index.get(i)
                t = (
                    float(i)
                    if rec is None or rec.time is None or first is None
                    else (rec.time - first).total_seconds()
                )
                cands.append(Candidate(i, t, None, str(photo)))
            img = cv2.imread(str(photos[0]), cv2.IMREAD_COLOR)
            if img is None:
                raise SurveyInputError(f"{photos[0]}: cannot read this image")
            return SurveyInput("photos", p, tel, cands, img.shape[1], img.shape[0])
        if not p.is_file():
            raise SurveyInputError(f"{p}: no such video file or photo folder")
        if p.suffix.lower() in PHOTO_SUFFIXES:
            raise SurveyInputError(f"{p} is a single photo: give the folder of the survey's photos")
        srt_path = Path(srt) if srt is not None else find_srt(p)
        if srt_path is None or not srt_path.is_file():
            raise SurveyInputError(
                f"{p}: no telemetry file beside it (looked for {p.with_suffix('.SRT').name}); copy the .SRT "
                "the drone wrote with this video next to it, or pass --srt PATH"
            )
        tel = parse_srt(srt_path, latlon_order)
    except TelemetryError as exc:
        raise SurveyInputError(str(exc)) from exc
    cands, width, height = _video_candidates(p)
    return SurveyInput("video", p, tel, cands, width, height, srt_path)


def read_frames(
    inp_kind: str, path: str | Path, wanted: Sequence[Candidate], seek_gap_s: float = 4.0
) -> Iterator[tuple[Candidate, Image]]:
    """Decode the ``wanted`` frames (any order in, index order out); a frame that cannot be read is skipped
    with a warning."""
    todo = sorted(wanted, key=lambda c: c.index)
    if inp_kind == "photos":
        for c in todo:
            img = cv2.imread(str(c.path), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("photo %s cannot be read; skipped", c.path)
                continue
            yield c, np.asarray(img, np.uint8)
        return
    yield from _decode(Path(path), todo, seek_gap_s)


def _decode(path: Path, todo: list[Candidate], seek_gap_s: float) -> Iterator[tuple[Candidate, Image]]:
    import av

    if not todo:
        return
    container = av.open(str(path))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base or Fraction(1, 1000))
        gap = max(1, int(seek_gap_s / tb))
        pos = 0
        while pos < len(todo):
            target = todo[pos]
            if target.pts is None:
                pos += 1
                continue
            container.seek(target.pts, stream=stream, backward=True, any_frame=False)
            restart = False
            try:
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    while (
                        pos < len(todo) and todo[pos].pts is not None and int(todo[pos].pts or 0) < frame.pts
                    ):
                        log.warning(
                            "frame %d (t=%.2fs) not found in %s; skipped",
                            todo[pos].index,
                            todo[pos].t,
                            path.name,
                        )
                        pos += 1
                    if pos >= len(todo):
                        break
                    if frame.pts == todo[pos].pts:
                        yield todo[pos], np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
                        pos += 1
                        if pos < len(todo) and (todo[pos].pts or 0) - frame.pts > gap:
                            restart = True
                            break
            except av.error.FFmpegError as exc:
                log.warning(
                    "%s: decoding failed near frame %d (%s); skipping it", path.name, todo[pos].index, exc
                )
                pos += 1
                restart = True
            if not restart:
                for c in todo[pos:]:
                    log.warning("frame %d (t=%.2fs) is past the end of %s; skipped", c.index, c.t, path.name)
                break
    finally:
        container.close()
