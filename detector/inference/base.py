"""The inference backend interface and the YOLO tensor pipeline shared by the ONNX and OpenVINO backends.

A backend takes a batch of BGR images and returns one :class:`~detector.contracts.detections.Detections` per
image, boxes in that image's pixels, ``data["class_name"]`` filled. Backends load their runtime in
``__init__`` (no import-time side effects) and are not thread-safe: one inference worker owns one backend.
"""

from __future__ import annotations

import ast
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections
from detector.contracts.errors import DetectorError
from detector.inference.letterbox import LetterboxInfo, letterbox, to_tensor
from detector.inference.nms import decode_end2end, decode_yolo

BackendKind = Literal["ultralytics", "onnx", "openvino"]
Image = npt.NDArray[np.uint8]


class InferenceError(DetectorError):
    """Inference failed."""


class ModelLoadError(InferenceError):
    """The model file is missing, unreadable, or does not match the configuration (classes, input size)."""


class InferenceInputError(InferenceError, ValueError):
    """An input image is not an HxWx3 uint8 BGR array."""


def check_images(images: Sequence[Image]) -> None:
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            shape = getattr(img, "shape", None)
            dtype = getattr(img, "dtype", type(img).__name__)
            raise InferenceInputError(
                f"image {i} must be an HxWx3 uint8 BGR array, got shape {shape} dtype {dtype}"
            )
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise InferenceInputError(f"image {i} is empty (shape {img.shape})")


def default_threads() -> int:
    return os.cpu_count() or 1


def parse_names(value: Any) -> list[str] | None:
    """Class names from model metadata: a dict ``{0: 'a', ...}`` / list, or their ``repr`` as a string."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, Mapping):
        try:
            return [str(value[k]) for k in sorted(value, key=int)]
        except (TypeError, ValueError):
            return None
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return None


def resolve_names(
    path: Path, given: Sequence[str] | None, from_model: Sequence[str] | None, nc: int
) -> list[str]:
    """The class names to report: the configured ones (checked against the model), else the model's."""
    if given is not None:
        names = [str(n) for n in given]
        if nc and len(names) != nc:
            raise ModelLoadError(
                f"{path}: the model predicts {nc} classes but {len(names)} class names are given ({names})"
            )
        return names
    if from_model is not None and (not nc or len(from_model) == nc):
        return list(from_model)
    return [str(i) for i in range(nc)]


def output_layout(path: Path, out_shape: Sequence[Any], meta_end2end: Any = None) -> tuple[bool, int]:
    """(end2end, class count or 0 if unknown) from a detection output shape ``(batch, 4 + nc, anchors)``
    or, for end-to-end models (NMS inside), ``(batch, k, 6)``."""
    if len(out_shape) != 3:
        raise ModelLoadError(f"{path}: expected a 3-D detection output, got shape {list(out_shape)}")
    channels, last = out_shape[1], out_shape[2]
    if isinstance(meta_end2end, str):
        meta_end2end = meta_end2end.strip().lower() == "true"
    end2end = bool(meta_end2end) if meta_end2end is not None else (last == 6 and channels != 6)
    if end2end:
        return True, 0
    if not isinstance(channels, int) or channels <= 4:
        raise ModelLoadError(f"{path}: output shape {list(out_shape)} is not a YOLO detection output")
    return False, channels - 4


def check_thresholds(path: Path, conf: float, iou: float, max_det: int) -> None:
    if not 0.0 <= conf <= 1.0 or not 0.0 < iou <= 1.0 or max_det < 1:
        raise ModelLoadError(
            f"{path}: need 0 <= conf <= 1, 0 < iou <= 1 and max_det >= 1, "
            f"got conf={conf} iou={iou} max_det={max_det}"
        )


def resolve_imgsz(
    path: Path, given: int | None, fixed_hw: tuple[int, int] | None, meta: Any, stride: int
) -> int:
    """The input size: a fixed-shape model's own (a different configured one is an error), else the
    configured one, else the model metadata's, else 640."""
    if fixed_hw is not None:
        size = max(fixed_hw)
        if given is not None and given != size:
            raise ModelLoadError(
                f"{path}: the model's input is fixed at {fixed_hw[0]}x{fixed_hw[1]}, not imgsz {given}"
            )
        return size
    if given is None:
        if isinstance(meta, str):
            try:
                meta = ast.literal_eval(meta)
            except (ValueError, SyntaxError):
                meta = None
        sizes = [meta] if isinstance(meta, int) else list(meta) if isinstance(meta, list | tuple) else []
        given = int(max(sizes)) if sizes else 640
    if given < stride or given % stride:
        raise ModelLoadError(
            f"{path}: imgsz {given} must be a positive multiple of the model stride {stride}"
        )
    return given


class InferenceBackend(ABC):
    """Batched object detection. ``infer`` returns one Detections per input image, in input order."""

    name: ClassVar[BackendKind]
    class_names: list[str]
    imgsz: int
    conf: float
    iou: float
    #: class-id groups scored as one (see ``nms.group_scores``), set by the model loader from the rule
    #: labels: classes that feed the same rule label form a group. Decoded by TensorYoloBackend only.
    class_groups: tuple[tuple[int, ...], ...] = ()

    @abstractmethod
    def infer(self, images: Sequence[Image]) -> list[Detections]: ...

    def infer_streams(
        self, images: Sequence[Image], sources: Sequence[tuple[str, float]], wait: bool = True
    ) -> list[Detections]:
        """``infer`` for stream frames, each with its ``(stream id, frame time)``. A backend that keeps
        state per stream overrides it (the zoomed pass's memory, detector/inference/zoom.py); ``wait=False``
        (the live service) lets it do slower, optional work in the background instead of in this call."""
        return self.infer(images)

    def warmup(self) -> None:
        """Run once on a grey frame so the first real call is not the slow one."""
        self.infer([np.full((self.imgsz, self.imgsz, 3), 114, np.uint8)])

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes free themselves
        """Release the runtime (no-op by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(imgsz={self.imgsz}, classes={len(self.class_names)})"


class WrappingBackend(InferenceBackend):
    """A backend made of others (a tile pass, a zoomed pass): it takes the first one's classes, size and
    thresholds, and hands class groups, warm-up and close to every one of them."""

    def __init__(self, inner: InferenceBackend, *others: InferenceBackend) -> None:
        self.inner, self.parts = inner, (inner, *others)
        self.class_names = inner.class_names
        self.imgsz, self.conf, self.iou = inner.imgsz, inner.conf, inner.iou
        self.name = inner.name  # type: ignore[misc]

    @property
    def class_groups(self) -> tuple[tuple[int, ...], ...]:
        return self.inner.class_groups

    @class_groups.setter
    def class_groups(self, value: tuple[tuple[int, ...], ...]) -> None:
        for part in self.parts:
            part.class_groups = value

    def warmup(self) -> None:
        for part in self.parts:
            part.warmup()

    def close(self) -> None:
        for part in self.parts:
            part.close()


class TensorYoloBackend(InferenceBackend):
    """Letterbox -> NCHW float tensor -> runtime -> YOLO decode + NMS -> boxes in original pixels.

    Subclasses load the runtime, set the attributes below and implement :meth:`_forward`.
    """

    path: Path  # the model file or folder
    input_hw: tuple[int, int] | None = None  # a fixed (height, width) input; None: square imgsz
    fixed_batch: int | None = None  # None: the model takes any batch size
    dynamic_hw: bool = False  # the model takes any (stride-multiple) height and width
    stride: int = 32
    end2end: bool = False  # the model's output is already NMS-ed (k, 6) rows
    num_classes: int = 0
    max_det: int = 300

    @abstractmethod
    def _forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the model on an NCHW float32 batch; returns the first output, batch first."""

    def _probe(
        self,
        meta: Mapping[str, Any],
        class_names: Sequence[str] | None,
        conf: float,
        iou: float,
        max_det: int,
    ) -> None:
        """The end of a subclass's ``__init__`` (runtime loaded, ``path``, ``imgsz``, ``input_hw`` and
        ``fixed_batch`` set): one blank run gives the true output layout and warms the runtime; class names
        come from the configuration (checked against the model) or the model's metadata."""
        self.conf, self.iou, self.max_det = conf, iou, max_det
        hw = self.input_hw or (self.imgsz, self.imgsz)
        probe = self._forward(np.zeros((self.fixed_batch or 1, 3, *hw), np.float32))
        self.end2end, nc = output_layout(self.path, probe.shape, meta.get("end2end"))
        self.class_names = resolve_names(self.path, class_names, parse_names(meta.get("names")), nc)
        self.num_classes = len(self.class_names) if self.end2end else nc

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        check_images(images)
        if not images:
            return []
        # A model that takes any height/width gets each frame in its smallest stride-multiple rectangle
        # (ultralytics' ``auto`` letterbox: a 16:9 frame runs as 640x384, not 640x640); frames whose
        # inputs come out the same shape run together.
        target = self.input_hw or self.imgsz
        boxed = [letterbox(img, target, self.stride, self.dynamic_hw) for img in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (padded, _) in enumerate(boxed):
            groups.setdefault(padded.shape, []).append(index)
        outputs: list[npt.NDArray[np.float32] | None] = [None] * len(boxed)
        for members in groups.values():
            for index, raw in zip(members, self._run([boxed[i][0] for i in members]), strict=True):
                outputs[index] = raw
        results = []
        for out, (_, info) in zip(outputs, boxed, strict=True):
            if out is None:  # not reached: zip(strict=True) above checks _run's count
                raise InferenceError(f"{self.name} returned no output for one of {len(boxed)} frames")
            results.append(self._decode(out, info))
        return results

    def _run(self, padded: list[Image]) -> list[npt.NDArray[np.float32]]:
        if self.fixed_batch is None:
            return list(self._forward(to_tensor(padded)))
        outs: list[npt.NDArray[np.float32]] = []
        step = self.fixed_batch
        for start in range(0, len(padded), step):
            chunk = padded[start : start + step]
            tensor = to_tensor(chunk)
            if len(chunk) < step:  # fill a fixed-size batch with blank images and discard their results
                filler = np.zeros((step - len(chunk), *tensor.shape[1:]), np.float32)
                tensor = np.concatenate([tensor, filler])
            outs.extend(list(self._forward(tensor))[: len(chunk)])
        return outs

    def _decode(self, output: npt.NDArray[np.float32], info: LetterboxInfo) -> Detections:
        if self.end2end:
            xyxy, scores, cls = decode_end2end(output, self.conf, self.max_det)
        else:
            xyxy, scores, cls = decode_yolo(
                output, self.num_classes, self.conf, self.iou, self.max_det, self.class_groups
            )
        if len(xyxy) == 0:
            return Detections.empty()
        return Detections.from_arrays(info.to_original(xyxy), scores, cls, self.class_names)
