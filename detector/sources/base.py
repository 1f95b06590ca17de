"""Source types that do not depend on a decoder: frames, errors, URL masking, sampling and GOP logic.

Everything here is pure (no PyAV) so the sampling rules can be tested without video files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from detector.contracts.errors import DetectorError

DecodeMode = Literal["keyframes", "all"]
OpenFailure = Literal[
    "not_found", "unauthorized", "refused", "timeout", "unsupported", "invalid", "unreachable", "other"
]
ReadFailure = Literal["corrupt", "lost", "timeout", "stalled", "ended"]

#: query-string keys whose values are secrets (cameras that take credentials in the URL query)
SECRET_QUERY_KEYS = frozenset(
    {"password", "passwd", "pass", "pwd", "token", "key", "secret", "auth", "sig", "signature"}
)
MASK = "***"
#: creation_time values before this are placeholders written by devices without a clock (1904/1970 epochs)
_MIN_PLAUSIBLE_EPOCH = datetime(1990, 1, 1, tzinfo=UTC).timestamp()
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled, decoded video frame.

    ``ts`` is the wall-clock time of the frame (``start_time + pts_s``), never the processing time.
    ``index`` is the frame number in the stream, ``round(pts_s * frame_rate)`` (exact at a constant rate).
    """

    stream_id: str
    ts: float
    pts_s: float
    image: npt.NDArray[np.uint8] = field(repr=False)
    index: int


class ProbeResult(NamedTuple):
    width: int
    height: int
    fps: float
    duration: float | None
    gop_s: float | None


# ---------------------------------------------------------------------------------------------- errors
class SourceError(DetectorError):
    """A video source failed. ``url`` is always masked (no passwords)."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class SourceOpenError(SourceError):
    """The source could not be opened: not found (404 / missing file), refused, unauthorized (401/403),
    timed out, unreachable, or unsupported (no video stream, unknown protocol, unreadable container)."""

    def __init__(self, message: str, url: str, reason: OpenFailure) -> None:
        super().__init__(message, url)
        self.reason: OpenFailure = reason


class SourceReadError(SourceError):
    """The source broke after opening: corrupt data, stream lost, read timeout, no usable frame for the stall
    timeout, or a live stream ended.

    A supervisor reconnects on this; a file reader reports it.
    """

    def __init__(self, message: str, url: str, reason: ReadFailure) -> None:
        super().__init__(message, url)
        self.reason: ReadFailure = reason


# ---------------------------------------------------------------------------------------------- URLs
def mask_url(url: str) -> str:
    """Replace the password in ``user:password@host`` and secret query values with ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(//[^/:@]*:)[^@/]*@", rf"\g<1>{MASK}@", url)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive letter)
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + MASK
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, url: str) -> str:
    """Remove the raw URL and its password from a message that may quote them (FFmpeg errors do)."""
    masked = mask_url(url)
    text = text.replace(url, masked)
    password = urlsplit(url).password if "://" in url else None
    if password:
        text = text.replace(password, MASK)
    return text


def url_scheme(url: str) -> str:
    """Lower-case scheme; ``""`` for plain paths and ``file://`` URLs."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    return "" if scheme == "file" else scheme


# ---------------------------------------------------------------------------------------------- time
def parse_creation_time(value: str | None) -> float | None:
    """Epoch seconds of a container ``creation_time`` tag (ISO 8601, UTC when no zone), or None."""
    if not value:
        return None
    text = value.strip().replace(" ", "T", 1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    epoch = parsed.timestamp()
    return epoch if epoch >= _MIN_PLAUSIBLE_EPOCH else None


class SampleClock:
    """Chooses frames by timestamp: the first frame whose ``pts >= due``; the due times lie on the grid
    ``0, interval, 2*interval, ...`` seconds from stream start. A gap skips the grid points inside it
    (no frame is repeated or invented to fill them)."""

    def __init__(self, interval_s: float) -> None:
        if not math.isfinite(interval_s) or interval_s <= 0:
            raise ValueError(f"sample interval must be a positive number of seconds, got {interval_s!r}")
        self.interval_s = interval_s
        self.due_s = 0.0

    def is_due(self, pts_s: float) -> bool:
        return pts_s >= self.due_s - _EPS

    def take(self, pts_s: float) -> bool:
        """True when the frame at ``pts_s`` is due; advances the due time past it."""
        if not self.is_due(pts_s):
            return False
        self.due_s = (math.floor(pts_s / self.interval_s + _EPS) + 1) * self.interval_s
        return True


class GopEstimator:
    """Estimates the GOP duration from the gaps between key-frame packets (the largest of the last few).

    A gap that is negative or longer than ``max_gop_s`` is a timestamp discontinuity (or a corrupt header),
    not a GOP: it restarts the measurement instead of counting.
    """

    def __init__(self, window: int = 3, max_gop_s: float = 60.0) -> None:
        self.window = window
        self.max_gop_s = max_gop_s
        self._last_key_s: float | None = None
        self._gaps: list[float] = []

    def add_key(self, pts_s: float) -> None:
        last = self._last_key_s
        if last is not None and abs(pts_s - last) <= _EPS:
            return
        if last is not None and 0 < pts_s - last <= self.max_gop_s:
            self._gaps.append(pts_s - last)
            del self._gaps[: -self.window]
        self._last_key_s = pts_s

    @property
    def gaps(self) -> int:
        return len(self._gaps)

    @property
    def gop_s(self) -> float | None:
        return max(self._gaps) if self._gaps else None


def choose_decode_mode(sample_interval_s: float, gop_s: float | None) -> DecodeMode:
    """Key frames only when every sample interval is at least one GOP long; else decode all and drop."""
    if gop_s is not None and sample_interval_s + _EPS >= gop_s:
        return "keyframes"
    return "all"


@dataclass
class SourceStats:
    """Counters for health reporting; reset on each ``iter_samples`` call."""

    packets: int = 0
    decoded: int = 0
    sampled: int = 0
    decode_errors: int = 0
    dropped_corrupt: int = 0
    last_pts_s: float | None = None
    decode_s: float = 0.0  # wall seconds in the decoder and the colour conversion of the samples
