"""Geo-referencing: image pixels to positions on flat ground, in WGS84 and in a metric CRS.

A pinhole camera ``f_px`` pixels of focal length sits ``height_m`` above flat ground, turned by
``yaw`` (degrees clockwise from north: the direction the top of the image points to) and tilted by
``pitch`` (-90 = nadir, 0 = horizon). A pixel's ray is cast to the ground; the offset from the point
under the camera (east, north, metres) is carried onto the ellipsoid with
``pyproj.Geod(ellps="WGS84").fwd``. For a nadir camera this is the textbook rule
``GSD = H / f_px = sensor_width_mm * H / (focal_mm * image_width_px)``, offset from the image centre
times GSD, rotated by yaw. Clustering and matching use the UTM zone of the survey (metres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.survey.errors import GeoreferenceError

F64 = npt.NDArray[np.float64]
DATUM = "WGS84 (EPSG:4326)"
FULL_FRAME_WIDTH_MM = 36.0
OBLIQUE_DEG = 15.0  # more than this off nadir is flagged oblique
MAX_RANGE_FACTOR = 8.0  # rays that meet the ground further than this times the height are not placed


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics for images of ``width`` x ``height`` pixels, principal point at the centre."""

    width: int
    height: int
    f_px: float

    @classmethod
    def from_focal(
        cls,
        focal: float,
        kind: str,
        width: int,
        height: int,
        sensor_width_mm: float | None = None,
        focal_width_px: int | None = None,
    ) -> Camera:
        """From a focal length as telemetry gives it: ``35mm`` equivalent (36 mm wide frame), ``mm``
        (needs ``sensor_width_mm``) or ``px`` (of an image ``focal_width_px`` wide, default ``width``)."""
        if focal <= 0 or width <= 0 or height <= 0:
            raise GeoreferenceError(f"focal length {focal} and image size {width}x{height} must be positive")
        if kind == "35mm":
            f_px = focal * width / FULL_FRAME_WIDTH_MM
        elif kind == "mm":
            if not sensor_width_mm:
                raise GeoreferenceError(
                    f"the focal length is {focal} mm but the sensor width is unknown: pass --sensor-width-mm "
                    "(e.g. 13.2 for a 1-inch sensor, 6.17 for 1/2.3-inch) or --focal-35mm"
                )
            f_px = focal * width / sensor_width_mm
        elif kind == "px":
            f_px = focal * width / float(focal_width_px or width)
        else:
            raise GeoreferenceError(f"unknown focal length kind {kind!r}: use 35mm, mm or px")
        return cls(width, height, f_px)

    def gsd(self, height_m: float) -> float:
        """Ground sample distance at nadir, metres per pixel."""
        return height_m / self.f_px


@dataclass(frozen=True)
class CameraPose:
    """Where the camera is and where it looks; the sources say how each value was obtained."""

    lat: float
    lon: float
    height_m: float  # above the ground under it
    yaw_deg: float
    pitch_deg: float = -90.0
    yaw_source: str = "gimbal"
    height_source: str = "rel_alt"

    @property
    def off_nadir_deg(self) -> float:
        return abs(self.pitch_deg + 90.0)

    @property
    def oblique(self) -> bool:
        return self.off_nadir_deg > OBLIQUE_DEG

    def as_dict(self) -> dict[str, Any]:
        return {
            "lat": self.lat,
            "lon": self.lon,
            "height_m": self.height_m,
            "yaw_deg": self.yaw_deg,
            "pitch_deg": self.pitch_deg,
            "yaw_source": self.yaw_source,
            "height_source": self.height_source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraPose:
        return cls(**d)


def _axes(yaw_deg: float, pitch_deg: float) -> tuple[F64, F64, F64]:
    """(optical axis, image right, image down) as east-north-up unit vectors."""
    psi, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ahead = np.array([math.sin(psi), math.cos(psi), 0.0])
    right = np.array([math.cos(psi), -math.sin(psi), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    axis = math.cos(p) * ahead + math.sin(p) * up
    image_up = -math.sin(p) * ahead + math.cos(p) * up
    return axis, right, -image_up


def ground_offsets(cam: Camera, pose: CameraPose, u: Any, v: Any) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """East / north metres from the point under the camera to where pixels ``(u, v)`` meet the ground.

    ``valid`` is False for rays that miss the ground or meet it beyond ``MAX_RANGE_FACTOR`` heights."""
    u = np.asarray(u, np.float64)
    v = np.asarray(v, np.float64)
    axis, right, down = _axes(pose.yaw_deg, pose.pitch_deg)
    du = (u - cam.width / 2.0) / cam.f_px
    dv = (v - cam.height / 2.0) / cam.f_px
    ray = axis[:, None] + du.reshape(1, -1) * right[:, None] + dv.reshape(1, -1) * down[:, None]
    rz = ray[2]
    hit = rz < -1e-6
    t = np.where(hit, pose.height_m / np.where(hit, -rz, 1.0), 0.0)
    east, north = ray[0] * t, ray[1] * t
    valid = hit & (np.hypot(east, north) <= MAX_RANGE_FACTOR * max(pose.height_m, 1.0))
    return east.reshape(u.shape), north.reshape(u.shape), valid.reshape(u.shape)


def offsets_to_latlon(lat: float, lon: float, east: Any, north: Any) -> tuple[F64, F64]:
    """Carry east/north offsets (metres) from ``(lat, lon)`` along geodesics on the WGS84 ellipsoid."""
    from pyproj import Geod

    e = np.atleast_1d(np.asarray(east, np.float64))
    n = np.atleast_1d(np.asarray(north, np.float64))
    az = np.degrees(np.arctan2(e, n))
    dist = np.hypot(e, n)
    lons, lats, _ = Geod(ellps="WGS84").fwd(np.full_like(e, lon), np.full_like(e, lat), az, dist)
    return np.asarray(lats, np.float64), np.asarray(lons, np.float64)


def pixel_sigma_m(
    cam: Camera,
    pose: CameraPose,
    east: Any,
    north: Any,
    box_m: Any,
    *,
    gps_sigma_m: float = 2.0,
    height_sigma_frac: float = 0.05,
    yaw_sigma_deg: float = 2.0,
    pitch_sigma_deg: float = 1.0,
) -> F64:
    """1-sigma horizontal uncertainty (m) of positions at ground offsets ``(east, north)``.

    Sums GPS error, height error (scales the offset), yaw error (turns it), pitch error (grows with
    the off-nadir angle: oblique views are much worse) and a tenth of the box size for where in the box
    the object's centre is."""
    d = np.hypot(np.asarray(east, np.float64), np.asarray(north, np.float64))
    h = max(pose.height_m, 1.0)
    yaw_sigma = yaw_sigma_deg * (2.5 if pose.yaw_source == "course" else 1.0)
    s_height = (height_sigma_frac * h + 0.5) * d / h
    s_yaw = math.radians(yaw_sigma) * d
    s_pitch = math.radians(pitch_sigma_deg) * (h * h + d * d) / h
    s_box = 0.1 * np.asarray(box_m, np.float64)
    out: F64 = np.sqrt(gps_sigma_m**2 + s_height**2 + s_yaw**2 + s_pitch**2 + s_box**2)
    return out


def footprint(cam: Camera, pose: CameraPose, inset_px: float = 0.0) -> F64:
    """The image's ground quad (4 x [east, north]) relative to the point under the camera."""
    u = np.array([inset_px, cam.width - inset_px, cam.width - inset_px, inset_px])
    v = np.array([inset_px, inset_px, cam.height - inset_px, cam.height - inset_px])
    e, n, ok = ground_offsets(cam, pose, u, v)
    if not ok.all():  # the horizon is in view: cut the far edge at the range limit
        r = MAX_RANGE_FACTOR * pose.height_m
        scale = np.where(ok, 1.0, r / np.maximum(np.hypot(e, n), 1e-9))
        e, n = np.where(ok, e, e * scale), np.where(ok, n, n * scale)
    return np.stack([e, n], axis=1)


class MetricCRS:
    """The UTM zone around a point: WGS84 <-> metres (x east, y north)."""

    def __init__(self, lat: float, lon: float) -> None:
        zone = int((lon + 180.0) // 6.0) % 60 + 1
        self.epsg = (32600 if lat >= 0 else 32700) + zone
        self.name = f"WGS 84 / UTM zone {zone}{'N' if lat >= 0 else 'S'} (EPSG:{self.epsg})"

    @cached_property
    def _fwd(self) -> Any:
        from pyproj import Transformer

        return Transformer.from_crs(4326, self.epsg, always_xy=True)

    @cached_property
    def _inv(self) -> Any:
        from pyproj import Transformer

        return Transformer.from_crs(self.epsg, 4326, always_xy=True)

    def to_xy(self, lat: Any, lon: Any) -> tuple[F64, F64]:
        x, y = self._fwd.transform(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
        return np.asarray(x, np.float64), np.asarray(y, np.float64)

    def to_latlon(self, x: Any, y: Any) -> tuple[F64, F64]:
        lon, lat = self._inv.transform(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return np.asarray(lat, np.float64), np.asarray(lon, np.float64)


def point_in_polygon(px: float, py: float, poly: F64) -> bool:
    """Even-odd rule; ``poly`` is (k, 2)."""
    inside = False
    k = len(poly)
    for i in range(k):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % k]
        if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside
