"""The zoomed pass (``zoom_imgsz`` in a model section): a second look at the whole frame at a larger size.

A model trained at 640 px sees a car 60 px long in a 1920 px frame as 20 px: too small to be sure of. A
second pass over the whole frame at ``zoom_imgsz`` (e.g. 960: 1.5 times the detail) scores such a car
better, and ``zoom_model`` may name a model fine-tuned for far, small vehicles to run it. At the same time
a zoomed pass finds things the native pass never saw, and a model trained at 640 loses a lorry that fills
the frame at 960; letting it open cases of its own would invent some (a sign on a pavement read as a far
car) and make boxes jump between passes, which breaks the tracks a dwell rule counts on.

So the zoomed pass **confirms**: the native pass runs with a low floor (``CONFIRM_FLOOR``), and each of its
boxes takes the highest score that the zoomed pass gives an overlapping box of the same class group
(IoU >= ``match``). The native pass's boxes and geometry are all that comes out, at ``conf`` as usual: a
far car the native pass sees at 0.25 and the zoomed pass at 0.6 is a vehicle at 0.6; an object only the
zoomed pass sees is dropped. Only unsure boxes are asked about: a box the native pass already scores at
``CONFIRM_CEILING`` keeps its score, and a frame without an unsure box skips the zoomed pass (on a street
of near, plainly seen cars it costs nothing). ``data[NATIVE_CONFIDENCE]`` keeps the native score: vetoes
judge by it (detector.rules.engine.vetoing_boxes), so a box only the confirmation lifts overrules nothing.

On a stream (``infer_streams``) the zoomed pass runs at most once every ``every_s`` of frame time, and only
when an unsure box is not already remembered: each unsure box a zoomed pass looked at is remembered with
that pass's score, and a later box of the same group that stays where it was (IoU >= ``STAY_IOU``, within
``REMEMBER_S``) takes the remembered score without a new pass. What a parking case needs, a parked car
confirmed at every sample, costs one zoomed pass per ``every_s`` at most instead of one per sample; a car
that parks waits about ``every_s`` for its confirmation. A batch of stream frames gets at most
``PER_BATCH`` zoomed passes (the streams that waited longest first), so streams started together do not
all ask at once; under load each stream waits longer. In the live service (``wait=False``) the pass runs
on a thread of its own beside the next batches, one job at a time, and adds no latency to any frame: the
frame that asked keeps its native score and the stream's later frames get the confirmation. A replay
(``wait=True``, the default) runs it in the call, so replays and ``citywatch eval-clips`` stay
deterministic and the asking frame is confirmed at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from detector.contracts.detections import NATIVE_CONFIDENCE, Detections, box_iou
from detector.inference.base import Image, InferenceBackend, WrappingBackend

log = logging.getLogger(__name__)

CONFIRM_FLOOR = 0.2  # the native pass keeps boxes down to this score for the zoomed pass to confirm
CONFIRM_CEILING = 0.5  # a native box at this score or above is sure enough: not asked about
STAY_IOU = 0.7  # a box this close to a remembered one is the same, unmoved object
REMEMBER_S = 60.0  # a zoomed pass's score is remembered this long (frame time)
PER_BATCH = 2  # most frames of one batch of stream frames that get a zoomed pass


def unsure(dets: Detections, ceiling: float = CONFIRM_CEILING) -> bool:
    """Whether the native pass has a box the zoomed pass should confirm (one scoring below ``ceiling``)."""
    return bool(len(dets)) and bool((dets.confidence < ceiling).any())


def groups(class_id: np.ndarray, group_of: dict[int, int]) -> np.ndarray:
    """The class group of each class id (a class in no group is its own: ``-1 - id``)."""
    return np.array([group_of.get(int(c), -1 - int(c)) for c in class_id], np.int64)


def best_scores(native: Detections, zoomed: Detections, group_of: dict[int, int], match: float) -> np.ndarray:
    """For each ``native`` box, the best score of a same-group ``zoomed`` box overlapping it (IoU >=
    ``match``), 0 where there is none."""
    if not len(native) or not len(zoomed):
        return np.zeros(len(native), np.float32)
    same = (groups(native.class_id, group_of)[:, None] == groups(zoomed.class_id, group_of)[None, :]) & (
        box_iou(native.xyxy, zoomed.xyxy) >= match
    )
    return np.asarray(np.where(same, zoomed.confidence[None, :], 0.0).max(axis=1), np.float32)


def confirm(
    native: Detections,
    zoomed: Detections,
    group_of: dict[int, int],
    conf: float,
    match: float = 0.5,
    ceiling: float = CONFIRM_CEILING,
) -> Detections:
    """``native`` with each box scoring below ``ceiling`` raised to the best same-group ``zoomed`` box
    overlapping it (IoU >= ``match``), then only the boxes at ``conf`` or above, best first, each with its
    native score in ``data[NATIVE_CONFIDENCE]``. ``group_of`` maps a class id to its group (classes not in
    it are their own group)."""
    native_score = native.confidence.astype(np.float32)
    best = best_scores(native, zoomed, group_of, match)
    score = np.where(native_score < ceiling, np.maximum(native_score, best), native_score)
    keep = np.flatnonzero(score >= conf)
    out = native[keep]
    out.confidence = score[keep]
    out.data[NATIVE_CONFIDENCE] = native_score[keep]
    return out[np.argsort(-out.confidence, kind="stable")]


def stays(boxes: np.ndarray, groups: np.ndarray, at: np.ndarray, at_groups: np.ndarray) -> np.ndarray:
    """Which ``boxes`` (of ``groups``) lie where a box of ``at`` of their group is (IoU >= ``STAY_IOU``)."""
    if not len(boxes) or not len(at):
        return np.zeros(len(boxes), bool)
    same = (groups[:, None] == at_groups[None, :]) & (box_iou(boxes, at) >= STAY_IOU)
    return np.asarray(same.any(axis=1))


@dataclass
class Memory:
    """One stream's remembered confirmations: boxes with their class group, the zoomed pass's score and
    the frame time it was given; ``last`` is the frame time of the stream's last zoomed pass."""

    last: float = float("-inf")
    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def went_back(self, ts: float) -> bool:
        """Whether ``ts`` is before what this memory saw (a file replayed again, a clock set back)."""
        return ts < self.last or bool(len(self.ts) and ts < self.ts.max())

    def at(self, ts: float) -> Memory:
        """What is remembered at ``ts``: the confirmations at most ``REMEMBER_S`` old."""
        keep = ts - self.ts <= REMEMBER_S
        return Memory(self.last, self.xyxy[keep], self.group[keep], self.score[keep], self.ts[keep])

    def covers(self, boxes: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Which ``boxes`` (of ``groups``) stay where a remembered box of their group was."""
        return stays(boxes, groups, self.xyxy, self.group)

    def as_detections(self, class_of: dict[int, int]) -> Detections:
        """The remembered boxes as detections (a class of each group), for :func:`confirm`."""
        cls = np.array([class_of.get(int(g), -1 - int(g)) for g in self.group], np.int64)
        return Detections(self.xyxy, self.score, cls)

    def learn(self, ts: float, boxes: np.ndarray, groups: np.ndarray, scores: np.ndarray) -> None:
        """Remember ``boxes`` as the zoomed pass scored them at ``ts``, replacing what they cover and
        forgetting what is too old."""
        old = (ts - self.ts <= REMEMBER_S) & ~stays(self.xyxy, self.group, boxes, groups)
        self.xyxy = np.concatenate([self.xyxy[old], boxes.astype(np.float32)])
        self.group = np.concatenate([self.group[old], groups])
        self.score = np.concatenate([self.score[old], scores.astype(np.float32)])
        self.ts = np.concatenate([self.ts[old], np.full(len(boxes), ts)])
        self.last = ts


class ZoomBackend(WrappingBackend):
    """Wraps a backend: the whole frame at the native size, confirmed by ``zoomed`` (the same or a kindred
    model, same classes, loaded at a larger input size); module docstring."""

    def __init__(
        self,
        inner: InferenceBackend,
        zoomed: InferenceBackend,
        floor: float = CONFIRM_FLOOR,
        zoomed_by: str = "the same model",
        every_s: float = 10.0,
    ) -> None:
        if zoomed.imgsz <= inner.imgsz:
            raise ValueError(f"zoom_imgsz {zoomed.imgsz} must be larger than the model's imgsz {inner.imgsz}")
        if list(zoomed.class_names) != list(inner.class_names):
            raise ValueError("the zoomed pass's model must have the same classes, in the same order")
        super().__init__(inner, zoomed)
        self.zoomed = zoomed
        self.zoomed_by = zoomed_by  # what runs the zoomed pass, for reports
        self.every_s = every_s
        inner.conf = min(inner.conf, floor)  # candidates for the zoomed pass to confirm
        self.frames = self.zoomed_frames = 0  # frames seen / frames the zoomed pass was asked about
        self._memory: dict[str, Memory] = {}
        self._lock = threading.Lock()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoom")
        self._job: Future[None] | None = None  # the live service's zoomed pass in the background

    def _groups(self) -> tuple[dict[int, int], dict[int, int]]:
        """class id -> group, and group -> a class id of it."""
        group_of = {cls: g for g, members in enumerate(self.class_groups) for cls in members}
        return group_of, {g: members[0] for g, members in enumerate(self.class_groups) if members}

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        native = self.inner.infer(images)
        ask = [i for i, dets in enumerate(native) if unsure(dets)]
        zoomed = self._zoom(images, ask)
        self._count(len(images), len(ask))
        group_of, _ = self._groups()
        empty = Detections.empty()
        return [confirm(n, zoomed.get(i, empty), group_of, self.conf) for i, n in enumerate(native)]

    def infer_streams(
        self, images: Sequence[Image], sources: Sequence[tuple[str, float]], wait: bool = True
    ) -> list[Detections]:
        native = self.inner.infer(images)
        group_of, class_of = self._groups()
        with self._lock:
            for stream, ts in sources:
                memory = self._memory.get(stream)
                if memory is None or memory.went_back(ts):
                    self._memory[stream] = Memory()
            busy = self._job is not None and not self._job.done()
            ask = [] if busy else self._plan(native, sources, group_of)
        self._count(len(images), len(ask))
        if ask and not wait:  # live: the pass runs beside the next batches; later frames get its scores
            job = [(images[i].copy(), native[i], *sources[i]) for i in ask]  # the caller may draw on its own
            self._job = self._background.submit(self._learn_from, job, group_of)
        zoomed = self._zoom(images, ask) if wait else {}
        out = []
        with self._lock:
            for i, (dets, (stream, ts)) in enumerate(zip(native, sources, strict=True)):
                if i in zoomed:  # confirmed by the pass; what it said of each unsure box is remembered
                    self._learn(stream, ts, dets, zoomed[i], group_of)
                    out.append(confirm(dets, zoomed[i], group_of, self.conf))
                else:
                    remembered = self._memory[stream].at(ts).as_detections(class_of)
                    out.append(confirm(dets, remembered, group_of, self.conf, match=STAY_IOU))
        return out

    def _zoom(self, images: Sequence[Image], ask: list[int]) -> dict[int, Detections]:
        """The zoomed pass over ``images[i]`` for each ``i`` of ``ask``, by index."""
        return dict(zip(ask, self.zoomed.infer([images[i] for i in ask]), strict=True)) if ask else {}

    def _learn(
        self, stream: str, ts: float, native: Detections, zoomed: Detections, group_of: dict[int, int]
    ) -> None:
        """Remember what the zoomed pass said of each unsure box of ``native`` (under the lock)."""
        memory = self._memory.get(stream)
        if memory is None or memory.went_back(ts):
            return  # the stream started over while the pass ran: its answer is of another time
        low = native.confidence < CONFIRM_CEILING
        best = best_scores(native, zoomed, group_of, 0.5)
        memory.learn(ts, native.xyxy[low], groups(native.class_id[low], group_of), best[low])

    def _learn_from(self, job: list[tuple[Image, Detections, str, float]], group_of: dict[int, int]) -> None:
        """The background zoomed pass of the live service: run it, remember what it says."""
        try:
            answers = self.zoomed.infer([image for image, *_ in job])
        except Exception:  # a failed optional pass: the frames keep their native scores
            log.exception("the zoomed pass failed on %d frames; they keep the native scores", len(job))
            return
        with self._lock:
            for (_, native, stream, ts), zoomed in zip(job, answers, strict=True):
                self._learn(stream, ts, native, zoomed, group_of)

    def settle(self) -> None:
        """Wait for the background zoomed pass, if one runs (tests, benches, close)."""
        job = self._job
        if job is not None:
            job.result()

    def close(self) -> None:
        self._background.shutdown(wait=True)
        super().close()

    def _plan(
        self, native: Sequence[Detections], sources: Sequence[tuple[str, float]], group_of: dict[int, int]
    ) -> list[int]:
        """Which frames go to the zoomed pass: those with an unsure box that no remembered confirmation
        covers, at most one per stream and ``every_s``, and at most ``PER_BATCH`` per batch, the streams
        that waited longest first (streams started together would otherwise all ask at once)."""
        wanting: list[tuple[float, int, str]] = []
        for i, (dets, (stream, ts)) in enumerate(zip(native, sources, strict=True)):
            memory = self._memory[stream]
            if stream in {s for _, _, s in wanting} or not unsure(dets) or ts - memory.last < self.every_s:
                continue
            low = dets.confidence < CONFIRM_CEILING
            if memory.at(ts).covers(dets.xyxy[low], groups(dets.class_id[low], group_of)).all():
                continue
            wanting.append((memory.last, i, stream))
        wanting.sort()
        for _, i, stream in wanting[:PER_BATCH]:
            self._memory[stream].last = sources[i][1]
        return sorted(i for _, i, _ in wanting[:PER_BATCH])

    def _count(self, frames: int, zoomed: int) -> None:
        with self._lock:
            self.frames += frames
            self.zoomed_frames += zoomed

    def __repr__(self) -> str:
        return f"ZoomBackend({self.inner!r}, zoomed={self.zoomed!r}, every_s={self.every_s})"
