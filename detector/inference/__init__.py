"""Detection backends behind one interface, chosen by name (``onnx`` | ``ultralytics`` | ``openvino``).

Importing this package imports numpy only: each backend imports its runtime in its constructor.

    backend = load_backend("onnx", "models/citywatch-synth-1.0.0.onnx", ["vehicle", "stall", "litter",
                           "structure"], 320, threads=2)
    detections = backend.infer([frame.image for frame in frames])  # one Detections per image
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from detector.inference.base import (
    BackendKind,
    InferenceBackend,
    InferenceError,
    InferenceInputError,
    ModelLoadError,
)
from detector.inference.onnx_backend import OnnxBackend
from detector.inference.openvino_backend import OpenVinoBackend
from detector.inference.ultralytics_backend import UltralyticsBackend


class BackendFactory(Protocol):
    def __call__(
        self,
        path: str | Path,
        class_names: Sequence[str] | None = None,
        imgsz: int | None = None,
        conf: float = 0.25,
        iou: float = 0.5,
        threads: int | None = None,
        *,
        max_det: int = 300,
    ) -> InferenceBackend: ...


#: the one map from backend name to class
BACKENDS: dict[BackendKind, BackendFactory] = {
    "onnx": OnnxBackend,
    "ultralytics": UltralyticsBackend,
    "openvino": OpenVinoBackend,
}


def load_backend(
    kind: BackendKind | str,
    path: str | Path,
    class_names: Sequence[str] | None,
    imgsz: int | None,
    conf: float = 0.25,
    iou: float = 0.5,
    threads: int | None = None,
    *,
    max_det: int = 300,
) -> InferenceBackend:
    """Load the model at ``path`` with the named backend.

    ``class_names`` (the manifest's) must match the model's class count; None takes the model's own names.
    ``imgsz`` None takes the model's (fixed input or metadata). ``threads`` None uses every CPU core.
    Raises :class:`ModelLoadError` for an unknown backend or a model that cannot be loaded.
    """
    factory = BACKENDS.get(kind)  # type: ignore[arg-type]
    if factory is None:
        raise ModelLoadError(f"unknown inference backend {kind!r}: choose one of {', '.join(BACKENDS)}")
    return factory(path, class_names, imgsz, conf, iou, threads, max_det=max_det)


__all__ = [
    "BACKENDS",
    "BackendKind",
    "InferenceBackend",
    "InferenceError",
    "InferenceInputError",
    "ModelLoadError",
    "OnnxBackend",
    "OpenVinoBackend",
    "UltralyticsBackend",
    "load_backend",
]
