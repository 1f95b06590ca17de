"""Decoding YOLO detection outputs and non-maximum suppression, in numpy.

Mirrors ultralytics' ``non_max_suppression`` for one image with ``multi_label=False``: candidates whose best
class score is ``> conf``, boxes ``cxcywh -> xyxy``, at most ``max_nms`` candidates by score, greedy NMS per
class (a box is suppressed when its IoU with a kept box of the same class is ``> iou``), ``max_det`` kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import box_iou

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
MAX_NMS = 30000


def nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou: float) -> IntArray:
    """Indices of the boxes kept by greedy NMS, highest score first (ties keep input order)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float32).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"nms needs one score per box, got {len(b)} boxes and {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        overlaps = box_iou(b[i : i + 1], b[rest])[0]
        order = rest[overlaps <= iou]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, class_ids: npt.ArrayLike, iou: float
) -> IntArray:
    """Class-wise NMS: boxes of different classes never suppress each other. Kept indices by score."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float32).reshape(-1)
    c = np.asarray(class_ids, np.int64).reshape(-1)
    if not (len(b) == len(s) == len(c)):
        raise ValueError(
            f"batched_nms needs equal lengths, got {len(b)} boxes, {len(s)} scores, {len(c)} classes"
        )
    kept = [np.flatnonzero(c == cls)[nms(b[c == cls], s[c == cls], iou)] for cls in np.unique(c)]
    if not kept:
        return np.zeros((0,), np.int64)
    idx = np.concatenate(kept)
    return idx[np.argsort(-s[idx], kind="stable")].astype(np.int64)


def cxcywh_to_xyxy(boxes: npt.ArrayLike) -> FloatArray:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    half = b[:, 2:] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def group_scores(cls_scores: FloatArray, groups: Sequence[Sequence[int]]) -> FloatArray:
    """Per-anchor class scores ``(nc, anchors)`` where each group of classes that answer one question (car,
    truck, bus and motorcycle all answer "a vehicle?") speaks with one voice: the group's most likely class
    gets the probability that the object is any of them (noisy-OR, ``1 - prod(1 - p)``), the others 0.

    A parked SUV that a COCO model scores car 0.30 / truck 0.30 is a vehicle at 0.51, not at 0.30.
    """
    out = cls_scores.copy()
    for group in groups:
        if len(group) < 2:
            continue
        idx = np.asarray(group, np.int64)
        sub = cls_scores[idx]
        anyof = 1.0 - np.prod(1.0 - np.clip(sub, 0.0, 1.0), axis=0)
        top = idx[sub.argmax(axis=0)]
        out[idx] = 0.0
        out[top, np.arange(out.shape[1])] = anyof
    return out


def decode_yolo(
    output: npt.ArrayLike,
    num_classes: int,
    conf: float,
    iou: float,
    max_det: int = 300,
    groups: Sequence[Sequence[int]] = (),
) -> tuple[FloatArray, FloatArray, IntArray]:
    """One image's raw YOLOv8-style output ``(4 + nc [+ extra], anchors)`` -> (xyxy, scores, class ids).

    Boxes stay in model-input pixels. ``groups``: classes scored and suppressed together (see
    :func:`group_scores`); NMS treats a group as one class, so one object keeps one box.
    """
    pred = np.asarray(output, np.float32)
    if pred.ndim != 2 or pred.shape[0] < 4 + num_classes:
        raise ValueError(f"expected a (4 + {num_classes}, anchors) output, got shape {pred.shape}")
    cls_scores = pred[4 : 4 + num_classes]
    if groups:
        cls_scores = group_scores(cls_scores, groups)
    best = cls_scores.max(axis=0)
    cand = np.flatnonzero(best > conf)
    if cand.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    scores = best[cand]
    class_ids = cls_scores[:, cand].argmax(axis=0).astype(np.int64)
    boxes = cxcywh_to_xyxy(pred[:4, cand].T)
    if cand.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
    nms_ids = class_ids
    if groups:
        rep = np.arange(max(num_classes, 1), dtype=np.int64)
        for group in groups:
            rep[np.asarray(group, np.int64)] = min(group)
        nms_ids = rep[class_ids]
    keep = batched_nms(boxes, scores, nms_ids, iou)[:max_det]
    return boxes[keep], scores[keep], class_ids[keep]


def decode_end2end(
    output: npt.ArrayLike, conf: float, max_det: int = 300
) -> tuple[FloatArray, FloatArray, IntArray]:
    """One image's output of an end-to-end model (NMS inside): rows of x1, y1, x2, y2, score, class."""
    pred = np.asarray(output, np.float32)
    if pred.ndim != 2 or pred.shape[1] < 6:
        raise ValueError(f"expected a (detections, 6) output, got shape {pred.shape}")
    pred = pred[pred[:, 4] > conf][:max_det]
    return pred[:, :4].copy(), pred[:, 4].copy(), pred[:, 5].astype(np.int64)
