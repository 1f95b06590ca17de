"""Bring an ultralytics YOLOv8 ONNX export (fp32 or dynamically quantised int8) back into a ``.pt``.

Ultralytics exports fuse every Conv + BatchNorm into one convolution with a bias and keep the PyTorch
parameter names as ONNX initializer names (``model.4.m.0.cv1.conv.weight``; an onnxruntime dynamic
quantisation renames it ``..weight_quantized`` with ``..weight_scale`` and ``..weight_zero_point``).
This module rebuilds the YOLOv8 layout from the bundled ``yolov8{scale}.yaml``, dequantises each weight
(``(q - zero_point) * scale``) and writes it into the un-fused model so that it computes the same function:
the convolution takes the fused weight and each BatchNorm becomes ``y = x + bias`` (weight 1, mean 0,
variance ``1 - eps``). The fp32 exports (ONNX, OpenVINO) can be made from it with ``citywatch export``.
Fine-tuning needs statistics in those BatchNorms (a training step normalises by the batch's):
``citywatch train --init-from`` calibrates them on the training images first (training/bn_calibrate.py).

It is how the COCO YOLOv8n that ships only as an int8 ONNX (``yolov8n-coco``) gets a ``.pt``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detector.contracts.manifest import ManifestError, ModelEntry
from training.errors import TrainingError


def _initializers(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    return inits, meta


def dequantised_weights(inits: dict[str, Any]) -> dict[str, Any]:
    """``{param name: float32 array}`` for every conv weight and bias, int8 or fp32 alike."""
    import numpy as np

    out: dict[str, Any] = {}
    for name, arr in inits.items():
        if not name.startswith("model."):
            continue
        if name.endswith(".weight_quantized"):
            base = name[: -len("_quantized")]
            scale = np.float32(inits[base + "_scale"])
            zero = inits[base + "_zero_point"].astype(np.float32)
            out[base] = ((arr.astype(np.float32) - zero) * scale).astype(np.float32)
        elif name.endswith((".weight", ".bias")) and arr.dtype == np.float32:
            out[name] = arr
    return out


def build_checkpoint(onnx_path: Path, scale: str = "n") -> dict[str, Any]:
    """An ultralytics checkpoint dict (``model``, ``date``, ``version``) rebuilt from ``onnx_path``."""
    import torch
    from torch import nn

    from detector.contracts.ultralytics_env import prepare_offline

    prepare_offline()
    from ultralytics import __version__ as ul_version
    from ultralytics.nn.modules.conv import Conv
    from ultralytics.nn.tasks import DetectionModel

    inits, meta = _initializers(onnx_path)
    if "names" not in meta:
        raise TrainingError(f"{onnx_path}: no `names` in the ONNX metadata; not an ultralytics export")
    names: dict[int, str] = ast.literal_eval(meta["names"])
    weights = dequantised_weights(inits)
    model = DetectionModel(f"yolov8{scale}.yaml", nc=len(names), verbose=False)
    used: set[str] = set()
    with torch.no_grad():
        for mod_name, mod in model.named_modules():
            if isinstance(mod, Conv):
                key = f"{mod_name}.conv"
                w, b = weights.get(f"{key}.weight"), weights.get(f"{key}.bias")
                if w is None or b is None:
                    raise TrainingError(f"{onnx_path}: no weights for {key}; is it a YOLOv8{scale} export?")
                if tuple(w.shape) != tuple(mod.conv.weight.shape):
                    raise TrainingError(
                        f"{onnx_path}: {key}.weight has shape {w.shape}, YOLOv8{scale} expects "
                        f"{tuple(mod.conv.weight.shape)}: use the matching --scale"
                    )
                mod.conv.weight.copy_(torch.from_numpy(w.copy()))
                bn = mod.bn
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(b.copy()))
                if bn.running_mean is None or bn.running_var is None:
                    raise TrainingError(f"{key}: BatchNorm without running statistics")
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                used.update({f"{key}.weight", f"{key}.bias"})
            elif isinstance(mod, nn.Conv2d) and mod.bias is not None and f"{mod_name}.weight" in weights:
                # the detection head's last 1x1 convolutions keep their own bias
                mod.weight.copy_(torch.from_numpy(weights[f"{mod_name}.weight"].copy()))
                mod.bias.copy_(torch.from_numpy(weights[f"{mod_name}.bias"].copy()))
                used.update({f"{mod_name}.weight", f"{mod_name}.bias"})
    left = sorted(k for k in weights if k not in used and ".dfl." not in k)
    if left:
        raise TrainingError(f"{onnx_path}: {len(left)} weights have no place in YOLOv8{scale}: {left[:5]}")
    model.names = names
    model.args = {"imgsz": 640, "task": "detect"}  # type: ignore[assignment]
    model.float().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {
        "model": model.half(),  # stored like ultralytics checkpoints; loaded back as fp32
        "date": datetime.now(UTC).isoformat(),
        "version": ul_version,
        "license": meta.get("license", "unknown"),
        "docs": f"rebuilt from {onnx_path.name} by training/onnx_import.py",
        "train_args": {"imgsz": 640, "task": "detect", "model": f"yolov8{scale}.yaml"},
    }


def card(entry: ModelEntry, onnx_name: str, note: str) -> str:
    """The model card of a model brought in from elsewhere."""
    labels = "\n".join(f"| {c} | {label} |" for c, label in entry.rule_labels.items())
    return (
        f"# {entry.name} {entry.version}\n\n"
        f"- brought in, not trained by citywatch: `{onnx_name}` from {entry.source}\n"
        f"- licence: **{entry.licence}** (stated in the file's metadata)\n"
        f"- weights: `{entry.file}` (sha256 `{entry.sha256}`), rebuilt from the ONNX by "
        "`citywatch models import-onnx` (training/onnx_import.py: int8 weights dequantised into the "
        "YOLOv8 layout; same function as the original up to its activation quantisation)\n"
        f"- the original file is kept as the `onnx_int8` export: `{entry.exports.get('onnx_int8')}`\n"
        f"- classes: {len(entry.classes)} ({', '.join(entry.classes[:8])}, ...)\n\n"
        "## Classes the rules read\n\n| class | rule label |\n|---|---|\n"
        f"{labels}\n\n"
        "Every other class is ignored by the rules.\n\n"
        f"## Notes\n\n{note}\n"
    )


def register_import(
    onnx_path: Path,
    *,
    name: str,
    version: str,
    rule_labels: dict[str, str],
    licence: str,
    source: str,
    note: str,
    scale: str = "n",
) -> ModelEntry:
    """Rebuild the ``.pt``, copy the ONNX beside it as the ``onnx_int8``/``onnx`` export, register both."""
    import shutil

    import torch

    from detector.contracts.artifacts import export_checksums
    from detector.contracts.manifest import check_name_version, models_dir, sha256_file
    from training.registry import register

    check_name_version(name, version)
    folder = models_dir()
    ckpt = build_checkpoint(onnx_path, scale)
    names = [ckpt["model"].names[i] for i in range(len(ckpt["model"].names))]
    unknown = sorted(set(rule_labels) - set(names))
    if unknown:
        raise TrainingError(f"--rule-labels names classes the model does not have: {unknown}")
    stem = f"{name}-{version}"
    pt = folder / f"{stem}.pt"
    torch.save(ckpt, pt)
    int8 = _is_int8(onnx_path)
    copy = folder / f"{stem}{'-int8' if int8 else ''}.onnx"
    shutil.copyfile(onnx_path, copy)
    exports = {"onnx_int8" if int8 else "onnx": copy.name}
    entry = ModelEntry.model_validate(
        {
            "name": name,
            "version": version,
            "file": pt.name,
            "exports": exports,
            "imgsz": 640,
            "classes": names,
            "rule_labels": rule_labels,
            "backend": "onnx",
            "precision": "int8" if int8 else "fp32",
            "sha256": sha256_file(pt),
            "checksums": export_checksums(folder, exports),
            "card": f"{stem}.md",
            "created": datetime.now(UTC),
            "licence": licence,
            "source": source,
        }
    )
    return register(entry, card(entry, onnx_path.name, note), folder)


def _is_int8(onnx_path: Path) -> bool:
    import onnx

    return any(n.op_type == "ConvInteger" for n in onnx.load(str(onnx_path)).graph.node)


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        cls, sep, label = item.partition("=")
        if not sep or label not in ("vehicle", "vendor", "litter", "structure"):
            raise TrainingError(f"--rule-labels {item!r}: write CLASS=vehicle|vendor|litter|structure")
        out[cls] = label
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="citywatch models import-onnx",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("onnx", type=Path, help="an ultralytics YOLOv8 .onnx export (fp32 or int8)")
    p.add_argument("--out", type=Path, default=None, help="only write this .pt (no registration)")
    p.add_argument("--scale", default="n", choices=["n", "s", "m", "l", "x"], help="YOLOv8 size (n)")
    p.add_argument("--name", help="register under this model name (e.g. yolov8n-coco)")
    p.add_argument("--version", default="1.0.0", help="version to register (default 1.0.0)")
    p.add_argument(
        "--rule-labels",
        default="car=vehicle,truck=vehicle,bus=vehicle,motorcycle=vehicle",
        help="CLASS=LABEL,... (default: the COCO vehicle classes -> vehicle)",
    )
    p.add_argument("--licence", default=None, help="licence of the weights (default: the ONNX metadata's)")
    p.add_argument("--source", default="unknown", help="where the file came from (repository@commit:path)")
    p.add_argument("--note", default="", help="a paragraph for the card")
    a = p.parse_args(list(argv) if argv is not None else None)
    prog = "citywatch models import-onnx"
    if not a.onnx.is_file():
        print(f"{prog}: {a.onnx}: no such file", file=sys.stderr)
        return 2
    if (a.out is None) == (a.name is None):
        print(f"{prog}: give either --out FILE.pt or --name NAME (register)", file=sys.stderr)
        return 2
    import torch

    try:
        if a.out is not None:
            ckpt = build_checkpoint(a.onnx, a.scale)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(ckpt, a.out)
            print(f"{a.onnx} -> {a.out} ({len(ckpt['model'].names)} classes)")
            return 0
        licence = a.licence or _initializers(a.onnx)[1].get("license", "unknown").split(" ")[0]
        entry = register_import(
            a.onnx,
            name=a.name,
            version=a.version,
            rule_labels=_labels(a.rule_labels),
            licence=licence,
            source=a.source,
            note=a.note,
            scale=a.scale,
        )
    except (TrainingError, ManifestError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    print(f"registered {entry.ref}: {entry.file}, exports {entry.exports}, card {entry.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
