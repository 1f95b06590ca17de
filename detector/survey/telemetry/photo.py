"""Telemetry of drone photos: EXIF GPS and DJI's XMP ``drone-dji:`` fields.

Position: XMP ``GpsLatitude``/``GpsLongitude`` (or ``Latitude``/``Longitude``), else EXIF GPS.
Height: XMP ``RelativeAltitude`` (above take-off); ``AbsoluteAltitude`` and EXIF ``GPSAltitude`` are
above sea level, not above ground. Angles: ``GimbalYawDegree`` / ``FlightYawDegree``,
``GimbalPitchDegree`` (-90 = nadir). Focal length: ``CalibratedFocalLength`` (pixels of the full
image), else EXIF ``FocalLengthIn35mmFilm``, else EXIF ``FocalLength`` (needs the sensor width).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from detector.survey.telemetry.model import Telemetry, TelemetryError, TelemetryParseError, TelemetryRecord

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff", ".dng")
_XMP_ATTR = re.compile(rb'drone-dji:(\w+)\s*=\s*"([^"]*)"')
_XMP_ELEM = re.compile(rb"<drone-dji:(\w+)>([^<]*)</drone-dji:\1>")
_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769


def read_xmp(path: Path, limit: int = 512 * 1024) -> dict[str, str]:
    """The ``drone-dji:`` XMP fields of an image (its first ``limit`` bytes are searched)."""
    with path.open("rb") as f:
        head = f.read(limit)
    out: dict[str, str] = {}
    for pattern in (_XMP_ATTR, _XMP_ELEM):
        for key, value in pattern.findall(head):
            out.setdefault(key.decode("ascii", "replace"), value.decode("utf-8", "replace").strip())
    return out


def _ratio(v: Any) -> float:
    if isinstance(v, tuple) and len(v) == 2:
        return float(v[0]) / float(v[1]) if float(v[1]) else 0.0
    return float(v)


def _dms(values: Any, ref: Any, negative: str) -> float | None:
    try:
        d, m, s = (_ratio(x) for x in values)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    deg = d + m / 60.0 + s / 3600.0
    ref_text = ref.decode() if isinstance(ref, bytes) else str(ref or "")
    return -deg if ref_text.strip().upper() == negative else deg


def _xf(xmp: dict[str, str], *keys: str) -> float | None:
    for k in keys:
        if k in xmp:
            try:
                return float(xmp[k].replace("+", ""))
            except ValueError:
                continue
    return None


def read_photo(path: str | Path, index: int = 0) -> TelemetryRecord:
    """The telemetry of one photo; raises :class:`TelemetryError` naming what is missing."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            exif = img.getexif()
            gps = dict(exif.get_ifd(_GPS_IFD))
            sub = dict(exif.get_ifd(_EXIF_IFD))
            width = img.width
    except (OSError, UnidentifiedImageError) as exc:
        raise TelemetryParseError(f"{p}: not a readable image ({exc})") from exc
    xmp = read_xmp(p)
    lat = _xf(xmp, "GpsLatitude", "Latitude")
    lon = _xf(xmp, "GpsLongitude", "GpsLongtitude", "Longitude")
    if lat is None or lon is None:
        lat = _dms(gps.get(2), gps.get(1), "S") if 2 in gps else None
        lon = _dms(gps.get(4), gps.get(3), "W") if 4 in gps else None
    if lat is None or lon is None:
        raise TelemetryError(f"{p.name}: no GPS position in EXIF or XMP; this photo cannot be placed")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        raise TelemetryError(
            f"{p.name}: GPS position ({lat}, {lon}) is not valid; this photo cannot be placed"
        )
    abs_alt = _xf(xmp, "AbsoluteAltitude")
    if abs_alt is None and 6 in gps:
        abs_alt = _ratio(gps[6]) * (-1.0 if gps.get(5) in (1, b"\x01") else 1.0)
    focal: float | None = _xf(xmp, "CalibratedFocalLength")
    kind = "px"
    if focal is None and sub.get(0xA405):
        focal, kind = float(sub[0xA405]), "35mm"
    elif focal is None and sub.get(0x920A):
        focal, kind = _ratio(sub[0x920A]), "mm"
    taken = sub.get(0x9003) or exif.get(0x0132)
    when = None
    if taken:
        try:
            when = datetime.strptime(str(taken).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            when = None
    return TelemetryRecord(
        index=index,
        lat=lat,
        lon=lon,
        time=when,
        rel_alt_m=_xf(xmp, "RelativeAltitude"),
        abs_alt_m=abs_alt,
        focal=focal,
        focal_kind=kind,  # type: ignore[arg-type]
        focal_width_px=width if kind == "px" else None,
        gimbal_yaw=_xf(xmp, "GimbalYawDegree"),
        gimbal_pitch=_xf(xmp, "GimbalPitchDegree"),
        gimbal_roll=_xf(xmp, "GimbalRollDegree"),
        flight_yaw=_xf(xmp, "FlightYawDegree"),
        source=p.name,
    )


def read_photo_folder(folder: str | Path) -> tuple[list[Path], Telemetry]:
    """Every photo in ``folder`` (sorted by capture time, then name) and its telemetry.

    Photos that cannot be placed are listed in ``Telemetry.skipped`` (index = position in the
    returned list of all photos); raises when none can be placed.
    """
    root = Path(folder)
    photos = sorted(p for p in root.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise TelemetryParseError(f"{root}: no photos ({', '.join(PHOTO_SUFFIXES)}) in this folder")
    recs: list[tuple[Path, TelemetryRecord | None, str]] = []
    for p in photos:
        try:
            recs.append((p, read_photo(p), ""))
        except TelemetryError as exc:
            recs.append((p, None, str(exc)))
    recs.sort(key=lambda x: (x[1].time if x[1] is not None and x[1].time else datetime.min, x[0].name))
    ordered = [p for p, _, _ in recs]
    records: list[TelemetryRecord] = []
    skipped: list[tuple[int, str]] = []
    for i, (_p, rec, why) in enumerate(recs):
        if rec is None:
            skipped.append((i, why))
        else:
            records.append(replace(rec, index=i))
    if not records:
        raise TelemetryParseError(
            f"{root}: none of the {len(photos)} photos has a GPS position ({skipped[0][1]})"
        )
    warnings = [f"{len(skipped)} photo(s) cannot be placed, e.g. {skipped[0][1]}"] if skipped else []
    return ordered, Telemetry(root, "photos", records, skipped, warnings, "lat,lon")
