"""Sprites, textures and compositing shared by the street and drone renderers.

Everything takes an explicit ``numpy.random.Generator`` so the same seed gives the same
pixels and the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

CLASSES = ("vehicle", "stall", "litter", "structure")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
RULE_LABELS = {"vehicle": "vehicle", "stall": "vendor", "litter": "litter", "structure": "structure"}


@dataclass
class Sprite:
    """An RGBA cut-out with its ground anchor (bottom centre) in sprite pixels."""

    bgra: U8
    cls: str | None  # class name or None for a distractor
    anchor: tuple[float, float] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.bgra.shape[1], self.bgra.shape[0]

    def resized(self, scale: float) -> Sprite:
        w, h = self.size
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = np.asarray(cv2.resize(self.bgra, (nw, nh), interpolation=interp), np.uint8)
        anchor = None if self.anchor is None else (self.anchor[0] * nw / w, self.anchor[1] * nh / h)
        return Sprite(img, self.cls, anchor)


def new_canvas(w: int, h: int) -> U8:
    return np.zeros((h, w, 4), np.uint8)


def color(
    rng: np.random.Generator, base: tuple[int, int, int], jitter: int = 18
) -> tuple[int, int, int, int]:
    c = np.clip(np.array(base) + rng.integers(-jitter, jitter + 1, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2]), 255


def poly(canvas: U8, pts: list[tuple[float, float]], col: tuple[int, ...]) -> None:
    arr = np.round(np.array(pts, np.float32) * 4).astype(np.int32)
    cv2.fillPoly(canvas, [arr], col, lineType=cv2.LINE_AA, shift=2)


def rect(canvas: U8, x1: float, y1: float, x2: float, y2: float, col: tuple[int, ...]) -> None:
    poly(canvas, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)], col)


def ellipse(
    canvas: U8, cx: float, cy: float, rx: float, ry: float, col: tuple[int, ...], angle: float = 0
) -> None:
    cv2.ellipse(
        canvas,
        (round(cx * 4), round(cy * 4)),
        (max(1, round(rx * 4)), max(1, round(ry * 4))),
        angle,
        0,
        360,
        col,
        -1,
        cv2.LINE_AA,
        2,
    )


def line(
    canvas: U8, p: tuple[float, float], q: tuple[float, float], col: tuple[int, ...], th: int = 1
) -> None:
    cv2.line(
        canvas,
        (round(p[0] * 4), round(p[1] * 4)),
        (round(q[0] * 4), round(q[1] * 4)),
        col,
        th,
        cv2.LINE_AA,
        2,
    )


def value_noise(rng: np.random.Generator, h: int, w: int, octaves: tuple[int, ...] = (4, 16, 64)) -> F32:
    """Fractal value noise in [0, 1]: a few upsampled random grids summed."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for i, cells in enumerate(octaves):
        gh, gw = max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))
        grid = rng.random((gh, gw), dtype=np.float32)
        amp = 0.5**i
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
    result: F32 = np.clip(out / total, 0, 1).astype(np.float32)
    return result


def texture_sprite(rng: np.random.Generator, sprite: U8, strength: float = 0.18) -> U8:
    """Multiply a sprite's colours by grain so surfaces are not flat."""
    h, w = sprite.shape[:2]
    n = value_noise(rng, h, w, (3, 12, max(13, w // 2)))
    grain = rng.normal(0, 0.04, (h, w)).astype(np.float32)
    f = 1 + strength * (n - 0.5) * 2 + grain
    rgb = np.clip(sprite[..., :3].astype(np.float32) * f[..., None], 0, 255).astype(np.uint8)
    return np.dstack([rgb, sprite[..., 3]])


def vertical_shade(sprite: U8, top: float = 1.12, bottom: float = 0.82) -> U8:
    h = sprite.shape[0]
    g = np.linspace(top, bottom, h, dtype=np.float32)[:, None, None]
    rgb = np.clip(sprite[..., :3].astype(np.float32) * g, 0, 255).astype(np.uint8)
    return np.dstack([rgb, sprite[..., 3]])


def crop_to_alpha(sprite: U8) -> U8:
    ys, xs = np.nonzero(sprite[..., 3] > 8)
    if len(xs) == 0:
        return sprite
    return sprite[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


@dataclass(eq=False)
class Placed:
    """A sprite placed on a frame: top-left pixel position and draw order key."""

    sprite: Sprite
    x: int
    y: int
    depth: float  # larger = farther; drawn first
    obj_id: int = -1


def composite(
    frame: F32, placed: list[Placed]
) -> list[tuple[Placed, tuple[float, float, float, float], float]]:
    """Alpha-composite far-to-near; return labelled objects with their clipped box and visible fraction."""
    fh, fw = frame.shape[:2]
    order = sorted(placed, key=lambda p: -p.depth)
    owner = np.full((fh, fw), -1, np.int32)
    boxes: list[tuple[int, Placed, tuple[float, float, float, float], int]] = []
    for idx, p in enumerate(order):
        img = p.sprite.bgra
        h, w = img.shape[:2]
        x1, y1, x2, y2 = p.x, p.y, p.x + w, p.y + h
        cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(fw, x2), min(fh, y2)
        if cx1 >= cx2 or cy1 >= cy2:
            continue
        sub = img[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]
        a = sub[..., 3:4].astype(np.float32) / 255.0
        region = frame[cy1:cy2, cx1:cx2]
        region *= 1 - a
        region += a * sub[..., :3].astype(np.float32)
        solid = sub[..., 3] > 128
        owner[cy1:cy2, cx1:cx2][solid] = idx
        if p.sprite.cls is not None:
            full = int((img[..., 3] > 128).sum())
            ys, xs = np.nonzero(img[..., 3] > 128)
            if full == 0:
                continue
            bx1, by1 = max(0, x1 + xs.min()), max(0, y1 + ys.min())
            bx2, by2 = min(fw, x1 + xs.max() + 1), min(fh, y1 + ys.max() + 1)
            if bx2 - bx1 < 2 or by2 - by1 < 2:
                continue
            boxes.append((idx, p, (float(bx1), float(by1), float(bx2), float(by2)), full))
    out = []
    for idx, p, box, full in boxes:
        visible = int((owner == idx).sum())
        out.append((p, box, visible / full))
    return out
