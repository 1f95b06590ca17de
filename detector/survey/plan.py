"""Which frames to look at, and where each one was taken.

Each candidate frame gets its telemetry (interpolated to the frame time), a camera pose (height above
ground, yaw, pitch — each with where it came from) and camera intrinsics. Frames are then sampled by
distance flown: a frame is kept once the camera has moved ``every_m`` metres (default: 40 % of the
footprint's length, i.e. 60 % forward overlap) or turned 30 degrees since the last kept frame — a
hovering drone adds no frames however long it hovers. ``every_s`` adds a time rule on top.
Frames that cannot be placed are listed with the reason, never given a guessed position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from detector.survey.errors import GeoreferenceError
from detector.survey.geo import Camera, CameraPose
from detector.survey.inputs import Candidate, SurveyInput
from detector.survey.telemetry import TelemetryRecord, bearing_deg, haversine_m

MIN_HEIGHT_M = 5.0


@dataclass(frozen=True)
class GeoSettings:
    """What the operator states when telemetry does not say it (all optional)."""

    height_m: float | None = None  # height above ground for every frame
    ground_above_takeoff_m: float = 0.0  # survey ground this much higher than the take-off point
    ground_elevation_m: float | None = None  # ground height above sea level (for absolute altitudes)
    focal: float | None = None
    focal_kind: str = "35mm"
    sensor_width_mm: float | None = None
    pitch_deg: float = -90.0  # when telemetry has no gimbal pitch: a mapping flight looks straight down
    timezone: str = "UTC"  # the zone of the drone's clock

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PlannedFrame:
    index: int
    t: float
    ts: float  # epoch seconds of the capture
    pose: CameraPose
    camera: Camera
    pts: int | None = None
    path: str | None = None

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.index, self.t, self.pts, self.path)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "t": self.t,
            "ts": self.ts,
            "pts": self.pts,
            "path": self.path,
            "pose": self.pose.as_dict(),
            "camera": {"width": self.camera.width, "height": self.camera.height, "f_px": self.camera.f_px},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlannedFrame:
        return cls(
            d["index"],
            d["t"],
            d["ts"],
            CameraPose.from_dict(d["pose"]),
            Camera(**d["camera"]),
            d.get("pts"),
            d.get("path"),
        )


@dataclass
class Plan:
    frames: list[PlannedFrame]  # the sampled frames
    placed: int  # candidate frames that could be placed
    unplaced: list[tuple[int, float, str]] = field(default_factory=list)  # (index, t, reason)
    notes: list[str] = field(default_factory=list)

    def unplaced_summary(self, limit: int = 5) -> list[str]:
        """Unplaced frames as ranges per reason: 'frames 120-180 (t=4.00-6.00 s): reason'."""
        out: list[str] = []
        run: list[tuple[int, float, str]] = []

        def flush() -> None:
            if run:
                a, b = run[0], run[-1]
                span = f"frame {a[0]}" if a is b else f"frames {a[0]}-{b[0]}"
                out.append(f"{span} (t={a[1]:.2f}-{b[1]:.2f} s): {a[2]}")

        for item in self.unplaced:
            key = item[2].split(" (")[0].split("t=")[0][:40]
            if run and (item[0] != run[-1][0] + 1 or key != run[-1][2].split(" (")[0].split("t=")[0][:40]):
                flush()
                run = []
            run.append(item)
        flush()
        return out if len(out) <= limit else [*out[:limit], f"... and {len(out) - limit} more ranges"]


def _zone(name: str) -> Any:
    try:
        return UTC if name.upper() == "UTC" else ZoneInfo(name)
    except ZoneInfoNotFoundError as exc:
        raise GeoreferenceError(
            f"unknown time zone {name!r}: use an IANA name such as Asia/Shanghai"
        ) from exc


def clock_offset(inp: SurveyInput, geo: GeoSettings) -> tuple[float, str]:
    """Epoch seconds at video time 0 (or at the first photo), and where that came from."""
    tz = _zone(geo.timezone)
    offsets = sorted(
        r.time.replace(tzinfo=tz).timestamp() - (r.start_s or 0.0 if inp.kind == "video" else 0.0)
        for r in inp.telemetry.records
        if r.time is not None
    )
    if offsets:
        if inp.kind == "photos":
            return offsets[0], f"capture times, zone {geo.timezone}"
        return offsets[len(offsets) // 2], f"telemetry clock, zone {geo.timezone}"
    mtime = inp.path.stat().st_mtime
    return mtime, "file modification time (the telemetry has no clock)"


def height_above_ground(rec: TelemetryRecord, geo: GeoSettings) -> tuple[float, str]:
    if geo.height_m is not None:
        return geo.height_m, "given (--height-m)"
    if rec.rel_alt_m is not None:
        src = "above take-off, flat ground"
        if geo.ground_above_takeoff_m:
            src += f", ground {geo.ground_above_takeoff_m:+.1f} m from take-off"
        return rec.rel_alt_m - geo.ground_above_takeoff_m, src
    absolute = rec.abs_alt_m if rec.abs_alt_m is not None else rec.alt_m
    if absolute is not None and geo.ground_elevation_m is not None:
        return (
            absolute - geo.ground_elevation_m,
            f"altitude minus ground elevation {geo.ground_elevation_m:.1f} m",
        )
    if absolute is not None:
        raise GeoreferenceError(
            f"the telemetry gives altitude {absolute:.1f} m but not above what (no take-off-relative "
            "height): pass --ground-elevation-m (ground height above sea level) "
            "or --height-m (height above ground)"
        )
    raise GeoreferenceError("the telemetry has no altitude: pass --height-m (height above ground)")


def camera_for(rec: TelemetryRecord, geo: GeoSettings, width: int, height: int) -> Camera:
    if geo.focal is not None:
        return Camera.from_focal(geo.focal, geo.focal_kind, width, height, geo.sensor_width_mm)
    if rec.focal is None:
        raise GeoreferenceError(
            "the telemetry has no focal length: pass --focal-35mm F (35 mm equivalent), or --focal-mm F "
            "with --sensor-width-mm S"
        )
    return Camera.from_focal(
        rec.focal, rec.focal_kind, width, height, geo.sensor_width_mm, rec.focal_width_px
    )


def _course(
    inp: SurveyInput, rec: TelemetryRecord, t: float, neighbours: list[TelemetryRecord]
) -> float | None:
    if inp.kind == "video":
        return inp.telemetry.course_deg(t)
    if (
        len(neighbours) == 2
        and haversine_m(neighbours[0].lat, neighbours[0].lon, neighbours[1].lat, neighbours[1].lon) >= 1.0
    ):
        a, b = neighbours
        return bearing_deg(a.lat, a.lon, b.lat, b.lon)
    return None


def plan_frames(
    inp: SurveyInput,
    geo: GeoSettings,
    every_m: float | None = None,
    every_s: float | None = None,
    turn_deg: float = 30.0,
) -> Plan:
    """Place every candidate frame and sample them by distance flown (see the module docstring)."""
    t0, clock_src = clock_offset(inp, geo)
    plan = Plan([], 0, notes=[f"capture times from the {clock_src}"])
    by_index = {r.index: r for r in inp.telemetry.records}
    photo_recs = [by_index.get(c.index) for c in inp.candidates] if inp.kind == "photos" else []
    last: PlannedFrame | None = None
    no_pitch = False
    for k, c in enumerate(inp.candidates):
        if inp.kind == "photos":
            rec = photo_recs[k]
            why = next((w for i, w in inp.telemetry.skipped if i == c.index), "no telemetry")
            near = [r for r in (photo_recs[max(0, k - 1)], photo_recs[min(len(photo_recs) - 1, k + 1)]) if r]
        else:
            rec, why = inp.telemetry.at(c.t)
            near = []
        if rec is None:
            plan.unplaced.append((c.index, c.t, why))
            continue
        h, h_src = height_above_ground(rec, geo)
        if h < MIN_HEIGHT_M:
            plan.unplaced.append((c.index, c.t, f"height above ground {h:.1f} m: taking off or landing"))
            continue
        yaw, yaw_src = rec.gimbal_yaw, "gimbal"
        if yaw is None and rec.flight_yaw is not None:
            yaw, yaw_src = rec.flight_yaw, "aircraft heading"
        if yaw is None:
            yaw, yaw_src = _course(inp, rec, c.t, near), "course"
        if yaw is None:
            plan.unplaced.append(
                (
                    c.index,
                    c.t,
                    "no yaw in the telemetry and the drone is hovering: the image orientation is unknown",
                )
            )
            continue
        pitch = rec.gimbal_pitch if rec.gimbal_pitch is not None else geo.pitch_deg
        no_pitch = no_pitch or rec.gimbal_pitch is None
        pose = CameraPose(rec.lat, rec.lon, h, yaw % 360.0, pitch, yaw_src, h_src)
        cam = camera_for(rec, geo, inp.width, inp.height)
        frame = PlannedFrame(c.index, c.t, t0 + c.t, pose, cam, c.pts, c.path)
        plan.placed += 1
        if last is None or _due(last, frame, every_m, every_s, turn_deg):
            plan.frames.append(frame)
            last = frame
    if no_pitch:
        plan.notes.append(
            f"no gimbal pitch in the telemetry: the camera is taken to look at {geo.pitch_deg:.0f} deg"
        )
    if not plan.frames:
        detail = "; ".join(plan.unplaced_summary(3)) or "no frames"
        raise GeoreferenceError(f"{inp.path.name}: no frame can be placed on the ground ({detail})")
    return plan


def _due(
    last: PlannedFrame, f: PlannedFrame, every_m: float | None, every_s: float | None, turn_deg: float
) -> bool:
    step = every_m
    if step is None:  # 60 % forward overlap of the footprint along the image's vertical axis
        step = 0.4 * f.pose.height_m * f.camera.height / f.camera.f_px
    moved = haversine_m(last.pose.lat, last.pose.lon, f.pose.lat, f.pose.lon)
    turned = abs((f.pose.yaw_deg - last.pose.yaw_deg + 180.0) % 360.0 - 180.0)
    timed = every_s is not None and f.t - last.t >= every_s
    return moved >= step or turned >= turn_deg or timed or math.isclose(step, 0.0)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
