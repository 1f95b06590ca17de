"""Evidence images: the frame with the zone and the offending box drawn on it, as a JPEG.

Drawing uses OpenCV's built-in Hershey font only (no font files). The same input gives the
same bytes: no timestamps or random colours are drawn, and libjpeg is deterministic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from detector.contracts.errors import DetectorError

ZONE_COLOR: Final = (0, 215, 255)  # BGR amber
BOX_COLOR: Final = (0, 0, 255)  # BGR red
TEXT_COLOR: Final = (255, 255, 255)
ZONE_ALPHA: Final = 0.25
FONT: Final = cv2.FONT_HERSHEY_SIMPLEX
MAX_JPEG_BYTES: Final = 3_000_000  # base64 of it stays under the schema's 4,000,000 characters
MIN_QUALITY: Final = 30


class EvidenceError(DetectorError, ValueError):
    """The evidence image could not be made from the given frame and geometry."""


@dataclass(frozen=True)
class Evidence:
    """A JPEG and what the event payload says about it."""

    jpeg: bytes
    sha256: str
    width: int
    height: int
    captured_at: float | None = None  # epoch seconds of the frame
    url: str | None = None  # where the JPEG is stored, when it is sent by reference


def _as_bgr(frame: object) -> npt.NDArray[np.uint8]:
    if not isinstance(frame, np.ndarray):
        raise EvidenceError(f"frame must be a numpy array (H, W, 3) BGR uint8, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise EvidenceError(f"frame must be uint8, got {frame.dtype}; convert with frame.astype(np.uint8)")
    if frame.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise EvidenceError(f"frame must have shape (H, W, 3), got {frame.shape}")
    if frame.shape[2] == 4:
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR))
    return np.ascontiguousarray(frame)


def _ascii(text: str) -> str:
    """Hershey fonts draw ASCII only; anything else becomes '?' rather than garbage."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def _draw_zone(img: npt.NDArray[np.uint8], polygon_norm: Sequence[Sequence[float]], thickness: int) -> None:
    pts_norm = np.asarray(polygon_norm, dtype=np.float64)
    if pts_norm.ndim != 2 or pts_norm.shape[1] != 2:
        raise EvidenceError(f"zone_polygon_norm must be a list of (x, y) points, got shape {pts_norm.shape}")
    if len(pts_norm) < 3:
        raise EvidenceError(f"zone_polygon_norm needs at least 3 points, got {len(pts_norm)}")
    h, w = img.shape[:2]
    pts = np.rint(pts_norm * np.array([w - 1, h - 1], dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    overlay = img.copy()
    cv2.fillPoly(overlay, [pts], ZONE_COLOR, lineType=cv2.LINE_AA)
    cv2.addWeighted(overlay, ZONE_ALPHA, img, 1.0 - ZONE_ALPHA, 0.0, dst=img)
    cv2.polylines(img, [pts], True, ZONE_COLOR, thickness, lineType=cv2.LINE_AA)


def _draw_box(img: npt.NDArray[np.uint8], box: Sequence[float], label: str, thickness: int) -> None:
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, x2 = sorted((min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)))
    y1, y2 = sorted((min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)))
    cv2.rectangle(img, (x1, y1), (x2, y2), BOX_COLOR, thickness, lineType=cv2.LINE_AA)
    text = _ascii(label)
    if not text:
        return
    scale = max(0.4, w / 1600.0)
    text_thickness = max(1, thickness // 2)
    (tw, th), baseline = cv2.getTextSize(text, FONT, scale, text_thickness)
    pad = max(2, thickness)
    top = y1 - th - baseline - 2 * pad
    if top < 0:  # no room above the box: put the label inside its top edge
        top = y1
    left = min(x1, max(0, w - tw - 2 * pad))
    cv2.rectangle(
        img, (left, top), (left + tw + 2 * pad, top + th + baseline + 2 * pad), BOX_COLOR, cv2.FILLED
    )
    cv2.putText(img, text, (left + pad, top + pad + th), FONT, scale, TEXT_COLOR, text_thickness, cv2.LINE_AA)


def encode_jpeg(img: npt.NDArray[np.uint8], quality: int = 85, max_bytes: int = MAX_JPEG_BYTES) -> bytes:
    """JPEG-encode ``img``, lowering the quality in steps until it fits ``max_bytes``."""
    if not 1 <= quality <= 100:
        raise EvidenceError(f"JPEG quality must be 1..100, got {quality}")
    q = quality
    while True:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise EvidenceError(f"OpenCV could not JPEG-encode an image of shape {img.shape}")
        data = buf.tobytes()
        if len(data) <= max_bytes:
            return data
        if q <= MIN_QUALITY:
            raise EvidenceError(
                f"evidence JPEG is {len(data)} bytes at quality {q}, over the {max_bytes} byte limit; "
                "lower max_width"
            )
        q = max(MIN_QUALITY, q - 10)


def decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    """The image of :func:`encode_jpeg`'s bytes (channels in the order they were encoded in)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise EvidenceError(f"not a JPEG image ({len(data)} bytes)")
    return np.ascontiguousarray(img, dtype=np.uint8)


def render_evidence(
    frame_bgr: npt.NDArray[np.uint8],
    bbox_xyxy_px: Sequence[float] | None,
    zone_polygon_norm: Sequence[Sequence[float]] | None,
    label_text: str,
    max_width: int = 1280,
    quality: int = 85,
    *,
    captured_at: float | None = None,
) -> Evidence:
    """Draw the zone (translucent fill + outline) and the box with its label; downscale; encode.

    ``bbox_xyxy_px`` is in pixels of ``frame_bgr``; ``zone_polygon_norm`` in 0..1 of the frame.
    Either may be ``None``. The input frame is not modified.
    """
    if max_width < 16:
        raise EvidenceError(f"max_width must be at least 16 pixels, got {max_width}")
    img = _as_bgr(frame_bgr)
    h, w = img.shape[:2]
    scale = min(1.0, max_width / w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    else:
        img = img.copy()
    out_h, out_w = img.shape[:2]
    thickness = max(1, round(out_w / 480))
    if zone_polygon_norm is not None and len(zone_polygon_norm) > 0:
        _draw_zone(img, zone_polygon_norm, thickness)
    if bbox_xyxy_px is not None:
        if len(bbox_xyxy_px) != 4:
            raise EvidenceError(f"bbox_xyxy_px must have 4 values (x1, y1, x2, y2), got {len(bbox_xyxy_px)}")
        sx, sy = out_w / w, out_h / h
        x1, y1, x2, y2 = (float(v) for v in bbox_xyxy_px)
        _draw_box(img, [x1 * sx, y1 * sy, x2 * sx, y2 * sy], label_text, thickness)
    jpeg = encode_jpeg(img, quality)
    return Evidence(
        jpeg=jpeg,
        sha256=hashlib.sha256(jpeg).hexdigest(),
        width=out_w,
        height=out_h,
        captured_at=captured_at,
    )
