"""A model rebuilt from an export (training/onnx_import.py) made trainable: its BatchNorms get statistics.

An export fuses each Conv + BatchNorm into one convolution with a bias; ``onnx_import`` puts the fused
weight back into the convolution and turns each BatchNorm into ``y = x + bias`` (weight 1, mean 0,
variance ``1 - eps``). That computes the right function in eval mode, but a training step runs the
BatchNorms on the *batch's* statistics: every channel is suddenly normalised to mean 0 and variance 1 and
the network forgets everything at the first step (a fine-tune of the COCO YOLOv8n started with a
classification loss of about 14 instead of about 1).

:func:`recalibrate_batchnorm` measures, over a few real images, the mean ``m`` and variance ``v`` of what
enters each BatchNorm and rewrites it as ``running_mean = m``, ``running_var = v``, ``weight = sqrt(v +
eps)``, ``bias = bias + m``: in eval mode ``(x - m) / sqrt(v + eps) * sqrt(v + eps) + bias + m = x + bias``,
the same function as before, and in training mode the batch's statistics are close to ``m`` and ``v``, so
a training step starts from the model that was imported. ``citywatch train --init-from`` does it by itself
when the weights come from such an import (:func:`is_fused_import`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.errors import TrainingError

GREY = 114  # ultralytics' letterbox padding


def batchnorms(model: Any) -> list[Any]:
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def is_fused_import(model: Any) -> bool:
    """True when every BatchNorm is the identity-plus-bias that ``onnx_import`` writes (no statistics)."""
    bns = batchnorms(model)
    return bool(bns) and all(
        bn.running_mean is not None
        and bool((bn.running_mean == 0).all())
        and bool((bn.weight == 1).all())
        and bool(((bn.running_var + bn.eps - 1).abs() < 1e-3).all())
        for bn in bns
    )


def letterbox(img: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.float32]:
    """BGR image -> RGB float CHW in 0..1, scaled to fit ``size`` and padded grey (as ultralytics does)."""
    import cv2

    h, w = img.shape[:2]
    k = size / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    out = np.full((size, size, 3), GREY, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def recalibrate_batchnorm(
    model: Any, images: Sequence[npt.NDArray[np.uint8]], imgsz: int = 640, batch: int = 8
) -> int:
    """Give every BatchNorm of ``model`` the statistics of its input over ``images``; returns how many."""
    import torch

    if not images:
        raise TrainingError("BatchNorm calibration needs at least one image")
    bns = batchnorms(model)
    sums: dict[int, list[Any]] = {i: [0.0, 0.0, 0] for i in range(len(bns))}

    def hook(i: int) -> Any:
        def pre(_mod: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().double()
            acc = sums[i]
            acc[0] = acc[0] + x.sum(dim=(0, 2, 3))
            acc[1] = acc[1] + (x * x).sum(dim=(0, 2, 3))
            acc[2] += x.numel() // x.shape[1]

        return pre

    handles = [bn.register_forward_pre_hook(hook(i)) for i, bn in enumerate(bns)]
    was_training = model.training
    model.float().eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                x = torch.from_numpy(np.stack([letterbox(im, imgsz) for im in images[start : start + batch]]))
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    with torch.no_grad():
        for i, bn in enumerate(bns):
            total, squares, n = sums[i]
            if not n:
                continue  # a BatchNorm the forward pass never reached keeps what it had
            mean = total / n
            var = (squares / n - mean * mean).clamp(min=0.0)
            bn.bias.add_(mean.to(bn.bias.dtype))
            bn.weight.copy_((var + bn.eps).sqrt().to(bn.weight.dtype))
            bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(var.to(bn.running_var.dtype))
    return len(bns)


def calibrated_checkpoint(pt: Path, images: Sequence[Path], out: Path, imgsz: int = 640) -> bool:
    """Write ``pt`` with calibrated BatchNorms to ``out`` when it is a fused import; False (nothing written)
    when its BatchNorms already have statistics."""
    import cv2
    import torch

    ckpt = torch.load(pt, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"]
    if not is_fused_import(model):
        return False
    frames = [
        np.asarray(im, dtype=np.uint8)
        for im in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images)
        if im is not None
    ]
    n = recalibrate_batchnorm(model, frames, imgsz)
    ckpt["model"] = model.half()
    ckpt.pop("ema", None)
    ckpt["docs"] = f"{ckpt.get('docs', pt.name)}; {n} BatchNorms calibrated on {len(frames)} training images"
    torch.save(ckpt, out)
    return True
