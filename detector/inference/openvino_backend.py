"""OpenVINO backend: an ultralytics OpenVINO export (``*_openvino_model/`` with ``model.xml``, ``model.bin``
and ``metadata.yaml``), a bare ``.xml`` IR, or an ``.onnx`` file; same pre- and post-processing as ONNX."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detector.inference.base import (
    BackendKind,
    Image,
    InferenceError,
    ModelLoadError,
    TensorYoloBackend,
    check_thresholds,
    default_threads,
    resolve_imgsz,
)


def _model_file(path: Path) -> Path:
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ModelLoadError(f"{path}: expected one OpenVINO .xml model in the folder, found {len(xmls)}")
        return xmls[0]
    if path.suffix.lower() not in (".xml", ".onnx") or not path.is_file():
        raise ModelLoadError(
            f"OpenVINO model not found: {path} (give the export folder, an .xml or an .onnx)"
        )
    return path


def _metadata(model_file: Path) -> dict[str, Any]:
    meta_file = model_file.parent / "metadata.yaml"
    if not meta_file.is_file():
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {meta_file}: {exc}") from exc
    return loaded if isinstance(loaded, dict) else {}


def _uint8_input(ov: Any, model: Any) -> Any:
    """Let the model take letterboxed BGR uint8 NHWC images: RGB order, float and /255 inside OpenVINO."""
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ColorFormat.BGR
    )
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_color(ColorFormat.RGB).convert_element_type(ov.Type.f32).scale(255.0)
    return ppp.build()


class OpenVinoBackend(TensorYoloBackend):
    """OpenVINO runtime on the CPU with the THROUGHPUT hint and ``threads`` inference threads.

    A model with dynamic height/width takes each frame in its smallest rectangle (a 16:9 frame as 640x384):
    it is compiled once per input shape met, batch 1, static (a static shape compiles to faster code), and
    at most ``MAX_SHAPES`` compiled shapes are kept. A fixed-shape model is compiled once as it is.
    """

    MAX_SHAPES: ClassVar[int] = 4

    name: ClassVar[BackendKind] = "openvino"

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
        model_file = _model_file(self.path)
        meta = _metadata(model_file)
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        try:
            model = core.read_model(str(model_file))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelLoadError(f"OpenVINO cannot read {model_file}: {exc}") from exc
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise ModelLoadError(f"{model_file}: expected an NCHW image input, got {shape}")
        self.stride = int(meta.get("stride", 32))
        batch, hdim, wdim = shape[0], shape[2], shape[3]
        fixed_hw = None if hdim.is_dynamic or wdim.is_dynamic else (hdim.get_length(), wdim.get_length())
        self.imgsz = resolve_imgsz(self.path, imgsz, fixed_hw, meta.get("imgsz"), self.stride)
        self.input_hw = fixed_hw
        self.dynamic_hw = fixed_hw is None
        # a dynamic batch becomes 1: the frames of a batch run as parallel asynchronous requests
        self.fixed_batch = 1 if batch.is_dynamic or self.dynamic_hw else batch.get_length()
        self._ov, self._core, self._model_file = ov, core, model_file
        self._base = model
        # THROUGHPUT: several single-threaded streams, one image each at a time. For a small model that
        # beats one image spread over every core (thread start-up and sync dominate); a batch of frames
        # from the inference service runs as parallel asynchronous requests.
        self._config = {
            props.inference_num_threads(): threads or default_threads(),
            hints.performance_mode(): hints.PerformanceMode.THROUGHPUT,
        }
        self._compiled: dict[tuple[int, int], tuple[Any, Any]] = {}  # (h, w) -> (request, queue)
        self._probe(meta, class_names, conf, iou, max_det)

    def _run(self, padded: list[Image]) -> list[npt.NDArray[np.float32]]:
        """Chunks of the model's batch size as parallel asynchronous requests (one chunk: synchronous).

        The compiled model takes the letterboxed BGR uint8 images as they are (NHWC): colour order,
        float conversion and scaling run inside OpenVINO (``_uint8_input``), not in numpy."""
        step = self.fixed_batch or len(padded)
        chunks = [self._pack(padded[k : k + step], step) for k in range(0, len(padded), step)]
        sizes = [min(step, len(padded) - k) for k in range(0, len(padded), step)]
        outs: list[npt.NDArray[np.float32] | None] = [None] * len(chunks)
        try:
            request, queue = self._compiled_for(padded[0].shape[0], padded[0].shape[1])
            if queue is None or len(chunks) == 1:
                for index, tensor in enumerate(chunks):
                    request.infer({0: tensor})
                    outs[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)
            else:

                def done(req: Any, index: int) -> None:
                    outs[index] = np.array(req.get_output_tensor(0).data, dtype=np.float32)

                queue.set_callback(done)
                for index, tensor in enumerate(chunks):
                    queue.start_async({0: tensor}, index)
                queue.wait_all()
        except ModelLoadError:
            raise
        except Exception as exc:  # OpenVINO's own RuntimeError types
            raise InferenceError(
                f"OpenVINO failed on {self.path.name} with {len(padded)} images: {exc}"
            ) from exc
        results: list[npt.NDArray[np.float32]] = []
        for size, out in zip(sizes, outs, strict=True):
            if out is None:
                raise InferenceError(f"OpenVINO returned no output for a batch of {size} images")
            results.extend(list(out)[:size])
        return results

    def _compiled_for(self, height: int, width: int) -> tuple[Any, Any]:
        """(request, async queue or None) of the model compiled for ``height`` x ``width`` inputs."""
        key = (height, width)
        if key in self._compiled:
            return self._compiled[key]
        ov = self._ov
        import openvino.properties as props

        model = self._base.clone()
        if model.inputs[0].get_partial_shape().is_dynamic:
            model.reshape({model.inputs[0]: ov.PartialShape([self.fixed_batch, 3, height, width])})
        try:
            compiled = self._core.compile_model(_uint8_input(ov, model), "CPU", self._config)
            requests = max(1, int(compiled.get_property(props.optimal_number_of_infer_requests())))
        except Exception as exc:  # OpenVINO's own RuntimeError types
            raise ModelLoadError(
                f"OpenVINO cannot compile {self._model_file} for {height}x{width} inputs: {exc}"
            ) from exc
        while len(self._compiled) >= self.MAX_SHAPES:
            self._compiled.pop(next(iter(self._compiled)))
        self._compiled[key] = (
            compiled.create_infer_request(),
            ov.AsyncInferQueue(compiled, requests) if requests > 1 else None,
        )
        return self._compiled[key]

    @staticmethod
    def _pack(chunk: list[Image], step: int) -> npt.NDArray[np.uint8]:
        """NHWC uint8, filled up to a fixed batch size with blank images (their results are dropped)."""
        batch = np.stack(chunk)
        if len(chunk) < step:
            batch = np.concatenate([batch, np.zeros((step - len(chunk), *batch.shape[1:]), np.uint8)])
        return batch

    def _forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """An NCHW RGB float batch in [0, 1] (the tensor contract of the other backends)."""
        images = (batch[:, ::-1].transpose(0, 2, 3, 1) * np.float32(255.0)).round().clip(0, 255)
        request, _ = self._compiled_for(batch.shape[2], batch.shape[3])
        try:
            request.infer({0: images.astype(np.uint8)})
            out = request.get_output_tensor(0).data
        except Exception as exc:  # OpenVINO's own RuntimeError types
            raise InferenceError(
                f"OpenVINO failed on {self.path.name} with input {batch.shape}: {exc}"
            ) from exc
        return np.array(out, dtype=np.float32)  # a copy: the request reuses its output buffer
