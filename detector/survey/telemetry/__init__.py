"""Drone telemetry: DJI ``.SRT`` files and photo EXIF/XMP, parsed into per-frame records.

tel = parse_srt("DJI_0001.SRT")
rec, why = tel.at(12.4)          # the record for video time 12.4 s, or None and the reason
files, tel = read_photo_folder("flight-2024-05-01/")
"""

from __future__ import annotations

from detector.survey.telemetry.model import (
    AltitudeRef,
    FocalKind,
    Telemetry,
    TelemetryError,
    TelemetryParseError,
    TelemetryRecord,
    bearing_deg,
    haversine_m,
)
from detector.survey.telemetry.photo import PHOTO_SUFFIXES, read_photo, read_photo_folder
from detector.survey.telemetry.srt import parse_srt, parse_srt_text

__all__ = [
    "PHOTO_SUFFIXES",
    "AltitudeRef",
    "FocalKind",
    "Telemetry",
    "TelemetryError",
    "TelemetryParseError",
    "TelemetryRecord",
    "bearing_deg",
    "haversine_m",
    "parse_srt",
    "parse_srt_text",
    "read_photo",
    "read_photo_folder",
]
