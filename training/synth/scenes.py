"""Whole labelled images for both viewpoints, from a seed.

``street_sample(seed)`` and ``drone_sample(seed)`` return ``(image BGR uint8, labels)`` where
labels are ``(class_name, (x1, y1, x2, y2) px)``. The same seed gives the same pixels and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import drone as dr
from . import objects as ob
from .canvas import F32, U8, Placed, Sprite, composite
from .effects import Conditions, apply_lighting, apply_weather, finish, shake
from .street import KERB, ROAD_HALF, WALK, StreetCamera, StreetLayout, place_on_ground, render_background

Label = tuple[str, tuple[float, float, float, float]]
MIN_VISIBLE = 0.35
MIN_SIDE = 5.0


@dataclass
class WorldObject:
    """An object standing on the street's ground plane."""

    kind: str
    sprite: Sprite
    x: float
    z: float
    height_m: float
    obj_id: int = -1


def shadow_of(sprite: Sprite, strength: float = 0.45) -> Sprite:
    a = (sprite.bgra[..., 3].astype(np.float32) * strength).astype(np.uint8)
    img = np.zeros_like(sprite.bgra)
    img[..., 3] = a
    return Sprite(img, None, sprite.anchor)


def make_street_object(rng: np.random.Generator, kind: str) -> tuple[Sprite, float]:
    if kind == "vehicle":
        vk = str(rng.choice(["car", "car", "car", "van", "truck", "moto", "tricycle"]))
        return ob.vehicle_oblique(rng, vk), {
            "car": 1.5,
            "van": 2.0,
            "truck": 3.0,
            "moto": 1.6,
            "tricycle": 1.6,
        }[vk] * float(rng.uniform(0.92, 1.08))
    if kind == "stall":
        return ob.stall_oblique(rng), float(rng.uniform(2.1, 2.6))
    if kind == "litter":
        return ob.litter_oblique(rng), float(rng.uniform(0.35, 0.7))
    if kind == "structure":
        return ob.structure_oblique(rng), float(rng.uniform(2.4, 3.0))
    if kind == "person":
        return ob.person(rng), float(rng.uniform(1.55, 1.85))
    if kind == "tree":
        return ob.tree_oblique(rng), float(rng.uniform(5, 8))
    if kind == "bench":
        return ob.bench_oblique(rng), 0.9
    if kind == "bicycle":
        return ob.bicycle_oblique(rng), 1.0
    raise ValueError(f"unknown street object kind {kind!r}")


def random_position(
    rng: np.random.Generator, kind: str, side: int, z_near: float = 6.0
) -> tuple[float, float]:
    """Where a kind of object plausibly stands: (X across the street, Z along it).

    ``z_near`` is the nearest ground distance the camera sees; a few objects stand nearer,
    cut by the frame edge, as on a real camera."""
    z0 = z_near * float(rng.uniform(0.85, 1.0)) if rng.random() < 0.15 else z_near
    z = z0 + float(rng.uniform(0.5, 14 if kind == "litter" else 26)) * (z_near / 10) ** 0.5
    walk = ROAD_HALF + KERB
    if kind == "vehicle":
        spot = rng.random()
        if spot < 0.45:
            x = side * float(rng.uniform(ROAD_HALF - 1.6, ROAD_HALF - 0.9))  # at the kerb
        elif spot < 0.65:
            x = side * float(rng.uniform(walk + 0.9, walk + WALK - 1.0))  # on the sidewalk
        else:
            x = float(rng.uniform(-ROAD_HALF + 1.2, ROAD_HALF - 1.2))
    elif kind in ("stall", "bench", "bicycle", "person"):
        x = side * float(rng.uniform(walk + 0.8, walk + WALK - 0.6))
    elif kind == "structure":
        x = side * float(rng.uniform(walk + WALK - 2.0, walk + WALK - 1.2))
    elif kind == "tree":
        x = side * float(walk + 0.6)
    else:  # litter: road edge or sidewalk
        x = side * float(rng.uniform(ROAD_HALF - 1.0, walk + WALK - 0.5))
    return x, z


def random_street_objects(rng: np.random.Generator, cam: StreetCamera) -> list[WorldObject]:
    z_near = cam.focal * cam.cam_height / (cam.height * (1 - cam.horizon))
    counts = {
        "vehicle": int(rng.integers(0, 7)),
        "stall": int(rng.integers(0, 3)),
        "litter": int(rng.integers(0, 6)),
        "structure": int(rng.random() < 0.45) + int(rng.random() < 0.1),
        "person": int(rng.integers(0, 7)),
        "tree": int(rng.integers(0, 4)),
        "bench": int(rng.integers(0, 2)),
        "bicycle": int(rng.integers(0, 3)),
    }
    out: list[WorldObject] = []
    for kind, n in counts.items():
        for _ in range(n):
            sprite, hm = make_street_object(rng, kind)
            side = 1 if rng.random() < 0.5 else -1
            x, z = random_position(rng, kind, side, z_near)
            out.append(WorldObject(kind, sprite, x, z, hm, obj_id=len(out)))
    return out


def render_street(
    cam: StreetCamera, background: F32, objs: list[WorldObject], cond: Conditions, rng: np.random.Generator
) -> tuple[U8, list[tuple[Label, int]]]:
    """Composite objects onto a background and apply the conditions; labels carry obj_id."""
    frame = background.copy()
    placed: list[Placed] = []
    for o in objs:
        p = place_on_ground(cam, o.sprite, o.x, o.z, o.height_m)
        if p is None:
            continue
        p.obj_id = o.obj_id
        if o.kind in ("vehicle", "stall", "structure", "bench") and cond.light != "night":
            sh = shadow_of(p.sprite, 0.35)
            h = sh.bgra.shape[0]
            squash = max(2, h // 5)
            flat = np.asarray(cv2.resize(sh.bgra, (sh.bgra.shape[1] + squash, squash)), np.uint8)
            placed.append(Placed(Sprite(flat, None), p.x + 2, p.y + h - squash // 2, depth=o.z + 0.01))
        placed.append(p)
    hits = composite(frame, placed)
    frame = apply_lighting(frame, cond, rng)
    frame = apply_weather(frame, cond, rng, depth=_depth_map(cam))
    img = shake(finish(frame, cond, rng), *cond.shake)
    labels: list[tuple[Label, int]] = []
    dx, dy = cond.shake
    for p, (x1, y1, x2, y2), vis in hits:
        if vis < MIN_VISIBLE or p.sprite.cls is None:
            continue
        box = (max(0.0, x1 + dx), max(0.0, y1 + dy), min(cam.width, x2 + dx), min(cam.height, y2 + dy))
        if box[2] - box[0] < MIN_SIDE or box[3] - box[1] < MIN_SIDE:
            continue
        labels.append(((p.sprite.cls, box), p.obj_id))
    return img, labels


def _depth_map(cam: StreetCamera) -> F32:
    v = np.arange(cam.height, dtype=np.float32)[:, None] + 0.5
    hz = cam.height * cam.horizon
    z = np.where(v > hz + 1, cam.focal * cam.cam_height / np.maximum(v - hz, 1e-3), 150.0)
    return np.broadcast_to(np.minimum(z, 150.0), (cam.height, cam.width)).astype(np.float32)


def street_sample(seed: int, width: int = 640, height: int = 360) -> tuple[U8, list[Label]]:
    rng = np.random.default_rng([seed, 1])
    cam = StreetCamera.random(rng, width, height)
    lay = StreetLayout.random(rng)
    bg = render_background(cam, lay, rng)
    objs = random_street_objects(rng, cam)
    cond = Conditions.random(rng)
    img, labels = render_street(cam, bg, objs, cond, rng)
    return img, [lab for lab, _ in labels]


# ----------------------------------------------------------------------------- drone
def drone_sample(seed: int, size: int = 640) -> tuple[U8, list[Label]]:
    rng = np.random.default_rng([seed, 2])
    gsd = float(rng.uniform(0.025, 0.05))
    span = size * gsd
    roads: list[tuple[float, float, float, float]] = []
    roofs: list[tuple[float, float, float, float]] = []
    horizontal = rng.random() < 0.5
    rw = float(rng.uniform(6, 9))
    r0 = float(rng.uniform(0.1, 0.7)) * span
    roads.append((0, r0, span, r0 + rw) if horizontal else (r0, 0, r0 + rw, span))
    for _ in range(int(rng.integers(1, 4))):
        w, h = float(rng.uniform(6, 16)), float(rng.uniform(6, 16))
        x, y = float(rng.uniform(0, span - 4)), float(rng.uniform(0, span - 4))
        roofs.append((x, y, min(span, x + w), min(span, y + h)))
    img = dr.render_ground(rng, span, span, gsd, roofs, roads)

    def on_road() -> tuple[float, float, float]:
        t = float(rng.uniform(0, span))
        o = r0 + float(rng.uniform(1.5, rw - 1.5))
        return (t, o, 0.0) if horizontal else (o, t, 90.0)

    def anywhere() -> tuple[float, float, float]:
        return float(rng.uniform(0, span)), float(rng.uniform(0, span)), float(rng.uniform(0, 180))

    placed: list[Placed] = []
    items: list[tuple[Sprite, float, float, float, float]] = []  # sprite, x, y, angle, depth
    for _ in range(int(rng.integers(0, 5))):
        s, _, _ = dr.vehicle_top(rng)
        x, y, a = on_road() if rng.random() < 0.7 else anywhere()
        items.append((s, x, y, a + float(rng.choice([0, 180])) + float(rng.normal(0, 4)), 3.0))
    for _ in range(int(rng.integers(0, 3))):
        s, _, _ = dr.shed_top(rng)
        if roofs and rng.random() < 0.7:
            x1, y1, x2, y2 = roofs[int(rng.integers(len(roofs)))]
            x, y = float(rng.uniform(x1, x2)), float(rng.uniform(y1, y2))
        else:
            x, y, _ = anywhere()
        items.append((s, x, y, float(rng.choice([0, 90])) + float(rng.normal(0, 5)), 2.0))
    for _ in range(int(rng.integers(0, 4))):
        s, _, _ = dr.litter_top(rng)
        x, y, a = anywhere()
        items.append((s, x, y, a, 4.0))
    for _ in range(int(rng.integers(0, 3))):
        s, _, _ = dr.stall_top(rng)
        x, y, _ = on_road()
        off = rw / 2 + 1.5
        x, y = (
            (x, r0 + (-1.5 if rng.random() < 0.5 else rw + 1.5))
            if horizontal
            else (r0 + (-1.5 if rng.random() < 0.5 else rw + 1.5), y)
        )
        del off
        items.append((s, x, y, float(rng.uniform(0, 90)), 2.5))
    for _ in range(int(rng.integers(0, 4))):
        s, _, _ = dr.tree_top(rng)
        x, y, a = anywhere()
        items.append((s, x, y, a, 0.5))
    sun = (float(rng.uniform(-1, 1)), float(rng.uniform(0.3, 1)))
    for s, x, y, a, depth in items:
        p = dr.place_top(s, x, y, gsd, a, depth)
        if s.cls != "litter":
            sh = shadow_of(p.sprite, 0.4)
            off = 1.2 / gsd
            placed.append(Placed(sh, p.x + round(sun[0] * off), p.y + round(sun[1] * off), depth=10.0))
        placed.append(p)
    hits = composite(img, placed)
    cond = Conditions.random(rng)
    cond.light = "day" if rng.random() < 0.8 else "dusk"
    img = apply_lighting(img, cond, rng)
    img = apply_weather(img, cond, rng)
    out = finish(img, cond, rng)
    labels: list[Label] = []
    for p, box, vis in hits:
        if (
            vis >= MIN_VISIBLE
            and p.sprite.cls is not None
            and min(box[2] - box[0], box[3] - box[1]) >= MIN_SIDE
        ):
            labels.append((p.sprite.cls, box))
    return out, labels
