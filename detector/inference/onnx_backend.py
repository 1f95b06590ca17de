"""ONNX Runtime backend for YOLO detection models exported by ultralytics (or shaped like them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detector.inference.base import (
    BackendKind,
    InferenceError,
    ModelLoadError,
    TensorYoloBackend,
    check_thresholds,
    default_threads,
    resolve_imgsz,
)


class OnnxBackend(TensorYoloBackend):
    """ONNX Runtime on the CPU.

    A model with a fixed batch size is run in chunks of that size; one with a dynamic batch gets the whole
    list stacked. ``threads`` sets ``intra_op_num_threads`` (default: all CPU cores).
    """

    name: ClassVar[BackendKind] = "onnx"

    def __init__(
        self,
        path: str | Path,
        class_names: Sequence[str] | None = None,
        imgsz: int | None = None,
        conf: float = 0.25,
        iou: float = 0.5,
        threads: int | None = None,
        *,
        max_det: int = 300,
    ) -> None:
        self.path = Path(path)
        check_thresholds(self.path, conf, iou, max_det)
        if not self.path.is_file():
            raise ModelLoadError(f"ONNX model not found: {self.path}")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, undocumented exception types
            raise ModelLoadError(f"cannot load ONNX model {self.path}: {exc}") from exc
        inp = self._session.get_inputs()[0]
        if len(inp.shape) != 4:
            raise ModelLoadError(f"{self.path}: expected an NCHW image input, got shape {inp.shape}")
        self._input_name: str = inp.name
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self._output_name: str = self._session.get_outputs()[0].name
        batch, _, h, w = inp.shape
        meta: dict[str, Any] = dict(self._session.get_modelmeta().custom_metadata_map)
        self.stride = int(meta.get("stride", 32))
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        fixed_hw = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
        self.dynamic_hw = fixed_hw is None
        self.input_hw = fixed_hw
        self.imgsz = resolve_imgsz(self.path, imgsz, fixed_hw, meta.get("imgsz"), self.stride)
        self._probe(meta, class_names, conf, iou, max_det)  # exports name their dims: run once to see

    def _forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        try:
            out = self._session.run(
                [self._output_name], {self._input_name: batch.astype(self._input_dtype, copy=False)}
            )[0]
        except Exception as exc:  # onnxruntime's own exception types
            raise InferenceError(
                f"ONNX Runtime failed on {self.path.name} with input {batch.shape}: {exc}"
            ) from exc
        return np.asarray(out, dtype=np.float32)
