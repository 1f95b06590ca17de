"""Nadir drone scenes: roofs, yards and roads seen straight down.

A scene is laid out in metres on a ground plane and rendered at a ground sample distance
(GSD, metres per pixel); the same layout rendered at two GSDs or offsets is the same place.
Labelled objects: vehicles on roads and yards, steel sheds and enclosures on roofs and yards
(structures), litter heaps, vendor stalls (umbrellas, canopies) along roads.
"""

from __future__ import annotations

import numpy as np

from .canvas import (
    F32,
    Placed,
    Sprite,
    color,
    crop_to_alpha,
    ellipse,
    line,
    new_canvas,
    poly,
    rect,
    texture_sprite,
    value_noise,
)
from .objects import CANOPY_COLOURS, CAR_COLOURS, SHEET_COLOURS

PX_PER_M = 40  # canonical sprite resolution


def vehicle_top(rng: np.random.Generator) -> tuple[Sprite, float, float]:
    """Return sprite and its size in metres (length, width), heading along +x."""
    kind = str(rng.choice(["car", "car", "van", "truck"]))
    length, width = {"car": (4.5, 1.8), "van": (5.2, 2.0), "truck": (7.5, 2.4)}[kind]
    L, W = int(length * PX_PER_M), int(width * PX_PER_M)
    c = new_canvas(L, W)
    body = color(rng, CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))], 12)
    rect(c, 2, 2, L - 2, W - 2, body)
    glass = (60, 55, 50, 255)
    if kind == "truck":
        rect(c, L * 0.78, 4, L - 4, W - 4, (*tuple(int(v * 0.85) for v in body[:3]), 255))
        rect(c, 4, 4, L * 0.76, W - 4, color(rng, (205, 205, 205), 30))
    else:
        poly(c, [(L * 0.62, 6), (L * 0.75, 10), (L * 0.75, W - 10), (L * 0.62, W - 6)], glass)
        poly(c, [(L * 0.22, 8), (L * 0.3, 10), (L * 0.3, W - 10), (L * 0.22, W - 8)], glass)
        rect(c, L * 0.3, 9, L * 0.62, W - 9, (*tuple(min(255, int(v * 1.08)) for v in body[:3]), 255))
    return Sprite(texture_sprite(rng, c, 0.12), "vehicle"), length, width


def shed_top(rng: np.random.Generator) -> tuple[Sprite, float, float]:
    length, width = float(rng.uniform(4, 12)), float(rng.uniform(3, 7))
    L, W = int(length * PX_PER_M), int(width * PX_PER_M)
    c = new_canvas(L, W)
    sheet = color(rng, SHEET_COLOURS[int(rng.integers(len(SHEET_COLOURS)))], 25)
    rect(c, 0, 0, L, W, sheet)
    dark = (*tuple(int(v * 0.72) for v in sheet[:3]), 255)
    step = int(rng.integers(8, 14))
    for x in range(step, L, step):
        line(c, (x, 0), (x, W), dark, 2)
    if rng.random() < 0.6:  # ridge
        line(c, (0, W / 2), (L, W / 2), (240, 240, 240, 255), 3)
    return Sprite(texture_sprite(rng, c, 0.15), "structure"), length, width


def litter_top(rng: np.random.Generator) -> tuple[Sprite, float, float]:
    d = float(rng.uniform(1.0, 3.0))
    D = int(d * PX_PER_M)
    c = new_canvas(D, D)
    pts = [
        (D / 2 + np.cos(a) * D * rng.uniform(0.3, 0.5), D / 2 + np.sin(a) * D * rng.uniform(0.3, 0.5))
        for a in np.linspace(0, 2 * np.pi, 9)[:-1]
    ]
    poly(c, pts, color(rng, (70, 85, 95), 20))
    palette = [(235, 235, 235), (30, 30, 30), (40, 40, 170), (200, 140, 40), (60, 160, 220), (90, 140, 90)]
    for _ in range(int(rng.integers(10, 25))):
        r = rng.uniform(0.06, 0.14) * D
        ellipse(
            c,
            rng.uniform(0.2, 0.8) * D,
            rng.uniform(0.2, 0.8) * D,
            r,
            r * rng.uniform(0.5, 1),
            color(rng, palette[int(rng.integers(len(palette)))], 20),
            rng.uniform(0, 180),
        )
    return Sprite(texture_sprite(rng, crop_to_alpha(c), 0.25), "litter"), d, d


def stall_top(rng: np.random.Generator) -> tuple[Sprite, float, float]:
    d = float(rng.uniform(2.0, 3.2))
    D = int(d * PX_PER_M)
    c = new_canvas(D, D)
    canopy = color(rng, CANOPY_COLOURS[int(rng.integers(len(CANOPY_COLOURS)))], 20)
    stripe = color(rng, (235, 235, 235), 10)
    if rng.random() < 0.5:
        ellipse(c, D / 2, D / 2, D / 2 - 1, D / 2 - 1, canopy)
        for k in range(0, 360, 60):
            a0, a1 = np.radians(k), np.radians(k + 30)
            poly(
                c,
                [
                    (D / 2, D / 2),
                    (D / 2 + np.cos(a0) * D / 2, D / 2 + np.sin(a0) * D / 2),
                    (D / 2 + np.cos(a1) * D / 2, D / 2 + np.sin(a1) * D / 2),
                ],
                stripe,
            )
    else:
        rect(c, 0, 0, D, D, canopy)
        for k in range(0, D, max(4, D // 6)):
            rect(c, k, 0, k + D // 12, D, stripe)
    return Sprite(texture_sprite(rng, c, 0.15), "stall"), d, d


def tree_top(rng: np.random.Generator) -> tuple[Sprite, float, float]:
    d = float(rng.uniform(3, 7))
    D = int(d * PX_PER_M)
    c = new_canvas(D, D)
    for _ in range(8):
        ellipse(
            c,
            rng.uniform(0.3, 0.7) * D,
            rng.uniform(0.3, 0.7) * D,
            rng.uniform(0.2, 0.32) * D,
            rng.uniform(0.2, 0.32) * D,
            color(rng, (50, 110, 60), 25),
        )
    return Sprite(texture_sprite(rng, crop_to_alpha(c), 0.4), None), d, d


def rotate_sprite(sprite: Sprite, angle_deg: float) -> Sprite:
    import cv2

    h, w = sprite.bgra.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos) + 2, int(h * cos + w * sin) + 2
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    img = cv2.warpAffine(sprite.bgra, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    return Sprite(crop_to_alpha(np.asarray(img, np.uint8)), sprite.cls)


def render_ground(
    rng: np.random.Generator,
    w_m: float,
    h_m: float,
    gsd: float,
    roofs: list[tuple[float, float, float, float]],
    roads: list[tuple[float, float, float, float]],
) -> F32:
    """Yards (grass / dirt), roads, and roofs with parapets, float32 BGR."""
    w, h = round(w_m / gsd), round(h_m / gsd)
    n = value_noise(rng, h, w, (6, 24, 96))
    grass = np.array([60, 120, 90], np.float32) * (0.7 + 0.6 * n)[..., None]
    dirt = np.array([110, 140, 160], np.float32) * (0.75 + 0.5 * n)[..., None]
    mix = value_noise(rng, h, w, (3, 8))[..., None]
    img = np.where(mix > 0.55, dirt, grass)
    for x1, y1, x2, y2 in roads:
        a, b, c_, d = (int(v / gsd) for v in (x1, y1, x2, y2))
        img[b:d, a:c_] = (85 + 30 * n[b:d, a:c_])[..., None] * np.array([1, 1, 1.03], np.float32)
        if (c_ - a) > (d - b):  # horizontal road: centre line
            cy = (b + d) // 2
            for xs in range(a, c_, max(2, int(6 / gsd))):
                img[cy - 1 : cy + 1, xs : xs + int(3 / gsd)] = (220, 220, 220)
        else:
            cx = (a + c_) // 2
            for ys in range(b, d, max(2, int(6 / gsd))):
                img[ys : ys + int(3 / gsd), cx - 1 : cx + 1] = (220, 220, 220)
    for x1, y1, x2, y2 in roofs:
        a, b, c_, d = (int(v / gsd) for v in (x1, y1, x2, y2))
        tone = np.array(
            color(
                rng,
                [(150, 150, 150), (90, 90, 170), (170, 170, 160), (120, 130, 140)][int(rng.integers(4))],
                20,
            )[:3],
            np.float32,
        )
        img[b:d, a:c_] = tone * (0.85 + 0.3 * n[b:d, a:c_])[..., None]
        e = max(1, int(0.4 / gsd))
        img[b : b + e, a:c_] *= 1.2
        img[d - e : d, a:c_] *= 0.6
        img[b:d, a : a + e] *= 1.1
        img[b:d, c_ - e : c_] *= 0.7
    return np.clip(img, 0, 255)


def place_top(sprite: Sprite, x_m: float, y_m: float, gsd: float, angle: float, depth: float) -> Placed:
    s = 1.0 / (PX_PER_M * gsd)
    spr = rotate_sprite(sprite.resized(s), angle) if angle else sprite.resized(s)
    w, h = spr.size
    return Placed(spr, round(x_m / gsd - w / 2), round(y_m / gsd - h / 2), depth=depth)
