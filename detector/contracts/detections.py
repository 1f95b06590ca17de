"""The one representation of detections that every stage takes and returns.

Modelled on roboflow/supervision's ``Detections``: parallel numpy arrays, shapes validated
in ``__post_init__``, boolean-mask or index selection returning a new object.
Boxes are pixel ``xyxy`` in the frame they were detected in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# ``data`` key: a box's score from its model's own pass, before a zoomed pass confirmed it
# (detector.inference.zoom). Vetoes judge by it; ``confidence`` carries the confirmed score.
NATIVE_CONFIDENCE = "native_confidence"


def _check_shape(name: str, arr: np.ndarray, expected: tuple[int | None, ...]) -> None:
    ok = arr.ndim == len(expected) and all(
        e is None or a == e for a, e in zip(arr.shape, expected, strict=True)
    )
    if not ok:
        shown = tuple("n" if e is None else e for e in expected)
        raise ValueError(f"Detections.{name} must have shape {shown}, got {arr.shape}")


@dataclass
class Detections:
    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray
    tracker_id: IntArray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = (
            np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
            if np.size(self.xyxy) == 0
            else (np.asarray(self.xyxy, dtype=np.float32))
        )
        n = len(self.xyxy)
        _check_shape("xyxy", self.xyxy, (n, 4))
        self.confidence = np.asarray(self.confidence, dtype=np.float32)
        _check_shape("confidence", self.confidence, (n,))
        self.class_id = np.asarray(self.class_id, dtype=np.int64)
        _check_shape("class_id", self.class_id, (n,))
        if self.tracker_id is not None:
            self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64)
            _check_shape("tracker_id", self.tracker_id, (n,))
        for key, value in list(self.data.items()):
            value = np.asarray(value)
            if len(value) != n:
                raise ValueError(f"Detections.data[{key!r}] must have length {n}, got {len(value)}")
            self.data[key] = value

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int64),
            data={"class_name": np.zeros((0,), dtype=object)},
        )

    @classmethod
    def from_arrays(
        cls, xyxy: Any, confidence: Any, class_id: Any, class_names: Sequence[str] | None = None
    ) -> Detections:
        """Build from raw arrays; ``class_names[class_id]`` fills ``data['class_name']``."""
        cid = np.asarray(class_id, dtype=np.int64).reshape(-1)
        table = list(class_names or [])
        names = np.array(
            [table[int(i)] if 0 <= int(i) < len(table) else str(int(i)) for i in cid], dtype=object
        )
        return cls(
            xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4),
            confidence=np.asarray(confidence, np.float32).reshape(-1),
            class_id=cid,
            data={"class_name": names},
        )

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """From one ``ultralytics.engine.results.Results`` (detection task)."""
        boxes = result.boxes
        names = result.names
        cid = boxes.cls.cpu().numpy().astype(np.int64)
        return cls.from_arrays(
            boxes.xyxy.cpu().numpy(),
            boxes.conf.cpu().numpy(),
            cid,
            [names[i] for i in range(len(names))] if isinstance(names, dict) else list(names),
        )

    @classmethod
    def merge(cls, items: Sequence[Detections]) -> Detections:
        items = [d for d in items if len(d)]
        if not items:
            return cls.empty()
        keys = set(items[0].data)
        for d in items[1:]:
            keys &= set(d.data)
        tids = [d.tracker_id for d in items]
        return cls(
            xyxy=np.concatenate([d.xyxy for d in items]),
            confidence=np.concatenate([d.confidence for d in items]),
            class_id=np.concatenate([d.class_id for d in items]),
            tracker_id=None
            if any(t is None for t in tids)
            else np.concatenate([t for t in tids if t is not None]),
            data={k: np.concatenate([d.data[k] for d in items]) for k in keys},
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        if isinstance(index, int | np.integer):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    def __iter__(self) -> Iterator[Detections]:
        for i in range(len(self)):
            yield self[i]

    @property
    def class_name(self) -> np.ndarray:
        names = self.data.get("class_name")
        if names is None:
            return np.array([str(c) for c in self.class_id], dtype=object)
        return names

    @property
    def area(self) -> FloatArray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        out: FloatArray = (wh[:, 0] * wh[:, 1]).astype(np.float32)
        return out

    @property
    def bottom_center(self) -> FloatArray:
        """Anchor used for zone tests: the point where the object touches the ground."""
        x = (self.xyxy[:, 0] + self.xyxy[:, 2]) / 2
        return np.stack([x, self.xyxy[:, 3]], axis=1).astype(np.float32)

    @property
    def center(self) -> FloatArray:
        return ((self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2).astype(np.float32)

    def with_names(self, class_names: Sequence[str]) -> Detections:
        names = np.array(
            [class_names[i] if 0 <= i < len(class_names) else str(i) for i in self.class_id], dtype=object
        )
        data = dict(self.data)
        data["class_name"] = names
        return Detections(self.xyxy, self.confidence, self.class_id, self.tracker_id, data)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU between boxes ``a (n,4)`` and ``b (m,4)`` in xyxy."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
