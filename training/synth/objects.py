"""Procedural object sprites, oblique (street camera) and nadir (drone) views.

Sprites are drawn at a canonical size and scaled by the renderer. Colours are BGR.
"""

from __future__ import annotations

import numpy as np

from .canvas import (
    Sprite,
    color,
    crop_to_alpha,
    ellipse,
    line,
    new_canvas,
    poly,
    rect,
    texture_sprite,
    vertical_shade,
)

CAR_COLOURS = [
    (235, 235, 235),
    (190, 190, 195),
    (40, 40, 45),
    (30, 30, 170),
    (150, 80, 30),
    (60, 110, 60),
    (200, 200, 180),
    (80, 80, 90),
    (20, 140, 210),
]
CANOPY_COLOURS = [
    (40, 40, 200),
    (200, 120, 30),
    (30, 170, 230),
    (60, 160, 60),
    (230, 230, 230),
    (150, 40, 160),
]
SHEET_COLOURS = [(190, 120, 40), (200, 200, 205), (170, 150, 60), (120, 140, 150), (220, 170, 90)]
CLOTHES = [(40, 40, 40), (200, 200, 200), (40, 40, 160), (140, 90, 40), (60, 120, 60), (30, 90, 190)]


# ----------------------------------------------------------------------------- street (oblique) sprites
def vehicle_oblique(rng: np.random.Generator, kind: str | None = None) -> Sprite:
    """A vehicle seen from behind/front with a hint of its side; canonical width 200 px."""
    kind = kind or str(rng.choice(["car", "car", "car", "van", "truck", "moto", "tricycle"]))
    body = color(rng, CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))], 12)
    dark = (25, 25, 28, 255)
    glass = color(rng, (70, 60, 50), 15)
    side = int(rng.integers(0, 70)) * (1 if rng.random() < 0.5 else -1)  # visible side panel width
    if kind in ("moto", "tricycle"):
        c = new_canvas(160, 200)
        if kind == "tricycle":
            rect(c, 20, 70, 140, 150, color(rng, (60, 110, 160), 30))  # cargo box
            ellipse(c, 35, 165, 16, 28, dark)
            ellipse(c, 125, 165, 16, 28, dark)
        ellipse(c, 80, 170, 14, 28, dark)
        rect(c, 68, 95, 92, 160, body)
        ellipse(c, 80, 55, 20, 26, color(rng, CLOTHES[int(rng.integers(len(CLOTHES)))]))  # rider
        ellipse(c, 80, 22, 14, 16, color(rng, (60, 60, 60), 30))  # helmet
        line(c, (50, 90), (110, 90), dark, 6)
        spr = texture_sprite(rng, vertical_shade(crop_to_alpha(c)))
        return Sprite(spr, "vehicle")
    h = {"car": 150, "van": 200, "truck": 240}[kind]
    w = 200 + abs(side)
    c = new_canvas(w + 10, h + 20)
    x0 = 5 + max(0, side)
    if side:  # the visible flank recedes: its far edge is shorter than the edge at the body
        near, far = (x0, 5) if side > 0 else (x0 + 200, x0 + 200 + abs(side))
        flank = (*tuple(int(v * 0.72) for v in body[:3]), 255)
        poly(c, [(near, h * 0.3), (far, h * 0.4), (far, h - 24), (near, h - 12)], flank)
        poly(c, [(near, h * 0.32), (far, h * 0.41), (far, h * 0.5), (near, h * 0.48)], glass)
        wx = (near + far) / 2
        rect(c, wx - 8, h - 30, wx + 8, h - 8, dark)
    if kind == "truck":
        rect(c, x0, 0, x0 + 200, h * 0.72, color(rng, (200, 200, 200), 40))  # cargo box
        rect(c, x0 + 6, h * 0.72, x0 + 194, h - 18, body)
        for k in range(1, 4):
            line(c, (x0 + 50 * k, 4), (x0 + 50 * k, h * 0.7), (150, 150, 150, 255), 2)
    else:
        roof = h * (0.05 if kind == "van" else 0.12)
        poly(c, [(x0 + 30, roof), (x0 + 170, roof), (x0 + 195, h * 0.5), (x0 + 5, h * 0.5)], body)
        poly(c, [(x0 + 40, roof + 8), (x0 + 160, roof + 8), (x0 + 180, h * 0.46), (x0 + 20, h * 0.46)], glass)
        rect(c, x0, h * 0.48, x0 + 200, h - 18, body)
    rect(c, x0 + 2, h - 40, x0 + 198, h - 24, (60, 60, 60, 255))  # bumper
    lamp = (30, 30, 200, 255) if rng.random() < 0.6 else (200, 230, 240, 255)
    rect(c, x0 + 8, h * 0.55, x0 + 38, h * 0.55 + 14, lamp)
    rect(c, x0 + 162, h * 0.55, x0 + 192, h * 0.55 + 14, lamp)
    rect(
        c,
        x0 + 80,
        h * 0.62,
        x0 + 120,
        h * 0.62 + 14,
        (230, 160, 20, 255) if rng.random() < 0.5 else (240, 240, 240, 255),
    )  # plate
    for wx in (x0 + 12, x0 + 158):
        rect(c, wx, h - 26, wx + 30, h + 8, dark)
    spr = texture_sprite(rng, vertical_shade(crop_to_alpha(c), 1.15, 0.75), 0.12)
    return Sprite(spr, "vehicle")


def person(rng: np.random.Generator, cls: str | None = None) -> Sprite:
    c = new_canvas(60, 180)
    top = color(rng, CLOTHES[int(rng.integers(len(CLOTHES)))], 30)
    legs = color(rng, CLOTHES[int(rng.integers(len(CLOTHES)))], 30)
    rect(c, 18, 95, 29, 175, legs)
    rect(c, 31, 95, 42, 175, legs)
    poly(c, [(14, 40), (46, 40), (50, 100), (10, 100)], top)
    rect(c, 6, 45, 13, 95, top)
    rect(c, 47, 45, 54, 95, top)
    ellipse(c, 30, 22, 13, 16, color(rng, (120, 150, 190), 30))
    ellipse(c, 30, 12, 13, 8, color(rng, (30, 30, 30), 20))
    return Sprite(texture_sprite(rng, crop_to_alpha(c)), cls)


def stall_oblique(rng: np.random.Generator) -> Sprite:
    """Vendor cart or table with a canopy or umbrella, goods and a vendor."""
    w, h = 260, 260
    c = new_canvas(w, h)
    canopy = color(rng, CANOPY_COLOURS[int(rng.integers(len(CANOPY_COLOURS)))], 20)
    stripe = color(rng, (235, 235, 235), 15)
    umbrella = rng.random() < 0.5
    if umbrella:
        line(c, (130, 40), (130, 190), (90, 90, 90, 255), 3)
        poly(c, [(130, 10), (250, 70), (10, 70)], canopy)
        for k in range(3):
            poly(c, [(130, 10), (40 + 70 * k, 70), (70 + 70 * k, 70)], stripe)
    else:
        for px in (30, 230):
            line(c, (px, 60), (px, 240), (80, 80, 80, 255), 3)
        poly(c, [(15, 30), (245, 30), (255, 70), (5, 70)], canopy)
        for k in range(0, 250, 40):
            rect(c, 5 + k, 62, 25 + k, 78, stripe)
    cart = color(
        rng, [(60, 90, 140), (150, 150, 150), (40, 100, 60), (70, 70, 160)][int(rng.integers(4))], 20
    )
    rect(c, 20, 150, 240, 225, cart)
    rect(c, 20, 145, 240, 155, (200, 200, 200, 255))
    for _ in range(int(rng.integers(6, 14))):  # goods on the counter
        gx, gy = rng.uniform(30, 230), rng.uniform(125, 148)
        ellipse(
            c,
            gx,
            gy,
            rng.uniform(6, 14),
            rng.uniform(5, 10),
            color(
                rng,
                [(30, 120, 230), (40, 200, 60), (30, 30, 200), (40, 200, 230), (200, 200, 200)][
                    int(rng.integers(5))
                ],
                25,
            ),
        )
    ellipse(c, 50, 238, 16, 16, (30, 30, 30, 255))
    ellipse(c, 210, 238, 16, 16, (30, 30, 30, 255))
    if rng.random() < 0.8:
        v = person(rng).resized(0.85).bgra
        vh, vw = v.shape[:2]
        ox = 180 if rng.random() < 0.5 else 10
        region = c[h - vh : h, ox : ox + vw]
        a = v[..., 3:4] > 0
        region[:] = np.where(a, v, region)
    return Sprite(texture_sprite(rng, vertical_shade(crop_to_alpha(c))), "stall")


def litter_oblique(rng: np.random.Generator) -> Sprite:
    """Litter lying on the ground, squashed for the oblique view: bags, bottles, scatter, a pile."""
    kind = str(rng.choice(["bags", "bottles", "scatter", "pile"]))
    c = new_canvas(200, 110)
    palette = [
        (235, 235, 235),
        (30, 30, 30),
        (40, 40, 170),
        (200, 140, 40),
        (60, 160, 220),
        (90, 140, 90),
        (160, 170, 175),
    ]
    if kind == "pile":
        poly(c, [(10, 105), (40, 50), (90, 25), (150, 40), (190, 105)], color(rng, (70, 80, 90), 20))
    n = {"bags": 4, "bottles": 7, "scatter": 16, "pile": 14}[kind]
    for _ in range(n):
        col = color(rng, palette[int(rng.integers(len(palette)))], 20)
        x, y = rng.uniform(20, 180), rng.uniform(45 if kind != "pile" else 35, 100)
        if kind in ("bags", "pile"):
            r = rng.uniform(12, 26)
            ellipse(c, x, y, r, r * 0.7, col, rng.uniform(0, 180))
            ellipse(c, x - r * 0.3, y - r * 0.3, r * 0.3, r * 0.2, (250, 250, 250, 255))
        elif kind == "bottles":
            ellipse(c, x, y, rng.uniform(12, 18), 5, col, rng.uniform(-40, 40))
        else:
            pts = [(x + rng.uniform(-10, 10), y + rng.uniform(-6, 6)) for _ in range(4)]
            poly(c, pts, col)
    return Sprite(texture_sprite(rng, crop_to_alpha(c), 0.25), "litter")


def structure_oblique(rng: np.random.Generator) -> Sprite:
    """A street shack or enclosure: corrugated steel sheets, sloped roof, hoarding."""
    kind = str(rng.choice(["shack", "shack", "enclosure"]))
    sheet = color(rng, SHEET_COLOURS[int(rng.integers(len(SHEET_COLOURS)))], 20)
    w = int(rng.integers(240, 340))
    h = 230
    c = new_canvas(w, h)
    if kind == "shack":
        rect(c, 10, 60, w - 10, h, sheet)
        poly(
            c,
            [(0, 70), (w / 2, 10), (w, 70)] if rng.random() < 0.5 else [(0, 45), (w, 15), (w, 70), (0, 75)],
            (*tuple(int(v * 0.8) for v in sheet[:3]), 255),
        )
        rect(c, w * 0.55, 110, w * 0.75, h, (50, 50, 55, 255))  # door
        rect(c, w * 0.15, 100, w * 0.4, 150, color(rng, (90, 80, 70), 20))  # window
    else:
        rect(c, 0, 40, w, h, sheet)
        rect(c, 0, 40, w, 55, (240, 240, 240, 255))
    for x in range(14, w - 10, 9):  # corrugation
        line(
            c,
            (x, 62 if kind == "shack" else 56),
            (x, h - 2),
            (*tuple(int(v * 0.7) for v in sheet[:3]), 255),
            2,
        )
    return Sprite(texture_sprite(rng, vertical_shade(crop_to_alpha(c), 1.1, 0.85)), "structure")


def tree_oblique(rng: np.random.Generator) -> Sprite:
    c = new_canvas(220, 400)
    rect(c, 100, 200, 120, 400, color(rng, (40, 60, 80), 15))
    for _ in range(9):
        ellipse(
            c,
            rng.uniform(50, 170),
            rng.uniform(50, 220),
            rng.uniform(35, 60),
            rng.uniform(30, 50),
            color(rng, (50, 110, 55), 25),
        )
    return Sprite(texture_sprite(rng, crop_to_alpha(c), 0.35), None)


def bench_oblique(rng: np.random.Generator) -> Sprite:
    c = new_canvas(200, 90)
    col = color(rng, (60, 100, 140), 25)
    rect(c, 0, 20, 200, 35, col)
    rect(c, 0, 45, 200, 58, col)
    for x in (15, 180):
        rect(c, x, 35, x + 6, 90, (50, 50, 50, 255))
    return Sprite(texture_sprite(rng, crop_to_alpha(c)), None)


def bicycle_oblique(rng: np.random.Generator) -> Sprite:
    c = new_canvas(200, 120)
    col = color(rng, (60, 60, 160), 60)
    for cx in (40, 160):
        cv_ring(c, cx, 85, 32)
    line(c, (40, 85), (95, 45), col, 5)
    line(c, (95, 45), (160, 85), col, 5)
    line(c, (95, 45), (150, 40), col, 5)
    line(c, (150, 40), (150, 25), col, 4)
    return Sprite(crop_to_alpha(c), None)


def cv_ring(c: np.ndarray, cx: float, cy: float, r: float) -> None:
    import cv2

    cv2.circle(c, (int(cx), int(cy)), int(r), (30, 30, 30, 255), 5, cv2.LINE_AA)
