"""Scripted scenario videos with exact ground truth.

A scenario YAML places a street camera, zones on the ground (metres, projected into the
image) and timed objects. ``render_scenario`` writes an H.264 mp4, the ground-truth JSON of
the violations that must be reported, and a ``streams.yaml`` fragment for the zones.

    camera: {cam_height: 6, cam_x: 4, horizon: 0.3, focal: 560, vx: 0.5}
    fps: 5
    duration_s: 180
    start_time: "2026-03-02T09:00:00+08:00"
    zones:
      - {id: no-parking, rules: [illegal_parking], x: [5.0, 7.0], z: [9, 20]}
    objects:
      - {id: car-1, kind: vehicle, variant: car, x: 6.0, z: 13, appear: 10, leave: 150,
         drive_in_s: 6}
      - {id: bus-by, kind: vehicle, x: -2, z: 40, appear: 30, leave: 45, to: {x: -2, z: 6}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from .canvas import F32, U8
from .effects import Conditions
from .scenes import Label, WorldObject, make_street_object, render_street
from .street import StreetCamera, StreetLayout, render_background

RULE_OF = {
    "vehicle": "illegal_parking",
    "stall": "street_vending",
    "litter": "unclean_road",
    "structure": "illegal_structure",
}


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraSpec(_M):
    width: int = Field(default=640, gt=0)
    height: int = Field(default=360, gt=0)
    cam_height: float = Field(default=6.0, gt=0)
    cam_x: float = 4.0
    horizon: float = Field(default=0.3, gt=0, lt=1)
    focal: float = Field(default=560.0, gt=0)
    vx: float = Field(default=0.5, gt=0, lt=1)


class ZoneSpec(_M):
    id: str
    rules: list[str]
    x: tuple[float, float] = Field(description="across-street extent, metres")
    z: tuple[float, float] = Field(description="along-street extent (distance from the camera), metres")


class PointSpec(_M):
    x: float
    z: float


class ObjectSpec(_M):
    id: str
    kind: str = Field(description="vehicle | stall | litter | structure | person | tree | bench | bicycle")
    variant: str | None = None
    x: float
    z: float
    appear: float = Field(default=0.0, ge=0)
    leave: float | None = Field(default=None, description="seconds; None = stays to the end")
    drive_in_s: float = Field(
        default=0.0, ge=0, description="vehicles: seconds driving from 30 m behind to the spot"
    )
    to: PointSpec | None = Field(
        default=None, description="moves linearly to this point between appear and leave"
    )
    seed: int = 0


class ScenarioSpec(_M):
    name: str
    seed: int = 0
    camera: CameraSpec = Field(default_factory=lambda: CameraSpec())
    fps: float = Field(default=5.0, gt=0)
    gop_s: float = Field(default=2.0, gt=0)
    duration_s: float = Field(gt=0)
    start_time: datetime
    light: str = "day"
    noise: float = 2.0
    zones: list[ZoneSpec] = []
    objects: list[ObjectSpec] = []
    dwell_s: dict[str, float] = Field(default_factory=dict, description="per rule, for the ground truth")


@dataclass
class Scenario:
    spec: ScenarioSpec
    cam: StreetCamera
    background: F32
    sprites: dict[str, tuple[Any, float]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> Scenario:
        spec = ScenarioSpec.model_validate(yaml.safe_load(Path(path).read_text()))
        return cls.from_spec(spec)

    @classmethod
    def from_spec(cls, spec: ScenarioSpec) -> Scenario:
        rng = np.random.default_rng([spec.seed, 3])
        cam = StreetCamera(**spec.camera.model_dump())
        lay = StreetLayout.random(rng)
        bg = render_background(cam, lay, rng)
        sprites = {}
        for o in spec.objects:
            orng = np.random.default_rng([spec.seed, 4, o.seed, _stable(o.id)])
            if o.kind == "vehicle" and o.variant:
                from .objects import vehicle_oblique

                sprites[o.id] = (
                    vehicle_oblique(orng, o.variant),
                    {"car": 1.5, "van": 2.0, "truck": 3.0}.get(o.variant, 1.6),
                )
            else:
                sprites[o.id] = make_street_object(orng, o.kind)
        return cls(spec, cam, bg, sprites)

    def position(self, o: ObjectSpec, t: float) -> tuple[float, float] | None:
        if t < o.appear or (o.leave is not None and t >= o.leave):
            return None
        if o.to is not None and o.leave is not None:
            f = (t - o.appear) / max(o.leave - o.appear, 1e-6)
            return o.x + (o.to.x - o.x) * f, o.z + (o.to.z - o.z) * f
        if o.drive_in_s > 0 and t < o.appear + o.drive_in_s:
            f = (t - o.appear) / o.drive_in_s
            f = 1 - (1 - f) ** 2  # decelerate into the spot
            sx, sz = o.x - 3.0, o.z + 30.0
            return sx + (o.x - sx) * f, sz + (o.z - sz) * f
        return o.x, o.z

    def frame(self, index: int) -> tuple[U8, list[tuple[Label, str]]]:
        t = index / self.spec.fps
        objs: list[WorldObject] = []
        ids: list[str] = []
        for o in self.spec.objects:
            pos = self.position(o, t)
            if pos is None:
                continue
            spr, hm = self.sprites[o.id]
            objs.append(WorldObject(o.kind, spr, pos[0], pos[1], hm, obj_id=len(ids)))
            ids.append(o.id)
        rng = np.random.default_rng([self.spec.seed, 5, index])
        cond = Conditions(light=self.spec.light, noise=self.spec.noise, jpeg=95)
        img, labels = render_street(self.cam, self.background, objs, cond, rng)
        return img, [(lab, ids[i]) for lab, i in labels]

    def zone_polygon(self, z: ZoneSpec) -> list[list[float]]:
        """The ground rectangle projected into the image, clipped to the frame, normalised."""
        (x1, x2), (z1, z2) = z.x, z.z
        pts = [self.cam.project(x, d) for x, d in ((x1, z1), (x2, z1), (x2, z2), (x1, z2))]
        norm = [(u / self.cam.width, v / self.cam.height) for u, v in pts]
        out: list[list[float]] = []
        for u, v in _clip_unit(norm):
            q = [round(min(max(u, 0.0), 1.0), 4), round(min(max(v, 0.0), 1.0), 4)]
            if not out or q != out[-1]:
                out.append(q)
        if len(out) > 1 and out[0] == out[-1]:
            out.pop()
        return out

    def ground_truth(self) -> list[dict[str, Any]]:
        """Violations that must be reported: a labelled object standing still inside a zone that
        enforces its rule, for at least the rule's dwell."""
        out = []
        for o in self.spec.objects:
            rule = RULE_OF.get(o.kind)
            if rule is None or o.to is not None:
                continue
            for z in self.spec.zones:
                if rule not in z.rules or not (min(z.x) <= o.x <= max(z.x) and min(z.z) <= o.z <= max(z.z)):
                    continue
                start = o.appear + o.drive_in_s
                end = o.leave if o.leave is not None else self.spec.duration_s
                dwell = self.spec.dwell_s.get(rule, 0.0)
                if end - start < dwell:
                    continue
                out.append(
                    {
                        "object": o.id,
                        "rule": rule,
                        "zone": z.id,
                        "start_s": start,
                        "end_s": o.leave,
                        "opened_at_s": start + dwell,
                        "leaves": o.leave is not None,
                    }
                )
        return out


def _clip_unit(poly: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sutherland-Hodgman clip of a polygon against the unit square."""

    def clip(
        pts: list[tuple[float, float]], axis: int, bound: float, keep_low: bool
    ) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cin = cur[axis] <= bound if keep_low else cur[axis] >= bound
            pin = prev[axis] <= bound if keep_low else prev[axis] >= bound
            if cin != pin:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cin:
                out.append(cur)
        return out

    for axis, bound, low in ((0, 0.0, False), (0, 1.0, True), (1, 0.0, False), (1, 1.0, True)):
        poly = clip(poly, axis, bound, low)
        if not poly:
            break
    return poly


def _stable(s: str) -> int:
    return int.from_bytes(s.encode()[:8].ljust(8, b"\0"), "little") % (1 << 31)


def render_scenario(script: Path, out_dir: Path, progress: bool = True) -> dict[str, Path]:
    sc = Scenario.load(script)
    spec = sc.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / f"{spec.name}.mp4"
    n = round(spec.duration_s * spec.fps)
    with av.open(str(video), "w") as container:
        container.metadata["creation_time"] = spec.start_time.isoformat()
        rate = Fraction(spec.fps).limit_denominator(1000)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = sc.cam.width, sc.cam.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = max(1, round(spec.gop_s * spec.fps))
        stream.options = {"crf": "27", "preset": "veryfast", "bf": "0", "sc_threshold": "0"}
        it = range(n)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"rendering {spec.name}", unit="frame")
        for i in it:
            img, _ = sc.frame(i)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    truth = {
        "scenario": spec.name,
        "video": video.name,
        "fps": spec.fps,
        "duration_s": spec.duration_s,
        "start_time": spec.start_time.isoformat(),
        "violations": sc.ground_truth(),
        "zones": [{"id": z.id, "rules": z.rules, "polygon": sc.zone_polygon(z)} for z in spec.zones],
    }
    gt = out_dir / f"{spec.name}.truth.json"
    gt.write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    return {"video": video, "truth": gt}


def ensure_rendered(script: Path, out_dir: Path) -> Path:
    """The scenario's clip in ``out_dir``, rendered first when missing (rendering is deterministic:
    the same script gives the same bytes, so the clips are built, not kept in git)."""
    import fcntl

    name = Scenario.load(script).spec.name
    video = out_dir / f"{name}.mp4"
    out_dir.mkdir(parents=True, exist_ok=True)
    # one renderer at a time (parallel test workers): the others wait, then find the clip there
    with (out_dir / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not video.is_file():
            render_scenario(script, out_dir, progress=False)
    return video


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="citywatch synth scenario", description="render scenario videos")
    p.add_argument("scripts", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    for s in a.scripts:
        paths = render_scenario(s, a.out)
        print(f"{s}: {paths['video']} + {paths['truth']}")
    return 0
