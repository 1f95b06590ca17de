"""A synthetic drone survey flight with known object positions.

A :class:`FlightScene` is a block of ground (metres, east/north from an origin at a known lat/lon)
with roads, roofs and labelled objects (vehicles, sheds, litter, stalls; trees as distractors), all
from a seed. :func:`render_flight` flies a nadir lawn-mower path over it with a pinhole camera and
writes what a DJI drone writes: an H.264 ``.mp4``, its ``.SRT`` (new format: FrameCnt,
``[latitude] [longitude] [rel_alt abs_alt] [focal_len]`` 35 mm equivalent, ``[gb_yaw gb_pitch gb_roll]``,
GPS with a small bias and drift) and ``truth.json``: every object's lat/lon and every frame's boxes
(``detector.survey.replay.BoxReplaySpec`` replays them). Positions come from a local azimuthal-equidistant
projection, independent of the survey's geodesics. :meth:`FlightScene.variant` changes the scene.

    python -m training.synth.flight --out var/flight-a --seed 3 [--variant] [--size 3840x2160]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import drone as dr
from .canvas import U8, Placed, composite
from .scenes import shadow_of

MAKERS = dict(
    vehicle=dr.vehicle_top, structure=dr.shed_top, litter=dr.litter_top, stall=dr.stall_top, tree=dr.tree_top
)


@dataclass(frozen=True)
class SceneObject:
    id: str
    cls: str  # a model class, or "tree" (a distractor, not in the truth)
    east: float
    north: float
    angle: float
    sprite_seed: int


@dataclass
class FlightScene:
    seed: int
    width_m: float
    height_m: float
    origin: tuple[float, float]  # lat, lon of the block's centre
    roads: list[tuple[float, float, float, float]]  # map metres: x right, y down from the top-left corner
    roofs: list[tuple[float, float, float, float]]
    objects: list[SceneObject] = field(default_factory=list)

    @classmethod
    def generate(
        cls,
        seed: int,
        width_m: float = 150.0,
        height_m: float = 100.0,
        origin: tuple[float, float] = (30.6120, 114.4140),
        margin_m: float = 14.0,
    ) -> FlightScene:
        rng = np.random.default_rng([seed, 31])
        ry, rx = height_m * float(rng.uniform(0.3, 0.4)), width_m * float(rng.uniform(0.55, 0.65))
        roads = [(0.0, ry, width_m, ry + 8.0), (rx, 0.0, rx + 8.0, height_m)]
        roofs: list[tuple[float, float, float, float]] = []
        while len(roofs) < 5:
            w, h = float(rng.uniform(10, 20)), float(rng.uniform(10, 16))
            x, y = (
                float(rng.uniform(margin_m, width_m - margin_m - w)),
                float(rng.uniform(margin_m, height_m - margin_m - h)),
            )
            box = (x, y, x + w, y + h)
            if not any(_overlap(box, r, 3.0) for r in roads + roofs):
                roofs.append(box)
        scene = cls(seed, width_m, height_m, origin, roads, roofs)
        plan = [("vehicle", 8), ("structure", 5), ("litter", 5), ("stall", 3), ("tree", 5)]
        for kind, n in plan:
            for _ in range(n):
                scene._add(rng, kind, margin_m, f"{kind[:3]}{sum(o.cls == kind for o in scene.objects) + 1}")
        return scene

    def _add(
        self, rng: np.random.Generator, kind: str, margin: float, oid: str, spacing: float = 10.0
    ) -> None:
        (_, y1, _, y2), (vx1, _, vx2, _) = self.roads[0], self.roads[1]
        for _ in range(500):
            x = float(rng.uniform(margin, self.width_m - margin))
            y = float(rng.uniform(margin, self.height_m - margin))
            angle = float(rng.uniform(0, 180))
            if kind == "vehicle" and rng.random() < 0.75:  # on a road, along it
                if rng.random() < 0.5:
                    y, angle = float(rng.uniform(y1 + 2, y2 - 2)), float(rng.choice([0, 180]))
                else:
                    x, angle = float(rng.uniform(vx1 + 2, vx2 - 2)), float(rng.choice([90, 270]))
            elif kind == "stall":  # beside the east-west road
                y = float(rng.choice([y1 - 2.0, y2 + 2.0]))
            elif kind == "structure" and self.roofs and rng.random() < 0.6:
                rx1, ry1, rx2, ry2 = self.roofs[int(rng.integers(len(self.roofs)))]
                x, y, angle = float(rng.uniform(rx1 + 3, rx2 - 3)), float(rng.uniform(ry1 + 3, ry2 - 3)), 0.0
            east, north = x - self.width_m / 2, self.height_m / 2 - y
            if all(math.hypot(east - o.east, north - o.north) >= spacing for o in self.objects):
                self.objects.append(SceneObject(oid, kind, east, north, angle, int(rng.integers(1 << 30))))
                return
        raise RuntimeError(f"cannot place {kind} {oid} with {spacing} m spacing; use a larger scene")

    def variant(self, add_structures: int = 3, remove: int = 1, seed: int = 1) -> FlightScene:
        """The same place later: ``add_structures`` new sheds (15 m from any other structure), and
        ``remove`` structures taken away."""
        rng = np.random.default_rng([self.seed, 41, seed])
        out = replace(self, objects=list(self.objects))
        sheds = [o for o in out.objects if o.cls == "structure"]
        gone = [sheds[int(i)] for i in rng.choice(len(sheds), remove, replace=False)]
        for k in range(add_structures):  # placed before the removal: never where a removed one stood
            out._add(rng, "structure", 14.0, f"new{k + 1}", spacing=15.0)
        for o in gone:
            out.objects.remove(o)
        return out

    def latlon(self, east: Any, north: Any) -> tuple[np.ndarray, np.ndarray]:
        from pyproj import CRS, Transformer

        lat0, lon0 = self.origin
        local = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
        lon, lat = Transformer.from_crs(local, 4326, always_xy=True).transform(east, north)
        return np.asarray(lat), np.asarray(lon)

    def render_map(
        self, gsd: float, pad_m: float = 40.0
    ) -> tuple[U8, dict[str, tuple[float, float, float, float]]]:
        """The ground with every object, ``gsd`` metres per pixel, with ``pad_m`` of empty ground (roads
        go on) around the block, and each labelled object's box (map px). Centre: the scene's origin."""
        rng = np.random.default_rng([self.seed, 32])
        wm, hm = self.width_m + 2 * pad_m, self.height_m + 2 * pad_m
        roads = [
            (
                x1 + pad_m if x1 > 0 else 0.0,
                y1 + pad_m if y1 > 0 else 0.0,
                x2 + pad_m if x2 < self.width_m else wm,
                y2 + pad_m if y2 < self.height_m else hm,
            )
            for x1, y1, x2, y2 in self.roads
        ]
        roofs = [(x1 + pad_m, y1 + pad_m, x2 + pad_m, y2 + pad_m) for x1, y1, x2, y2 in self.roofs]
        coarse = dr.render_ground(rng, wm, hm, max(gsd, 0.07), roofs, roads)
        w, h = round(wm / gsd), round(hm / gsd)
        ground = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
        boxes: dict[str, tuple[float, float, float, float]] = {}
        order = sorted(self.objects, key=lambda o: (o.cls != "tree", o.id))  # trees first: under the rest
        for o in order:
            sprite, _, _ = MAKERS[o.cls](np.random.default_rng(o.sprite_seed))
            p = dr.place_top(sprite, o.east + wm / 2, hm / 2 - o.north, gsd, o.angle, 1.0)
            shadow = shadow_of(p.sprite, 0.4) if o.cls != "litter" else None
            off = round(1.0 / gsd)
            x0, y0 = max(0, p.x - 2), max(0, p.y - 2)
            sw, sh = p.sprite.size
            x1, y1 = min(w, p.x + sw + off + 2), min(h, p.y + sh + off + 2)
            patch = ground[y0:y1, x0:x1].astype(np.float32)
            items = [Placed(p.sprite, p.x - x0, p.y - y0, 1.0)]
            if shadow is not None:
                items.insert(0, Placed(shadow, p.x - x0 + off // 2, p.y - y0 + off, 5.0))
            composite(patch, items)
            ground[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)
            if o.cls != "tree":
                ys, xs = np.nonzero(p.sprite.bgra[..., 3] > 128)
                bx, by = p.x + float(xs.min()), p.y + float(ys.min())
                boxes[o.id] = (bx, by, p.x + float(xs.max()) + 1, p.y + float(ys.max()) + 1)
        return ground, boxes


def _overlap(a: tuple[float, ...], b: tuple[float, ...], pad: float) -> bool:
    return not (a[2] + pad < b[0] or b[2] + pad < a[0] or a[3] + pad < b[1] or b[3] + pad < a[1])


@dataclass(frozen=True)
class CameraSpec:
    width: int = 1920
    height: int = 1080
    sensor_width_mm: float = 13.2  # 1-inch sensor
    focal_mm: float = 17.6  # 48 mm equivalent at 1920 px: the GSD of a 24 mm camera at 3840 px

    @property
    def f_px(self) -> float:
        return self.focal_mm * self.width / self.sensor_width_mm

    @property
    def focal_35mm(self) -> float:
        return self.focal_mm * 36.0 / self.sensor_width_mm


@dataclass(frozen=True)
class FlightSpec:
    altitude_m: float = 100.0
    speed_ms: float = 12.0
    fps: float = 1.0
    heading_deg: float = 90.0  # direction of the first line (90: east)
    side_overlap: float = 0.3
    gps_bias_m: float = 0.5
    gps_drift_m: float = 0.15
    takeoff_msl_m: float = 22.0
    start: datetime = datetime(2024, 5, 1, 10, 0, 0)
    seed: int = 0


def lawnmower(scene: FlightScene, cam: CameraSpec, spec: FlightSpec) -> list[tuple[float, float, float]]:
    """(east, north, yaw) per frame: lines along ``heading_deg``, back and forth, with the legs between."""
    g = spec.altitude_m / cam.f_px
    along_fp, across_fp = cam.height * g, cam.width * g
    h = math.radians(spec.heading_deg)
    ax, cx = np.array([math.sin(h), math.cos(h)]), np.array([math.cos(h), -math.sin(h)])
    corners = np.array(
        [[sx * scene.width_m / 2, sy * scene.height_m / 2] for sx in (-1, 1) for sy in (-1, 1)]
    )
    la, lc = corners @ ax, corners @ cx
    spacing = (1 - spec.side_overlap) * across_fp
    n = max(1, math.ceil((lc.max() - lc.min() - across_fp) / spacing) + 1)
    offsets = [(lc.max() + lc.min()) / 2 + (i - (n - 1) / 2) * spacing for i in range(n)]
    a0, a1 = la.min() - 0.3 * along_fp, la.max() + 0.3 * along_fp
    step = spec.speed_ms / spec.fps
    path: list[tuple[float, float, float]] = []
    for i, off in enumerate(offsets):
        ts = np.arange(a0, a1 + 1e-6, step)
        if i % 2:
            ts = ts[::-1]
        yaw = (spec.heading_deg + (180.0 if i % 2 else 0.0)) % 360.0
        pts = [(*(t * ax + off * cx), yaw) for t in ts]
        if path:  # the leg from the end of the last line
            (e0, n0, _), (e1, n1, _) = path[-1], pts[0]
            k = max(1, int(math.hypot(e1 - e0, n1 - n0) // step))
            leg_yaw = math.degrees(math.atan2(e1 - e0, n1 - n0)) % 360.0
            path += [(e0 + (e1 - e0) * j / k, n0 + (n1 - n0) * j / k, leg_yaw) for j in range(1, k)]
        path += [(float(e), float(nn), y) for e, nn, y in pts]
    return path


def _frame_matrix(
    map_size: tuple[int, int], cam: CameraSpec, g: float, map_gsd: float, e0: float, n0: float, yaw: float
) -> np.ndarray:
    """2x3 affine taking frame pixels (u, v) to map pixels (nadir camera, image top towards ``yaw``)."""
    c, s, k = math.cos(math.radians(yaw)), math.sin(math.radians(yaw)), g / map_gsd
    cu, cv = cam.width / 2, cam.height / 2
    mx0 = map_size[0] / 2 + e0 / map_gsd
    my0 = map_size[1] / 2 - n0 / map_gsd
    return np.array(
        [[k * c, -k * s, mx0 - k * (c * cu - s * cv)], [k * s, k * c, my0 - k * (s * cu + c * cv)]]
    )


def _srt_block(i: int, t: float, dt: float, when: datetime, pos: tuple[float, ...], focal35: float) -> str:
    """One DJI new-format block; ``pos`` is (lat, lon, rel_alt, abs_alt, yaw)."""
    lat, lon, rel, absolute, yaw = pos

    def tc(x: float) -> str:
        ms = round(x * 1000)
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    stamp = when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    return (
        f"{i + 1}\n{tc(t)} --> {tc(t + dt)}\n"
        f'<font size="28">FrameCnt: {i + 1}, DiffTime: {round(dt * 1000)}ms\n'
        f"{stamp}\n[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [color_md: default] "
        f"[focal_len: {focal35:.2f}] [latitude: {lat:.6f}] [longitude: {lon:.6f}] "
        f"[rel_alt: {rel:.3f} abs_alt: {absolute:.3f}] "
        f"[gb_yaw: {(yaw + 180) % 360 - 180:.1f} gb_pitch: -90.0 gb_roll: 0.0] [ct: 5500] </font>\n\n"
    )


def render_flight(
    scene: FlightScene,
    out_dir: str | Path,
    cam: CameraSpec = CameraSpec(),
    spec: FlightSpec = FlightSpec(),
    name: str = "DJI_0001",
    max_frames: int | None = None,
) -> Path:
    """Render into ``out_dir``: ``NAME.mp4``, ``NAME.SRT`` and ``truth.json``; returns the video."""
    import av

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = spec.altitude_m / cam.f_px
    map_gsd = 0.9 * g
    ground, boxes = scene.render_map(map_gsd)
    path = lawnmower(scene, cam, spec)[:max_frames]
    rng = np.random.default_rng([scene.seed, 51, spec.seed])
    bias = rng.normal(0, spec.gps_bias_m, 2)
    drift = np.zeros(2)
    dt = 1.0 / spec.fps
    video = out / f"{name}.mp4"
    truth_frames: list[dict[str, Any]] = []
    srt: list[str] = []
    labelled = {o.id: o for o in scene.objects if o.cls != "tree"}
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(spec.fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = cam.width, cam.height, "yuv420p"
        stream.options = {"crf": "23", "g": "4", "preset": "veryfast"}
        for i, (e0, n0, yaw) in enumerate(path):
            m = _frame_matrix((ground.shape[1], ground.shape[0]), cam, g, map_gsd, e0, n0, yaw)
            img = cv2.warpAffine(
                ground,
                m,
                (cam.width, cam.height),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(70, 120, 90),
            )
            noise = np.random.default_rng([scene.seed, 52, spec.seed, i]).normal(0, 2.0, img.shape)
            img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                container.mux(packet)
            inv = cv2.invertAffineTransform(m)
            fboxes = []
            for oid, (x1, y1, x2, y2) in boxes.items():
                pts = np.array([[x1, y1, 1], [x2, y1, 1], [x2, y2, 1], [x1, y2, 1]]) @ inv.T
                bx1, by1 = pts.min(axis=0)
                bx2, by2 = pts.max(axis=0)
                cx1, cy1, cx2, cy2 = max(bx1, 0), max(by1, 0), min(bx2, cam.width), min(by2, cam.height)
                full = (bx2 - bx1) * (by2 - by1)
                vis = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1) / full
                if vis >= 0.3 and min(cx2 - cx1, cy2 - cy1) >= 5:
                    fboxes.append(
                        {
                            "id": oid,
                            "cls": labelled[oid].cls,
                            "visible": round(vis, 3),
                            "box": [round(float(v), 1) for v in (cx1, cy1, cx2, cy2)],
                        }
                    )
            drift = 0.9 * drift + rng.normal(0, spec.gps_drift_m, 2)
            lat, lon = scene.latlon(e0 + bias[0] + drift[0], n0 + bias[1] + drift[1])
            rel = spec.altitude_m + float(rng.normal(0, 0.2))
            srt.append(
                _srt_block(
                    i,
                    i * dt,
                    dt,
                    spec.start + timedelta(seconds=i * dt),
                    (float(lat), float(lon), rel, rel + spec.takeoff_msl_m, yaw),
                    cam.focal_35mm,
                )
            )
            truth_frames.append(
                {"index": i, "t": i * dt, "east": e0, "north": n0, "yaw": yaw, "boxes": fboxes}
            )
        for packet in stream.encode():
            container.mux(packet)
    (out / f"{name}.SRT").write_text("".join(srt), encoding="utf-8")
    lat, lon = scene.latlon([o.east for o in labelled.values()], [o.north for o in labelled.values()])
    truth = {
        "origin": {"lat": scene.origin[0], "lon": scene.origin[1]},
        "seed": scene.seed,
        "camera": {**cam.__dict__, "f_px": cam.f_px, "gsd_m": g},
        "flight": {**spec.__dict__, "start": str(spec.start)},
        "objects": [
            {"id": o.id, "cls": o.cls, "east": o.east, "north": o.north, "lat": float(a), "lon": float(b)}
            for o, a, b in zip(labelled.values(), lat, lon, strict=True)
        ],
        "frames": truth_frames,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return video


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="citywatch synth flight", description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument(
        "--variant", action="store_true", help="a month later: 3 sheds added, 1 removed, N-S lines"
    )
    p.add_argument(
        "--size", default="1920x1080", help="frame size; the GSD is kept (48 mm equivalent at 1920)"
    )
    p.add_argument("--altitude", type=float, default=100.0)
    a = p.parse_args(argv)
    scene, spec = FlightScene.generate(a.seed), FlightSpec(altitude_m=a.altitude)
    if a.variant:
        scene = scene.variant()
        spec = replace(spec, heading_deg=0.0, start=spec.start + timedelta(days=30), seed=1)
    w, h = (int(v) for v in a.size.lower().split("x"))
    video = render_flight(scene, a.out, CameraSpec(w, h, 13.2, 17.6 * 1920 / w), spec)
    print(f"{video} ({video.with_suffix('.SRT').name}, truth.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
