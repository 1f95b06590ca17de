"""Evidence JPEGs: deterministic bytes, downscaling, drawing, size limits, bad input."""

from __future__ import annotations

import hashlib
from typing import Any

import cv2
import numpy as np
import pytest

from detector.evidence import MAX_JPEG_BYTES, EvidenceError, encode_jpeg, render_evidence

ZONE = [(0.05, 0.5), (0.95, 0.5), (0.95, 0.95), (0.05, 0.95)]


def street(w: int = 1920, h: int = 1080, seed: int = 3) -> np.ndarray:
    """A textured frame (noise + gradient) so JPEG sizes are realistic."""
    rng = np.random.default_rng(seed)
    grad = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 25, (h, w, 3)).astype(np.float32)
    frame: np.ndarray = np.clip(grad + noise, 0, 255).astype(np.uint8)
    return frame


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a decodable JPEG"
    return img.astype(int)


def test_same_input_gives_the_same_bytes() -> None:
    frame = street()
    a = render_evidence(frame, (400, 500, 900, 800), ZONE, "vehicle 0.93", captured_at=12.5)
    b = render_evidence(frame.copy(), (400, 500, 900, 800), ZONE, "vehicle 0.93", captured_at=12.5)
    assert a == b
    assert a.sha256 == hashlib.sha256(a.jpeg).hexdigest()
    assert a.captured_at == 12.5


def test_downscales_to_max_width_and_decodes() -> None:
    ev = render_evidence(street(), (400, 500, 900, 800), ZONE, "vehicle", max_width=640)
    assert (ev.width, ev.height) == (640, 360)
    assert decode(ev.jpeg).shape == (360, 640, 3)
    assert ev.jpeg[:2] == b"\xff\xd8"


def test_small_frames_are_not_upscaled() -> None:
    ev = render_evidence(street(320, 240), None, None, "", max_width=1280)
    assert (ev.width, ev.height) == (320, 240)


def test_size_stays_within_the_contract() -> None:
    ev = render_evidence(street(), (400, 500, 900, 800), ZONE, "vehicle", max_width=1280, quality=85)
    assert ev.width == 1280
    assert len(ev.jpeg) < MAX_JPEG_BYTES
    assert len(ev.jpeg) * 4 / 3 < 4_000_000  # base64 length limit of evidence.jpeg in the schema


def test_draws_box_and_zone_without_touching_the_input() -> None:
    frame = np.full((400, 600, 3), 128, np.uint8)
    before = frame.copy()
    plain = decode(render_evidence(frame, None, None, "").jpeg)
    drawn = decode(render_evidence(frame, (100, 150, 300, 350), ZONE, "vehicle", quality=95).jpeg)
    assert np.array_equal(frame, before)
    # the box's left edge is red (BGR), the zone interior is tinted amber, the top-left is untouched
    b, g, r = drawn[250, 100]
    assert r > g + 50 and r > b + 50
    b, g, r = drawn[380, 500]
    assert r > 140 and g > 140 and b < 110
    assert np.abs(drawn[20, 20] - plain[20, 20]).max() < 6


def test_label_changes_the_image() -> None:
    frame = street(640, 360)
    a = render_evidence(frame, (100, 100, 300, 300), None, "vehicle 0.93")
    b = render_evidence(frame, (100, 100, 300, 300), None, "vendor 0.93")
    assert a.jpeg != b.jpeg


@pytest.mark.parametrize("label", ["车辆 vehicle", "", "x" * 300])
def test_odd_labels_and_box_at_the_edge(label: str) -> None:
    ev = render_evidence(street(640, 360), (-20, -5, 700, 30), ZONE, label)
    assert (ev.width, ev.height) == (640, 360)


def test_grayscale_and_bgra_frames_are_accepted() -> None:
    gray = np.full((90, 160), 100, np.uint8)
    bgra = np.full((90, 160, 4), 100, np.uint8)
    assert render_evidence(gray, (10, 10, 50, 50), None, "x").width == 160
    assert render_evidence(bgra, (10, 10, 50, 50), None, "x").width == 160


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frame_bgr": np.zeros((90, 160, 3), np.float32)}, "uint8"),
        ({"frame_bgr": np.zeros((90, 160, 2), np.uint8)}, "shape"),
        ({"frame_bgr": [[1, 2], [3, 4]]}, "numpy array"),
        ({"bbox_xyxy_px": (1, 2, 3)}, "4 values"),
        ({"zone_polygon_norm": [(0, 0), (1, 1)]}, "at least 3"),
        ({"zone_polygon_norm": [(0, 0, 0), (1, 1, 1), (1, 0, 0)]}, r"\(x, y\)"),
        ({"quality": 0}, "quality"),
        ({"max_width": 8}, "max_width"),
    ],
)
def test_bad_input_raises(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "frame_bgr": np.zeros((90, 160, 3), np.uint8),
        "bbox_xyxy_px": (10, 10, 50, 50),
        "zone_polygon_norm": ZONE,
        "label_text": "x",
    }
    args.update(kwargs)
    with pytest.raises(EvidenceError, match=match):
        render_evidence(**args)


def test_encoder_lowers_quality_to_fit_and_then_refuses() -> None:
    img = street(640, 360)
    full = encode_jpeg(img, 95)
    fitted = encode_jpeg(img, 95, max_bytes=len(full) - 1)
    assert len(fitted) < len(full)
    with pytest.raises(EvidenceError, match="lower max_width"):
        encode_jpeg(img, 95, max_bytes=100)
