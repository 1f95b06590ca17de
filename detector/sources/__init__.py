"""Video sources: sampled, decoded frames with frame timestamps (see :mod:`detector.sources.pyav`)."""

from detector.sources.base import (
    DecodeMode,
    Frame,
    OpenFailure,
    ProbeResult,
    ReadFailure,
    SourceError,
    SourceOpenError,
    SourceReadError,
    SourceStats,
    mask_url,
)
from detector.sources.pyav import FileSource, VideoSource, grab_frame

__all__ = [
    "DecodeMode",
    "FileSource",
    "Frame",
    "OpenFailure",
    "ProbeResult",
    "ReadFailure",
    "SourceError",
    "SourceOpenError",
    "SourceReadError",
    "SourceStats",
    "VideoSource",
    "grab_frame",
    "mask_url",
]
