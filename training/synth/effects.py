"""Camera and weather effects: lighting, rain, fog, noise, blur, JPEG, shake."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .canvas import F32, U8


@dataclass
class Conditions:
    light: str = "day"  # day | dusk | night
    rain: float = 0.0  # 0..1
    fog: float = 0.0  # 0..1
    noise: float = 3.0  # sensor noise sigma, grey levels
    blur: int = 0  # motion blur kernel length in px
    jpeg: int = 85  # JPEG quality
    shake: tuple[int, int] = (0, 0)  # px offset of the whole frame

    @classmethod
    def random(cls, rng: np.random.Generator) -> Conditions:
        light = str(rng.choice(["day", "day", "day", "dusk", "night"]))
        return cls(
            light=light,
            rain=float(rng.uniform(0.2, 1.0)) if rng.random() < 0.15 else 0.0,
            fog=float(rng.uniform(0.1, 0.5)) if rng.random() < 0.15 else 0.0,
            noise=float(rng.uniform(1.5, 6.0) + (5.0 if light == "night" else 0.0)),
            blur=int(rng.choice([0, 0, 0, 3, 5])),
            jpeg=int(rng.integers(35, 92)),
            shake=(int(rng.integers(-4, 5)), int(rng.integers(-3, 4))) if rng.random() < 0.3 else (0, 0),
        )


def apply_lighting(img: F32, cond: Conditions, rng: np.random.Generator) -> F32:
    if cond.light == "dusk":
        img = img * np.array([0.62, 0.72, 0.88], np.float32)
    elif cond.light == "night":
        img = img * np.array([0.30, 0.28, 0.26], np.float32) + np.array([8, 4, 2], np.float32)
        h, w = img.shape[:2]
        for _ in range(int(rng.integers(2, 5))):  # street lamps: warm pools of light
            cx, cy = rng.uniform(0, w), rng.uniform(h * 0.3, h)
            yy, xx = np.ogrid[:h, :w]
            r = rng.uniform(0.15, 0.35) * w
            pool = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)).astype(np.float32)
            img = img * (1 + 0.9 * pool[..., None] * np.array([0.6, 0.9, 1.2], np.float32))
    else:
        img = img * float(rng.uniform(0.85, 1.15))
    return img


def apply_weather(img: F32, cond: Conditions, rng: np.random.Generator, depth: F32 | None = None) -> F32:
    h, w = img.shape[:2]
    if cond.fog > 0:
        if depth is None:
            k = np.full((h, w), cond.fog, np.float32)
        else:
            k = 1 - np.exp(-cond.fog * np.clip(depth, 0, 200) / 25.0)
        img = img * (1 - k[..., None]) + 190 * k[..., None]
    if cond.rain > 0:
        streaks = np.zeros((h, w), np.float32)
        n = int(cond.rain * w * h / 350)
        xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
        length = int(rng.integers(6, 14))
        for x, y in zip(xs, ys, strict=True):
            cv2.line(streaks, (int(x), int(y)), (int(x) + 2, int(y) + length), 1.0, 1)
        img = img * 0.9 + streaks[..., None] * 60 * cond.rain
    return img


def finish(img: F32, cond: Conditions, rng: np.random.Generator) -> U8:
    """Blur, sensor noise, quantise, JPEG round trip."""
    if cond.blur >= 3:
        k = np.zeros((cond.blur, cond.blur), np.float32)
        k[cond.blur // 2, :] = 1.0 / cond.blur
        img = np.asarray(cv2.filter2D(img, -1, k), np.float32)
    if cond.noise > 0:
        img = img + rng.normal(0, cond.noise, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, cond.jpeg])
    if ok:
        out = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
    return out


def shake(img: U8, dx: int, dy: int) -> U8:
    if dx == 0 and dy == 0:
        return img
    m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    out = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)
    return np.asarray(out, np.uint8)
