"""Per-frame drone telemetry: what a DJI ``.SRT`` or a photo's EXIF/XMP says about where the camera was.

A :class:`TelemetryRecord` keeps the values exactly as the file gives them, in SI units and degrees,
with ``None`` for what the file does not say. :class:`Telemetry` holds the records of one file, the
ones it could not read (``skipped``, with the reason), and what it had to assume (``warnings``).
:meth:`Telemetry.at` places a video time between records and says why when it cannot.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from detector.contracts.errors import DetectorError

AltitudeRef = Literal["takeoff", "msl", "unknown"]
FocalKind = Literal["35mm", "mm", "px"]
EARTH_RADIUS_M = 6_371_008.8


class TelemetryError(DetectorError):
    """Telemetry cannot be used; the message says which file, which frame and what to do."""


class TelemetryParseError(TelemetryError):
    """A telemetry file is empty, corrupt or in a format citywatch does not know."""


@dataclass(frozen=True)
class TelemetryRecord:
    """One telemetry sample. Angles in degrees: yaw clockwise from north, pitch -90 looking straight down."""

    index: int  # the SRT block number (or the photo's position in the folder)
    lat: float
    lon: float
    start_s: float | None = None  # video time the record applies from
    end_s: float | None = None
    time: datetime | None = None  # capture time as written (drone local time, no zone)
    rel_alt_m: float | None = None  # above the take-off point
    abs_alt_m: float | None = None  # above sea level
    alt_m: float | None = None  # an altitude whose reference the format does not say
    focal: float | None = None  # see focal_kind
    focal_kind: FocalKind = "35mm"
    focal_width_px: int | None = None  # image width a pixel focal length refers to
    gimbal_yaw: float | None = None
    gimbal_pitch: float | None = None
    gimbal_roll: float | None = None
    flight_yaw: float | None = None
    home: tuple[float, float] | None = None  # (lat, lon) of the home point
    satellites: int | None = None
    source: str = ""  # file name (photos) or block number, for messages

    @property
    def altitude(self) -> tuple[float, AltitudeRef] | None:
        if self.rel_alt_m is not None:
            return self.rel_alt_m, "takeoff"
        if self.abs_alt_m is not None:
            return self.abs_alt_m, "msl"
        if self.alt_m is not None:
            return self.alt_m, "unknown"
        return None

    @property
    def yaw(self) -> float | None:
        return self.gimbal_yaw if self.gimbal_yaw is not None else self.flight_yaw


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def _lerp(a: float | None, b: float | None, w: float) -> float | None:
    if a is None or b is None:
        return a if w < 0.5 else b
    return a + (b - a) * w


def _lerp_angle(a: float | None, b: float | None, w: float) -> float | None:
    if a is None or b is None:
        return a if w < 0.5 else b
    d = (b - a + 180.0) % 360.0 - 180.0
    return (a + d * w) % 360.0


@dataclass
class Telemetry:
    """The usable records of one telemetry source, in time order, and what could not be used."""

    path: Path
    variant: str
    records: list[TelemetryRecord]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    latlon_order: str = "lat,lon"
    max_gap_s: float = 3.0  # a video time further than this from any record is not placed
    latlon_reason: str = "the source names latitude and longitude"  # why latlon_order (SRT tuples)

    def __post_init__(self) -> None:
        timed = [r for r in self.records if r.start_s is not None]
        self._times = [float(r.start_s) for r in timed if r.start_s is not None]
        self._timed = timed
        if len(self._times) >= 2:
            steps = sorted(b - a for a, b in zip(self._times, self._times[1:], strict=False) if b > a)
            if steps:
                self.max_gap_s = max(self.max_gap_s, 3.0 * steps[len(steps) // 2])

    def latlon_info(self) -> dict[str, str]:
        """Which order the positions were read in and why, as the survey outputs record it."""
        return {"order": self.latlon_order, "reason": self.latlon_reason}

    @property
    def timed(self) -> bool:
        return bool(self._times)

    def duration_s(self) -> float:
        if not self._timed:
            return 0.0
        last = self._timed[-1]
        return float(last.end_s if last.end_s is not None else last.start_s or 0.0)

    def at(self, t: float) -> tuple[TelemetryRecord | None, str]:
        """The record for video time ``t`` (interpolated between neighbours), or ``(None, why)``."""
        if not self._timed:
            return None, f"{self.path.name} has no time codes to match video frames to"
        i = bisect_right(self._times, t) - 1
        if i < 0:
            first = self._times[0]
            if first - t <= 0.5:
                return self._timed[0], ""
            return None, f"t={t:.2f}s is before the first telemetry record (t={first:.2f}s)"
        rec = self._timed[i]
        if i + 1 >= len(self._timed):
            end = rec.end_s if rec.end_s is not None else rec.start_s
            if end is not None and t <= end + 0.5:
                return rec, ""
            return None, (
                f"t={t:.2f}s is after the last telemetry record (block {rec.index}, ends at {end:.2f}s): "
                "the telemetry file is shorter than the video"
            )
        nxt = self._timed[i + 1]
        t0, t1 = self._times[i], self._times[i + 1]
        if t1 - t0 > self.max_gap_s:
            return None, (
                f"t={t:.2f}s falls in a {t1 - t0:.1f}s gap between blocks {rec.index} and {nxt.index} "
                "(missing or corrupt telemetry)"
            )
        w = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        return self._interpolate(rec, nxt, w), ""

    @staticmethod
    def _interpolate(a: TelemetryRecord, b: TelemetryRecord, w: float) -> TelemetryRecord:
        if w <= 1e-9:
            return a
        lat = _lerp(a.lat, b.lat, w)
        lon = _lerp(a.lon, b.lon, w)
        return TelemetryRecord(
            index=a.index if w < 0.5 else b.index,
            lat=a.lat if lat is None else lat,
            lon=a.lon if lon is None else lon,
            start_s=_lerp(a.start_s, b.start_s, w),
            end_s=a.end_s,
            time=a.time if w < 0.5 else b.time,
            rel_alt_m=_lerp(a.rel_alt_m, b.rel_alt_m, w),
            abs_alt_m=_lerp(a.abs_alt_m, b.abs_alt_m, w),
            alt_m=_lerp(a.alt_m, b.alt_m, w),
            focal=a.focal,
            focal_kind=a.focal_kind,
            focal_width_px=a.focal_width_px,
            gimbal_yaw=_lerp_angle(a.gimbal_yaw, b.gimbal_yaw, w),
            gimbal_pitch=_lerp(a.gimbal_pitch, b.gimbal_pitch, w),
            gimbal_roll=_lerp(a.gimbal_roll, b.gimbal_roll, w),
            flight_yaw=_lerp_angle(a.flight_yaw, b.flight_yaw, w),
            home=a.home,
            satellites=a.satellites,
            source=a.source,
        )

    def course_deg(self, t: float, window_s: float = 1.0, min_move_m: float = 1.0) -> float | None:
        """Direction of travel around ``t`` (degrees from north), None while hovering."""
        a, _ = self.at(t - window_s)
        b, _ = self.at(t + window_s)
        if a is None or b is None:
            return None
        if haversine_m(a.lat, a.lon, b.lat, b.lon) < min_move_m:
            return None
        return bearing_deg(a.lat, a.lon, b.lat, b.lon)
