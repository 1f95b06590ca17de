"""Oblique street-camera scenes: a pole-mounted camera looking along a street.

The ground (road with lanes, kerb, sidewalk with tiles) and the shop fronts are ray-cast
from a pinhole camera, so textures shrink with distance the way a real camera sees them.
Objects stand on the ground plane at world positions (X across, Z along the street, metres).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .canvas import F32, Placed, Sprite, value_noise

ROAD_HALF = 7.0  # m, road from -7 to +7
KERB = 0.25
WALK = 4.0  # sidewalk width


@dataclass
class StreetCamera:
    width: int = 640
    height: int = 360
    cam_height: float = 6.0  # m above the road
    cam_x: float = 4.0  # lateral position, m
    horizon: float = 0.3  # horizon row as a fraction of the height
    focal: float = 560.0  # px
    vx: float = 0.5  # vanishing point column as a fraction of the width

    def project(self, x: float, z: float, y_up: float = 0.0) -> tuple[float, float]:
        u = self.width * self.vx + self.focal * (x - self.cam_x) / z
        v = self.height * self.horizon + self.focal * (self.cam_height - y_up) / z
        return u, v

    def scale(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.focal / z

    @classmethod
    def random(cls, rng: np.random.Generator, width: int = 640, height: int = 360) -> StreetCamera:
        return cls(
            width=width,
            height=height,
            cam_height=float(rng.uniform(4.5, 8.0)),
            cam_x=float(rng.uniform(-2.0, 9.0)),
            horizon=float(rng.uniform(0.18, 0.36)),
            focal=float(rng.uniform(0.75, 1.05) * width),
            vx=float(rng.uniform(0.3, 0.7)),
        )


@dataclass
class StreetLayout:
    road_tone: float
    walk_tone: tuple[float, float, float]
    facade_seed: int
    left_facade: float  # X of the far-side facade
    right_facade: float
    lanes: int
    walk_left: bool = True
    shop_colours: list[tuple[int, int, int]] = field(default_factory=list)

    @classmethod
    def random(cls, rng: np.random.Generator) -> StreetLayout:
        shop = [
            tuple(int(c) for c in (rng.integers(60, 200, 3) * 0.6 + rng.integers(90, 160) * 0.4))
            for _ in range(12)
        ]
        return cls(
            road_tone=float(rng.uniform(70, 120)),
            walk_tone=tuple(float(v) for v in rng.uniform(120, 185, 3) * [1, 1.02, 1.05]),  # type: ignore[arg-type]
            facade_seed=int(rng.integers(1 << 30)),
            left_facade=-(ROAD_HALF + KERB + WALK),
            right_facade=ROAD_HALF + KERB + WALK,
            lanes=int(rng.choice([2, 4])),
            shop_colours=shop,  # type: ignore[arg-type]
        )


def render_background(cam: StreetCamera, lay: StreetLayout, rng: np.random.Generator) -> F32:
    """Sky, facades and the ground plane, float32 BGR 0..255."""
    w, h = cam.width, cam.height
    hz = cam.height * cam.horizon
    us, vs = np.meshgrid(np.arange(w, dtype=np.float32) + 0.5, np.arange(h, dtype=np.float32) + 0.5)
    img = np.zeros((h, w, 3), np.float32)
    # sky
    t = np.clip(vs / max(hz, 1), 0, 1)[..., None]
    img[:] = (1 - t) * np.array([215, 180, 140], np.float32) + t * np.array([225, 215, 205], np.float32)
    ground = vs > hz + 0.5
    z = np.where(ground, cam.focal * cam.cam_height / np.maximum(vs - hz, 1e-3), 1e6)
    x = cam.cam_x + (us - w * cam.vx) * z / cam.focal
    grain = value_noise(rng, 256, 256, (8, 32, 128))
    gi = ((np.abs(x) * 9).astype(np.int64) % 256, (z * 9).astype(np.int64) % 256)
    tex = grain[gi[1], gi[0]]
    # road
    road = ground & (np.abs(x) <= ROAD_HALF)
    tone = lay.road_tone * (0.85 + 0.3 * tex)
    img[road] = np.stack([tone, tone, tone * 1.02], -1)[road]
    # lane markings: dashed between lanes, solid centre line
    lane_w = 2 * ROAD_HALF / lay.lanes
    for k in range(1, lay.lanes):
        lx = -ROAD_HALF + k * lane_w
        width = 0.15 * (1.5 if k == lay.lanes // 2 else 1)
        dashed = k != lay.lanes // 2
        mark = road & (np.abs(x - lx) < width)
        if dashed:
            mark &= (z % 9.0) < 4.0
        img[mark] = (225, 225, 225) if k != lay.lanes // 2 else (40, 200, 230)
    for edge in (-ROAD_HALF + 0.4, ROAD_HALF - 0.4):
        img[road & (np.abs(x - edge) < 0.1)] = (220, 220, 220)
    # kerb and sidewalks with tiles
    kerb = ground & (np.abs(x) > ROAD_HALF) & (np.abs(x) <= ROAD_HALF + KERB)
    img[kerb] = (175, 175, 170)
    walk = ground & (np.abs(x) > ROAD_HALF + KERB)
    tile = ((np.abs(x) % 0.6) < 0.04) | ((z % 0.6) < 0.04)
    wt = np.array(lay.walk_tone, np.float32)
    img[walk] = wt[None, :] * (0.85 + 0.25 * tex[walk])[:, None]
    img[walk & tile] *= 0.8
    # facades: vertical planes at X = left/right facade
    for fx in (lay.left_facade, lay.right_facade):
        side = (us - w * cam.vx) * np.sign(fx - cam.cam_x) > 0
        zf = cam.focal * (fx - cam.cam_x) / np.where(np.abs(us - w * cam.vx) < 1e-3, 1e-3, us - w * cam.vx)
        yup = cam.cam_height - (vs - hz) * zf / cam.focal
        hit = side & (zf > 1.0) & (yup >= 0) & (yup <= 14.0) & (zf < z)
        _paint_facade(img, hit, zf, yup, lay, grain)
    return img


def _paint_facade(
    img: F32, hit: np.ndarray, zf: np.ndarray, yup: np.ndarray, lay: StreetLayout, grain: np.ndarray
) -> None:
    shop = (zf // 6.0).astype(np.int64) % len(lay.shop_colours)
    cols = np.array(lay.shop_colours, np.float32)[shop]
    wall = cols * 0.6 + 80
    tex = grain[(yup * 11).astype(np.int64) % 256, (zf * 11).astype(np.int64) % 256]
    out = wall * (0.85 + 0.3 * tex)[..., None]
    zl = zf % 6.0
    # ground floor: shop window / shutter, a sign band above it, windows on upper floors
    window = (yup < 2.8) & (zl > 0.6) & (zl < 5.4)
    out = np.where(window[..., None], np.array([95, 85, 75], np.float32) * (0.7 + 0.6 * tex)[..., None], out)
    sign = (yup >= 3.0) & (yup < 3.8) & (zl > 0.3) & (zl < 5.7)
    out = np.where(sign[..., None], cols, out)
    upper = (yup > 4.5) & ((yup - 4.5) % 3.0 < 1.6) & ((zl % 2.0) > 0.5) & ((zl % 2.0) < 1.5)
    out = np.where(upper[..., None], np.array([120, 105, 90], np.float32) * (0.7 + 0.5 * tex)[..., None], out)
    img[hit] = out[hit]


def place_on_ground(cam: StreetCamera, sprite: Sprite, x: float, z: float, height_m: float) -> Placed | None:
    """Scale a sprite to ``height_m`` at depth z and stand it on the ground point (x, z)."""
    if z <= 1.0:
        return None
    px_h = cam.scale(z) * height_m
    s = px_h / sprite.size[1]
    if s * sprite.size[0] < 3 or px_h < 3:
        return None
    spr = sprite.resized(s)
    u, v = cam.project(x, z)
    w, h = spr.size
    return Placed(spr, round(u - w / 2), round(v - h), depth=z)
