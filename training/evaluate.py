"""Evaluate a .pt, .onnx or OpenVINO model on one split of a dataset yaml (mAP50 overall and AP50 per
class)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from training.dataset import DatasetSpec
from training.errors import EvalError
from training.runtime import device, yolo


@dataclass
class EvalResult:
    """Detection metrics of one model on one split."""

    model: str
    data: str
    split: str
    imgsz: int
    images: int
    map50: float
    map50_95: float
    per_class: dict[str, float]  # class name -> AP50, for classes with at least one label in the split
    instances: dict[str, int]  # class name -> labelled boxes in the split

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def model_imgsz(path: Path) -> int | None:
    """The input size a model was trained or exported at, read from the file without running it."""
    if path.suffix == ".pt":
        model = yolo(path)
        args = getattr(model, "ckpt", None) or {}
        size = args.get("train_args", {}).get("imgsz") if isinstance(args, dict) else None
        return int(size) if isinstance(size, int) else None
    if path.suffix == ".onnx":
        import onnxruntime as ort

        shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        return int(shape[-1]) if isinstance(shape[-1], int) else None
    meta_file = path / "metadata.yaml"
    if path.is_dir() and meta_file.is_file():
        meta = yaml.safe_load(meta_file.read_text(encoding="utf-8")) or {}
        size = meta.get("imgsz")
        if isinstance(size, list) and size:
            return int(size[-1])
    return None


def _check_names(model_names: dict[int, str], spec: DatasetSpec, model_path: Path) -> None:
    names = [model_names[i] for i in sorted(model_names)]
    if names != spec.names:
        raise EvalError(
            f"{model_path} has classes {names} but {spec.yaml_path} has {spec.names}; "
            "class ids would not match, evaluate with the dataset the model was trained for"
        )


def evaluate(
    model_path: Path,
    spec: DatasetSpec,
    split: str,
    *,
    imgsz: int | None = None,
    batch: int = 16,
    workers: int = 0,
) -> EvalResult:
    """Validate ``model_path`` on ``split`` (any split key of the dataset yaml)."""
    if not model_path.exists():
        raise EvalError(f"model {model_path} not found")
    images = spec.images(split)
    if not images:
        raise EvalError(f"{spec.yaml_path}: split {split!r} has no images")
    size = imgsz or model_imgsz(model_path)
    if size is None:
        raise EvalError(f"cannot tell the input size of {model_path}; pass --imgsz")
    model = yolo(model_path)
    _check_names(dict(model.names), spec, model_path)
    with tempfile.TemporaryDirectory(prefix="citywatch-eval-") as tmp_s:
        tmp = Path(tmp_s)
        data = spec.write_ultralytics_yaml(tmp / "data.yaml", val=split)
        try:
            metrics = model.val(
                data=str(data),
                split="val",
                imgsz=size,
                batch=batch,
                workers=workers,
                device=device(),
                plots=False,
                save_json=False,
                project=str(tmp),
                name="val",
                exist_ok=True,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise EvalError(f"evaluating {model_path} on {split!r} failed: {err}") from err
    names: dict[int, str] = dict(metrics.names)
    per_class: dict[str, float] = {}
    for i, cls in enumerate(metrics.ap_class_index):
        per_class[names[int(cls)]] = round(float(metrics.box.ap50[i]), 5)
    counts = metrics.nt_per_class
    instances = {names[i]: int(counts[i]) for i in sorted(names)} if counts is not None else {}
    return EvalResult(
        model=str(model_path),
        data=str(spec.yaml_path),
        split=split,
        imgsz=int(size),
        images=len(images),
        map50=round(float(metrics.box.map50), 5),
        map50_95=round(float(metrics.box.map), 5),
        per_class=per_class,
        instances=instances,
    )


def format_table(result: EvalResult) -> str:
    """A plain-text table: one line per class, then the overall mAP."""
    width = max([len("class"), *(len(c) for c in result.instances or result.per_class)])
    lines = [
        f"model  {result.model}",
        f"data   {result.data}  split={result.split}  images={result.images}  imgsz={result.imgsz}",
        "",
        f"{'class':<{width}}  {'boxes':>6}  {'AP50':>6}",
        f"{'-' * width}  {'-' * 6}  {'-' * 6}",
    ]
    for cls in result.instances or result.per_class:
        ap = result.per_class.get(cls)
        ap_s = f"{ap:6.3f}" if ap is not None else f"{'-':>6}"
        lines.append(f"{cls:<{width}}  {result.instances.get(cls, 0):>6}  {ap_s}")
    lines += [
        f"{'-' * width}  {'-' * 6}  {'-' * 6}",
        f"{'all':<{width}}  {sum(result.instances.values()):>6}  {result.map50:6.3f}",
        f"mAP50 {result.map50:.3f}   mAP50-95 {result.map50_95:.3f}",
    ]
    return "\n".join(lines)
