"""Inference backends on models built here (no downloads).

``ColourBlobs`` is a tiny torch module with a YOLOv8-shaped output ``(batch, 4 + 3, anchors)``: one anchor per
8x8 cell, class scores from how strongly red / green / blue dominates the cell, boxes around the cell. It
gives real, distinct detections, so the ONNX and OpenVINO backends can be checked box for box against
ultralytics running the same ONNX file. A real YOLOv8n (random weights) checks the ultralytics export layout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch

from detector.contracts.detections import Detections
from detector.inference import (
    BACKENDS,
    InferenceBackend,
    InferenceInputError,
    ModelLoadError,
    OnnxBackend,
    load_backend,
)

NAMES = ["vehicle", "stall", "litter"]
RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # BGR


class ColourBlobs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = torch.nn.functional.avg_pool2d(x, 8)
        r, g, b = cells[:, 0], cells[:, 1], cells[:, 2]
        gh, gw = cells.shape[2], cells.shape[3]
        ys = ((torch.arange(gh, dtype=x.dtype) + 0.5) * 8).view(1, gh, 1).expand_as(r)
        xs = ((torch.arange(gw, dtype=x.dtype) + 0.5) * 8).view(1, 1, gw).expand_as(r)
        wobble = 0.3 * torch.sin(0.7 * xs + 1.3 * ys)  # no two anchors score the same: no NMS ties
        dominance = torch.stack([r - (g + b) / 2, g - (r + b) / 2, b - (r + g) / 2], 1)
        scores = torch.sigmoid(8 * (dominance - 0.3) + wobble.unsqueeze(1))
        size = 20 + 8 * cells.mean(1)
        boxes = torch.stack([xs + 3 * (r - 0.5), ys + 3 * (g - 0.5), size, size * 0.8], 1)
        return torch.cat([boxes, scores], 1).flatten(2)


def export_blobs(path: Path, batch: int | None, dynamic_hw: bool, imgsz: int = 64) -> Path:
    axes: dict[str, dict[int, str]] = {"images": {}, "output0": {}}
    if batch is None:
        axes["images"][0] = axes["output0"][0] = "batch"
    if dynamic_hw:
        axes["images"].update({2: "height", 3: "width"})
        axes["output0"][2] = "anchors"
    dummy = torch.zeros(batch or 1, 3, imgsz, imgsz)
    torch.onnx.export(
        ColourBlobs(), (dummy,), str(path), input_names=["images"], output_names=["output0"],
        opset_version=17, dynamo=False, dynamic_axes=axes,
    )  # fmt: skip
    model = onnx.load(str(path))
    meta = {
        "names": repr(dict(enumerate(NAMES))),
        "stride": "8",
        "imgsz": f"[{imgsz}, {imgsz}]",
        "task": "detect",
        "batch": str(batch or 1),
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "fixed": export_blobs(d / "blobs-b1.onnx", batch=1, dynamic_hw=False),
        "fixed2": export_blobs(d / "blobs-b2.onnx", batch=2, dynamic_hw=False),
        "dynamic": export_blobs(d / "blobs-dyn.onnx", batch=None, dynamic_hw=True),
    }


def scene(h: int, w: int, rects: list[tuple[int, int, int, int, tuple[int, int, int]]]) -> np.ndarray:
    img = np.full((h, w, 3), 40, np.uint8)
    for x1, y1, x2, y2, colour in rects:
        img[y1:y2, x1:x2] = colour
    return img


IMAGES = {
    "wide": scene(97, 160, [(20, 10, 70, 50, RED), (100, 40, 150, 85, GREEN), (120, 5, 150, 30, BLUE)]),
    "tall": scene(120, 80, [(10, 50, 60, 100, RED)]),
    "square": scene(64, 64, [(8, 8, 40, 40, GREEN)]),
    "big": scene(360, 640, [(40, 200, 240, 340, BLUE), (400, 20, 600, 160, RED)]),
}


def by_score(d: Detections) -> np.ndarray:
    order = np.argsort(-d.confidence, kind="stable")
    return np.column_stack([d.xyxy[order], d.confidence[order], d.class_id[order]])


def assert_same(a: Detections, b: Detections, atol: float = 1e-3) -> None:
    assert len(a) == len(b), f"{len(a)} vs {len(b)} detections"
    np.testing.assert_allclose(by_score(a), by_score(b), atol=atol)


@pytest.fixture(scope="module")
def ultralytics_on(models: dict[str, Path]) -> dict[str, InferenceBackend]:
    pytest.importorskip("ultralytics")
    return {
        k: load_backend("ultralytics", models[k], None, 64, conf=0.25, iou=0.5) for k in ("fixed", "dynamic")
    }


# ------------------------------------------------------------------------------------------ ONNX
@pytest.mark.parametrize("kind", ["fixed", "dynamic"])  # ultralytics feeds fixed-batch-2 models one image
@pytest.mark.parametrize("image", list(IMAGES))
def test_onnx_matches_ultralytics(
    models: dict[str, Path], ultralytics_on: dict[str, InferenceBackend], kind: str, image: str
) -> None:
    ours = load_backend("onnx", models[kind], None, 64, conf=0.25, iou=0.5, threads=1)
    mine, theirs = ours.infer([IMAGES[image]])[0], ultralytics_on[kind].infer([IMAGES[image]])[0]
    assert len(mine) > 0
    assert_same(mine, theirs)
    assert list(mine.class_name) == [NAMES[c] for c in mine.class_id]


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_boxes_land_on_the_object_in_original_pixels(models: dict[str, Path], kind: str) -> None:
    backend = load_backend("onnx", models[kind], NAMES, 64, conf=0.5, threads=1)
    for img, (x1, y1, x2, y2, colour) in [
        (IMAGES["tall"], (10, 50, 60, 100, RED)),
        (IMAGES["big"], (40, 200, 240, 340, BLUE)),
    ]:
        det = backend.infer([img])[0]
        label = {RED: "vehicle", GREEN: "stall", BLUE: "litter"}[colour]
        mine = det[det.class_name == label]
        assert len(mine) > 0
        cx, cy = mine.center[np.argmax(mine.confidence)]
        assert x1 <= cx <= x2 and y1 <= cy <= y2
        assert (det.xyxy[:, [0, 2]] <= img.shape[1]).all() and (det.xyxy[:, [1, 3]] <= img.shape[0]).all()


@pytest.mark.parametrize(("kind", "batch"), [("fixed", 1), ("fixed2", 2), ("dynamic", None)])
def test_batch_equals_single_calls(models: dict[str, Path], kind: str, batch: int | None) -> None:
    backend = OnnxBackend(models[kind], NAMES, 64, threads=1)
    assert backend.fixed_batch == batch and backend.dynamic_hw is (kind == "dynamic")
    same_shape = [IMAGES["big"], IMAGES["big"][:, ::-1].copy(), IMAGES["big"][::-1].copy()]
    images = same_shape if kind == "dynamic" else list(IMAGES.values())  # 3 or 4: chunks with a partial one
    batched = backend.infer(images)
    assert len(batched) == len(images)
    for img, det in zip(images, batched, strict=True):
        assert_same(det, backend.infer([img])[0])
    assert backend.infer([]) == []


def test_dynamic_model_uses_rectangular_input(models: dict[str, Path]) -> None:
    backend = OnnxBackend(models["dynamic"], None, 64, threads=1)
    calls: list[tuple[int, ...]] = []
    forward = backend._forward

    def spy(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        calls.append(batch.shape)
        return forward(batch)

    backend._forward = spy  # type: ignore[method-assign]
    backend.infer([IMAGES["big"]])
    assert calls == [(1, 3, 40, 64)]
    calls.clear()
    # mixed shapes: each frame in its own smallest rectangle, frames of one input shape run together,
    # results in input order
    mixed = [IMAGES["big"], IMAGES["tall"], IMAGES["big"][::-1].copy()]
    results = backend.infer(mixed)
    assert sorted(calls) == [(1, 3, 64, 48), (2, 3, 40, 64)]
    for img, det in zip(mixed, results, strict=True):
        assert_same(det, backend.infer([img])[0])


def test_names_come_from_metadata_or_configuration(models: dict[str, Path]) -> None:
    assert OnnxBackend(models["fixed"], threads=1).class_names == NAMES
    assert OnnxBackend(models["fixed"], ["car", "vendor", "trash"], threads=1).class_names == [
        "car",
        "vendor",
        "trash",
    ]
    assert OnnxBackend(models["fixed"], threads=1).imgsz == 64


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("onnx", {"class_names": ["a", "b"]}, "3 classes but 2 class names"),
        ("onnx", {"imgsz": 320}, "fixed at 64x64"),
        ("onnx", {"conf": 1.5}, "conf"),
        ("tensorrt", {}, "unknown inference backend"),
    ],
)
def test_load_errors(models: dict[str, Path], kind: str, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"class_names": None, "imgsz": None} | kwargs
    with pytest.raises(ModelLoadError, match=message):
        load_backend(kind, models["fixed"], **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_missing_model(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend(kind, tmp_path / "nope.onnx", NAMES, 64)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((0, 64, 3), np.uint8),
        "frame.jpg",
    ],
)
def test_bad_images(models: dict[str, Path], bad: object) -> None:
    backend = OnnxBackend(models["fixed"], threads=1)
    with pytest.raises(InferenceInputError):
        backend.infer([IMAGES["square"], bad])  # type: ignore[list-item]


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, detector.inference as m; "
        "heavy = {'onnxruntime', 'openvino', 'torch', 'ultralytics'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ OpenVINO
def test_openvino_matches_onnx(models: dict[str, Path], tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    folder = tmp_path / "blobs_openvino_model"
    folder.mkdir()
    ov.save_model(ov.convert_model(str(models["dynamic"])), str(folder / "blobs.xml"), compress_to_fp16=False)
    (folder / "metadata.yaml").write_text(
        "stride: 8\nimgsz: [64, 64]\nnames:\n  0: vehicle\n  1: stall\n  2: litter\n", encoding="utf-8"
    )
    ours = load_backend("openvino", folder, None, None, threads=1)
    ref = load_backend("onnx", models["dynamic"], None, 64, threads=1)  # both take rectangular inputs
    assert ours.class_names == NAMES and ours.imgsz == 64
    results = ours.infer(list(IMAGES.values()))
    for img, det in zip(IMAGES.values(), results, strict=True):
        assert len(det) > 0
        assert_same(det, ref.infer([img])[0], atol=1e-2)
    # compiled once per input shape met (batch 1, static), the oldest dropped past MAX_SHAPES
    shapes = set(ours._compiled)  # type: ignore[attr-defined]
    assert (40, 64) in shapes and len(shapes) <= ours.MAX_SHAPES  # type: ignore[attr-defined]


def test_openvino_fixed_shape_model_keeps_its_input(models: dict[str, Path], tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    folder = tmp_path / "fixed_openvino_model"
    folder.mkdir()
    ov.save_model(ov.convert_model(str(models["fixed"])), str(folder / "fixed.xml"), compress_to_fp16=False)
    ours = load_backend("openvino", folder, NAMES, None, threads=1)
    ref = load_backend("onnx", models["fixed"], None, 64, threads=1)
    assert not ours.dynamic_hw and ours.input_hw == (64, 64)  # type: ignore[attr-defined]
    for img, det in zip(IMAGES.values(), ours.infer(list(IMAGES.values())), strict=True):
        assert_same(det, ref.infer([img])[0], atol=1e-2)
    assert set(ours._compiled) == {(64, 64)}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ real YOLOv8n
def test_yolov8n_export_layout(tmp_path: Path) -> None:
    """A real YOLOv8n graph (random weights, imgsz 64) through both backends."""
    pytest.importorskip("ultralytics")
    from detector.inference.ultralytics_backend import prepare_ultralytics_offline

    prepare_ultralytics_offline()
    from ultralytics.models import YOLO

    YOLO("yolov8n.yaml").save(str(tmp_path / "v8n.pt"))  # built from the yaml: nothing downloaded
    onnx_path = Path(
        YOLO(str(tmp_path / "v8n.pt")).export(format="onnx", imgsz=64, dynamic=True, simplify=False)
    )
    ours = load_backend("onnx", onnx_path, None, None, conf=1e-6, threads=1)  # untrained: tiny scores
    ref = load_backend("ultralytics", tmp_path / "v8n.pt", None, 64, conf=1e-6)
    assert (ours.imgsz, len(ours.class_names), ours.class_names[:2]) == (64, 80, ["0", "1"])
    assert ref.class_names == ours.class_names
    img = IMAGES["wide"]
    for det in (ours.infer([img, img])[1], ref.infer([img])[0]):
        assert len(det) > 0 and set(det.class_name) <= set(ours.class_names)
        assert (det.xyxy >= 0).all() and (det.xyxy[:, 2] <= 160).all() and (det.xyxy[:, 3] <= 97).all()
