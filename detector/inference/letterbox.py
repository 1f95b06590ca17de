"""Letterbox resizing and its inverse, numerically the same as ultralytics' ``LetterBox`` / ``scale_boxes``.

An image is resized keeping its aspect ratio so it fits ``imgsz``, then padded with grey (114) on both
sides. ``auto=True`` pads only up to the next multiple of ``stride`` (a smaller, rectangular input for
models with dynamic height and width), as ultralytics does for such models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class LetterboxInfo:
    """How an image of ``orig_shape`` (h, w) was placed in the model input of ``input_shape`` (h, w)."""

    orig_shape: tuple[int, int]
    input_shape: tuple[int, int]
    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int

    def to_original(self, xyxy: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Boxes from model-input pixels back to original-image pixels, clipped to the image."""
        boxes = np.array(xyxy, dtype=np.float32).reshape(-1, 4)
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.gain_x
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.gain_y
        h, w = self.orig_shape
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes

    def to_input(self, xyxy: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Boxes from original-image pixels to model-input pixels (the forward transform)."""
        boxes = np.array(xyxy, dtype=np.float32).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * self.gain_x + self.pad_x
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * self.gain_y + self.pad_y
        return boxes


def letterbox_params(
    shape: tuple[int, int], imgsz: int | tuple[int, int], stride: int = 32, auto: bool = False
) -> tuple[LetterboxInfo, tuple[int, int], tuple[int, int, int, int]]:
    """(info, resized (w, h), padding (top, bottom, left, right)) for an image of ``shape`` (h, w)."""
    h, w = shape
    if h <= 0 or w <= 0:
        raise ValueError(f"cannot letterbox an empty image of shape {shape}")
    new_h, new_w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = max(round(w * r), 1), max(round(h * r), 1)
    dw: float = new_w - unpad_w
    dh: float = new_h - unpad_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    info = LetterboxInfo(
        orig_shape=(h, w),
        input_shape=(unpad_h + top + bottom, unpad_w + left + right),
        gain_x=unpad_w / w,
        gain_y=unpad_h / h,
        pad_x=left,
        pad_y=top,
    )
    return info, (unpad_w, unpad_h), (top, bottom, left, right)


def letterbox(
    image: npt.NDArray[np.uint8], imgsz: int | tuple[int, int], stride: int = 32, auto: bool = False
) -> tuple[npt.NDArray[np.uint8], LetterboxInfo]:
    """Resize (bilinear) and pad an HxWx3 image; returns the padded image and how to map boxes back."""
    info, (unpad_w, unpad_h), (top, bottom, left, right) = letterbox_params(
        (image.shape[0], image.shape[1]), imgsz, stride, auto
    )
    resized: npt.NDArray[np.integer[Any] | np.floating[Any]] = image
    if (image.shape[1], image.shape[0]) != (unpad_w, unpad_h):
        resized = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.asarray(out, dtype=np.uint8), info


def to_tensor(images: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    """Letterboxed BGR HxWx3 images of one shape -> RGB NCHW float32 in [0, 1]."""
    batch = np.stack(images)[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    batch /= np.float32(255.0)
    return batch
