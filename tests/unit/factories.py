"""Test factories: detections and frame sequences without a model."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from detector.config import load_config_text
from detector.contracts.detections import Detections
from detector.rules.base import ViolationUpdate
from detector.rules.engine import RuleEngine

CLASSES = ("vehicle", "stall", "litter", "structure")
FRAME = (1000, 600)

Box = Sequence[float]


def make_detections(
    boxes: Sequence[Box] = (),
    scores: float | Sequence[float] = 0.9,
    classes: str | Sequence[str] = "vehicle",
    tracker_ids: Sequence[int] | None = None,
    class_names: Sequence[str] = CLASSES,
) -> Detections:
    """Detections of ``boxes`` (pixel xyxy); one score / class for all, or one per box.

    Class names not in ``class_names`` get ids after them, in order of first use.
    """
    n = len(boxes)
    score_list = [float(scores)] * n if isinstance(scores, int | float) else [float(s) for s in scores]
    class_list = [classes] * n if isinstance(classes, str) else list(classes)
    if len(score_list) != n or len(class_list) != n:
        raise ValueError(f"make_detections: {n} boxes, {len(score_list)} scores, {len(class_list)} classes")
    names = list(class_names)
    for name in class_list:
        if name not in names:
            names.append(name)
    dets = Detections.from_arrays(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(score_list, np.float32),
        [names.index(c) for c in class_list],
        names,
    )
    if tracker_ids is not None:
        dets.tracker_id = np.asarray(tracker_ids, np.int64)
    return dets


def shifted(box: Box, dx: float = 0.0, dy: float = 0.0) -> list[float]:
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


def run(
    engine: RuleEngine,
    times: Iterable[float],
    scene: Callable[[float], Detections],
    frame_size: tuple[int, int] = FRAME,
) -> list[ViolationUpdate]:
    """Step ``engine`` over sampled frames at ``times``; ``scene(ts)`` gives each frame's detections."""
    out: list[ViolationUpdate] = []
    for ts in times:
        out.extend(engine.step(scene(ts), float(ts), frame_size))
    return out


def events(updates: Iterable[ViolationUpdate]) -> list[tuple[str, float]]:
    return [(u.event, u.ts) for u in updates]


def every(start: float, stop: float, step: float = 2.0) -> list[float]:
    """Sample times ``start, start+step, ...`` up to and including ``stop``."""
    count = round((stop - start) / step) + 1
    return [start + i * step for i in range(count) if start + i * step <= stop + 1e-9]


ALL_RULES = "[illegal_parking, street_vending, illegal_structure, unclean_road]"


def rule_models_config(
    global_rm: str = "{}", stream_rm: str = "{}", rules: str = ALL_RULES, model: str = "", extra: str = ""
) -> Any:
    """A one-stream config with global and per-stream ``rule_models`` and one zone enforcing ``rules``."""
    text = (
        "version: 1\n"
        f"{model}"
        f"rule_models: {global_rm}\n"
        "streams:\n"
        "  - id: cam\n"
        "    url: a.mp4\n"
        f"    rule_models: {stream_rm}\n"
        f"{extra}"
        f"    zones: [{{id: z, polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], rules: {rules}}}]\n"
    )
    return load_config_text(text, environ={}).config
