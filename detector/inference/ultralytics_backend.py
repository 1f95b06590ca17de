"""ultralytics backend: ``YOLO(path).predict`` on any model file ultralytics loads (.pt, .onnx, OpenVINO dir).

It is the reference the tensor backends are checked against, and the naive baseline in ``bench/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from detector.contracts.detections import Detections
from detector.contracts.ultralytics_env import prepare_offline
from detector.inference.base import (
    BackendKind,
    Image,
    InferenceBackend,
    InferenceError,
    ModelLoadError,
    check_images,
    check_thresholds,
    parse_names,
    resolve_imgsz,
    resolve_names,
)

_offline_ready = False


def prepare_ultralytics_offline() -> None:
    """Make ultralytics run offline before it is imported (``detector.contracts.ultralytics_env``).

    Once per process: a second call would only warn that ultralytics is already imported.
    """
    global _offline_ready
    if _offline_ready:
        return
    try:
        prepare_offline()
    except Exception as exc:  # its own OfflineSetupError, or OSError placing fonts
        raise ModelLoadError(f"cannot prepare ultralytics to run offline: {exc}") from exc
    _offline_ready = True


class UltralyticsBackend(InferenceBackend):
    """``YOLO(path).predict(images, imgsz=, conf=, iou=, verbose=False)``; a batch is passed whole."""

    name: ClassVar[BackendKind] = "ultralytics"

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
        device: str = "cpu",
    ) -> None:
        self.path = Path(path)
        check_thresholds(self.path, conf, iou, max_det)
        if not self.path.exists():
            raise ModelLoadError(f"model not found: {self.path}")
        prepare_ultralytics_offline()
        if threads:
            import torch

            torch.set_num_threads(threads)  # process-wide: the torch backend owns the process's torch pool
        from ultralytics.models import YOLO

        try:
            self._model: Any = YOLO(str(self.path), task="detect")
        except (
            Exception
        ) as exc:  # ultralytics raises many kinds (FileNotFoundError, KeyError, RuntimeError...)
            raise ModelLoadError(f"ultralytics cannot load {self.path}: {exc}") from exc
        model_names = parse_names(self._model.names)
        self.class_names = resolve_names(self.path, class_names, model_names, len(model_names or []))
        train_args = (getattr(self._model, "ckpt", None) or {}).get("train_args", {})
        self.imgsz = resolve_imgsz(self.path, imgsz, None, train_args.get("imgsz"), 32)
        self.conf, self.iou, self.max_det, self.device = conf, iou, max_det, device

    def infer(self, images: Sequence[Image]) -> list[Detections]:
        check_images(images)
        if not images:
            return []
        try:
            results = self._model.predict(
                list(images),
                imgsz=self.imgsz,
                conf=self.conf,
                iou=self.iou,
                max_det=self.max_det,
                device=self.device,
                verbose=False,
            )
        except Exception as exc:  # surface any runtime failure as ours
            raise InferenceError(f"ultralytics predict failed on {self.path.name}: {exc}") from exc
        return [Detections.from_ultralytics(r).with_names(self.class_names) for r in results]
