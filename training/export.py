"""Export a trained .pt to ONNX or OpenVINO, fp32 or INT8.

Exports run on a copy of the .pt in a temporary folder (ultralytics writes next to the weights and, for INT8
ONNX, deletes the fp32 .onnx it quantised from), then move into the destination folder under fixed names:

=============  ==================================
onnx           ``<stem>.onnx``
onnx_int8      ``<stem>_int8.onnx``
openvino       ``<stem>_openvino_model/``
openvino_int8  ``<stem>_int8_openvino_model/``
=============  ==================================

Exports made by ``citywatch export`` take any input height and width (``dynamic``): the detector then feeds
a 16:9 camera frame as a 640x384 input instead of padding it to 640x640, as ultralytics does for PyTorch
models (about 40 % less compute per street frame). ``dynamic=False`` gives a fixed imgsz x imgsz input.

INT8 calibrates on our own dataset only (``--data``; ultralytics would otherwise fetch coco8): an evenly
spaced sample of the calibration split. ONNX INT8 is ONNX Runtime static quantisation (QDQ, head kept in
float). OpenVINO INT8 is that same QDQ model converted by OpenVINO, which runs QDQ convolutions as INT8, so
no NNCF is needed.

The metadata an export records (ONNX ``metadata_props``; an OpenVINO folder's ``metadata.yaml`` and the
``.xml`` run-time info) is cleared of this machine's folders (the temporary work folder, the checkout), so an
export committed with the repository names no machine path.
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from detector.contracts.manifest import REPO_ROOT
from training.dataset import DatasetSpec
from training.errors import ExportError
from training.runtime import yolo

Format = Literal["onnx", "openvino"]
CALIBRATION_IMAGES = 256


def export_key(fmt: Format, int8: bool) -> str:
    """The manifest ``exports`` key: onnx, onnx_int8, openvino or openvino_int8."""
    return f"{fmt}_int8" if int8 else fmt


def artifact_name(stem: str, fmt: Format, int8: bool) -> str:
    if fmt == "onnx":
        return f"{stem}_int8.onnx" if int8 else f"{stem}.onnx"
    return f"{stem}_int8_openvino_model" if int8 else f"{stem}_openvino_model"


def _calibration_yaml(spec: DatasetSpec, split: str, limit: int, tmp: Path) -> Path:
    images = spec.images(split)
    if not images:
        raise ExportError(f"{spec.yaml_path}: calibration split {split!r} has no images")
    step = max(1, len(images) // limit)
    sample = images[::step][:limit]
    listing = tmp / "calibration.txt"
    listing.write_text("".join(f"{p}\n" for p in sample), encoding="utf-8")
    data = {
        "path": str(spec.root),
        "train": str(listing),
        "val": str(listing),
        "names": dict(enumerate(spec.names)),
    }
    out = tmp / "calibration.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def _run_export(model: Any, **kwargs: Any) -> Path:
    try:
        out = model.export(**kwargs)
    except (RuntimeError, ValueError, AssertionError, OSError, ImportError) as err:
        raise ExportError(f"ultralytics export {kwargs.get('format')} failed: {err}") from err
    if not out or not Path(str(out)).exists():
        raise ExportError(f"ultralytics export {kwargs.get('format')} produced no file (see its log above)")
    return Path(str(out))


def _onnx_metadata(onnx_file: Path) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(onnx_file), load_external_data=False)
    meta: dict[str, Any] = {}
    for prop in proto.metadata_props:
        try:
            meta[prop.key] = ast.literal_eval(prop.value)
        except (ValueError, SyntaxError):
            meta[prop.key] = prop.value
    return meta


def scrub_paths(out: Path, prefixes: Sequence[str]) -> None:
    """Remove each of ``prefixes`` (folders, ending in ``/``) from the metadata of the export ``out``."""

    def clean(text: str) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, "")
        return text

    if out.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(out))
        props = [p for p in proto.metadata_props if clean(p.value) != p.value]
        for prop in props:
            prop.value = clean(prop.value)
        if props:
            onnx.save(proto, str(out))
    elif out.is_dir():
        for f in [out / "metadata.yaml", *sorted(out.glob("*.xml"))]:
            text = f.read_text(encoding="utf-8") if f.is_file() else ""
            if clean(text) != text:
                f.write_text(clean(text), encoding="utf-8")


def _qdq_onnx_to_openvino(onnx_file: Path, out_dir: Path) -> Path:
    """Convert a QDQ INT8 ONNX model to OpenVINO IR with the metadata.yaml ultralytics reads back."""
    import openvino as ov

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = _onnx_metadata(onnx_file)
    ov_model = ov.convert_model(str(onnx_file))
    ov_model.set_rt_info("YOLO", ["model_info", "model_type"])
    names = meta.get("names")
    if isinstance(names, dict):
        ov_model.set_rt_info([str(v).replace(" ", "_") for v in names.values()], ["model_info", "labels"])
    ov.save_model(ov_model, str(out_dir / f"{onnx_file.stem}.xml"), compress_to_fp16=False)
    (out_dir / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return out_dir


def export_model(
    pt: Path,
    fmt: Format,
    *,
    imgsz: int,
    dest_dir: Path,
    stem: str,
    int8: bool = False,
    calib: DatasetSpec | None = None,
    calib_split: str = "train",
    calib_images: int = CALIBRATION_IMAGES,
    dynamic: bool = False,
) -> Path:
    """Export ``pt`` and move the result to ``dest_dir / artifact_name(stem, fmt, int8)``; returns that
    path."""
    if fmt not in ("onnx", "openvino"):
        raise ExportError(f"unknown export format {fmt!r}; use onnx or openvino")
    if not pt.is_file():
        raise ExportError(f"{pt} not found")
    if int8 and calib is None:
        raise ExportError("INT8 export needs calibration images: pass --data DATASET_YAML (our own dataset)")
    dest = dest_dir / artifact_name(stem, fmt, int8)
    if dest.exists():
        raise ExportError(f"{dest} exists already; remove it first to export again")
    with tempfile.TemporaryDirectory(prefix="citywatch-export-") as tmp_s:
        tmp = Path(tmp_s)
        machine = sorted({f"{tmp}/", f"{tmp.resolve()}/", f"{REPO_ROOT}/"}, key=len, reverse=True)
        work_pt = tmp / f"{stem}.pt"
        shutil.copyfile(pt, work_pt)
        base: dict[str, Any] = {"imgsz": imgsz, "device": "cpu", "dynamic": dynamic, "batch": 1}
        onnx_args = {**base, "simplify": False}  # onnxslim is not installed: ultralytics would pip-install it
        if int8 and calib is not None:
            data = _calibration_yaml(calib, calib_split, calib_images, tmp)
            onnx_int8 = _run_export(yolo(work_pt), format="onnx", quantize=8, data=str(data), **onnx_args)
            scrub_paths(onnx_int8, machine)  # before OpenVINO copies the metadata into its run-time info
            out = onnx_int8 if fmt == "onnx" else _qdq_onnx_to_openvino(onnx_int8, tmp / dest.name)
        else:
            out = _run_export(yolo(work_pt), format=fmt, **(onnx_args if fmt == "onnx" else base))
        scrub_paths(out, machine)
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(dest))
    return dest
