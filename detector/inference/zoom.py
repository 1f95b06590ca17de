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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.contracts.detections import NATIVE_CONFIDENCE, Detections, box_iou
from detector.inference.base import Image, InferenceBackend, WrappingBackend

CONFIRM_FLOOR = 0.2  # the native pass keeps boxes down to this score for the zoomed pass to confirm
CONFIRM_CEILING = 0.5  # a native box at this score or above is sure enough: not asked about


def unsure(dets: Detections, ceiling: float = CONFIRM_CEILING) -> bool:
    """Whether the native pass has a box the zoomed pass should confirm (one scoring below ``ceiling``)."""
    return bool(len(dets)) and bool((dets.confidence < ceiling).any())


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
    if not len(native):
        return Detections(
            native.xyxy,
            native.confidence,
            native.class_id,
            native.tracker_id,
            native.data | {NATIVE_CONFIDENCE: native.confidence},
        )
    native_score = native.confidence.astype(np.float32)
    score = native_score.copy()
    if len(zoomed):
        ng = np.array([group_of.get(int(c), -1 - int(c)) for c in native.class_id], np.int64)
        zg = np.array([group_of.get(int(c), -1 - int(c)) for c in zoomed.class_id], np.int64)
        same = (ng[:, None] == zg[None, :]) & (box_iou(native.xyxy, zoomed.xyxy) >= match)
        best = np.where(same, zoomed.confidence[None, :], 0.0).max(axis=1).astype(np.float32)
        score = np.where(score < ceiling, np.maximum(score, best), score)
    keep = np.flatnonzero(score >= conf)
    out = native[keep]
    out.confidence = score[keep]
    out.data[NATIVE_CONFIDENCE] = native_score[keep]
    return out[np.argsort(-out.confidence, kind="stable")]


class ZoomBackend(WrappingBackend):
    """Wraps a backend: the whole frame at the native size, confirmed by ``zoomed`` (the same or a kindred
    model, same classes, loaded at a larger input size); module docstring."""

    def __init__(
        self,
        inner: InferenceBackend,
        zoomed: InferenceBackend,
        floor: float = CONFIRM_FLOOR,
        zoomed_by: str = "the same model",
    ) -> None:
        if zoomed.imgsz <= inner.imgsz:
            raise ValueError(f"zoom_imgsz {zoomed.imgsz} must be larger than the model's imgsz {inner.imgsz}")
        if list(zoomed.class_names) != list(inner.class_names):
            raise ValueError("the zoomed pass's model must have the same classes, in the same order")
        super().__init__(inner, zoomed)
        self.zoomed = zoomed
        self.zoomed_by = zoomed_by  # what runs the zoomed pass, for reports
        inner.conf = min(inner.conf, floor)  # candidates for the zoomed pass to confirm
        self.frames = self.zoomed_frames = 0  # frames seen / frames the zoomed pass was asked about

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        native = self.inner.infer(images)
        ask = [i for i, dets in enumerate(native) if unsure(dets)]
        zoomed = dict(zip(ask, self.zoomed.infer([images[i] for i in ask]), strict=True)) if ask else {}
        self.frames += len(images)
        self.zoomed_frames += len(ask)
        group_of = {cls: g for g, members in enumerate(self.class_groups) for cls in members}
        empty = Detections.empty()
        return [confirm(n, zoomed.get(i, empty), group_of, self.conf) for i, n in enumerate(native)]

    def __repr__(self) -> str:
        return f"ZoomBackend({self.inner!r}, zoomed={self.zoomed!r})"
