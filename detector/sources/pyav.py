"""Video sources decoded with PyAV: files, RTSP(S), HTTP(S) and HLS.

``VideoSource.iter_samples(interval)`` yields one decoded BGR frame per sample interval, chosen by frame
timestamp. When the interval is at least one GOP long only key frames are decoded (``decode_mode ==
"keyframes"``); otherwise every frame is decoded and all but the due ones are dropped before colour
conversion (``decode_mode == "all"``). Each call opens the source afresh, so a supervisor reconnects by
calling it again after a :class:`~detector.sources.base.SourceError`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import av
import av.error
from av.container import InputContainer
from av.video.stream import VideoStream

from detector.sources.base import (
    DecodeMode,
    Frame,
    GopEstimator,
    OpenFailure,
    ProbeResult,
    SampleClock,
    SourceOpenError,
    SourceReadError,
    SourceStats,
    mask_url,
    parse_creation_time,
    scrub,
    url_scheme,
)
from detector.sources.session import DecodeSession

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "rtp", "tcp"})
HTTP_SCHEMES = frozenset({"http", "https"})
Transport = Literal["tcp", "udp"]
_OPEN_HINTS: dict[OpenFailure, str] = {
    "not_found": "not found",
    "unauthorized": "authorization failed (check user and password)",
    "refused": "connection refused (is the camera or server up, and the port right?)",
    "timeout": "timed out",
    "unsupported": "unsupported (protocol, container or codec)",
    "invalid": "not readable as video (corrupt, truncated or not a video)",
    "unreachable": "unreachable",
    "other": "failed",
}


def _local_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path)) if url.lower().startswith("file://") else Path(url)


def _classify(exc: BaseException, network: bool, elapsed: float, open_timeout: float) -> OpenFailure:
    timed_out = network and elapsed >= 0.95 * open_timeout
    if isinstance(exc, av.error.FileNotFoundError | av.error.HTTPNotFoundError | FileNotFoundError):
        return "not_found"
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError | PermissionError):
        return "unauthorized"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if timed_out or isinstance(exc, av.error.ExitError | TimeoutError):
        return "timeout"
    if isinstance(exc, av.error.LookupError | IsADirectoryError):
        return "unsupported"
    if isinstance(exc, av.error.InvalidDataError):
        return "invalid"
    if network and isinstance(exc, av.error.HTTPError | OSError):
        return "unreachable"
    return "other"


class VideoSource:
    """A video file or network stream read with PyAV.

    ``start_time`` is the wall time (epoch seconds) of pts 0. Without it, files use the container's
    ``creation_time`` tag, else the file's mtime; network streams estimate it from the packets that arrive
    before the first frame is out: the earliest ``arrival - pts`` (a packet never arrives before it was sent),
    but not before the connection was opened (packets buffered while opening arrive late).

    ``gop_hint_s`` (the GOP measured by an earlier connection to the same stream) skips the GOP probe, so a
    reconnect yields its first frame at the first key frame instead of after two GOPs; the estimate is still
    refined from the key frames that arrive. ``stall_timeout_s``: packets that arrive for that long without a
    usable frame raise :class:`SourceReadError` (``stalled``); no packet at all for ``read_timeout_s`` raises
    one too (``timeout``). Not thread-safe, except :meth:`stop`, which may be called from any thread.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        stream_id: str | None = None,
        *,
        start_time: float | None = None,
        transport: Transport = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        gop_probe_s: float = 10.0,
        gop_hint_s: float | None = None,
        stall_timeout_s: float | None = None,
        max_consecutive_errors: int = 50,
        threads: int = 0,
    ) -> None:
        self._url = os.fspath(url)
        self.url = mask_url(self._url)
        self.scheme = url_scheme(self._url)
        self.is_network = self.scheme != ""
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be 'tcp' or 'udp', got {transport!r}")
        self.stream_id = stream_id or (_local_path(self._url).stem if not self.is_network else self.url)
        self.start_time = start_time
        self.transport: Transport = transport
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.gop_probe_s = gop_probe_s
        self.gop_hint_s = gop_hint_s
        self.stall_timeout_s = stall_timeout_s
        self.max_consecutive_errors = max_consecutive_errors
        self.threads = threads
        self.decode_mode: DecodeMode | None = None
        self.gop_s: float | None = None
        self.is_live: bool | None = None
        self.stats = SourceStats()
        self.opened_at: float | None = None  # wall time the last open started (anchors live streams)
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, stream_id={self.stream_id!r})"

    def stop(self) -> None:
        """Make a running :meth:`iter_samples` return after the packet it is waiting for (at most the read
        timeout). Final: later calls return at once; make a new source to read again."""
        self._stop.set()

    # ------------------------------------------------------------------------------------ opening
    def _options(self) -> dict[str, str]:
        if self.scheme in ("rtsp", "rtsps"):
            # the codec parameters come with the SDP: half a second of probing is plenty (the default 5 s
            # delays every connection and reconnection by 5 s)
            opts = {
                "rtsp_transport": self.transport,
                "allowed_media_types": "video",
                "analyzeduration": "500000",
            }
            if self.transport == "udp":
                opts["buffer_size"] = str(4 * 1024 * 1024)  # fewer lost datagrams on bursty key frames
            return opts
        return {}

    def _open_error(self, exc: BaseException, elapsed: float) -> SourceOpenError:
        reason = _classify(exc, self.is_network, elapsed, self.open_timeout_s)
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        what = "video file" if not self.is_network else "stream"
        msg = f"cannot open {what} {self.url}: {_OPEN_HINTS[reason]} ({scrub(str(detail), self._url)})"
        return SourceOpenError(msg, self.url, reason)

    def _open(self) -> tuple[InputContainer, VideoStream]:
        target = self._url if self.is_network else str(_local_path(self._url))
        if not self.is_network and not Path(target).exists():
            raise SourceOpenError(f"video file not found: {target}", self.url, "not_found")
        started = time.monotonic()
        self.opened_at = time.time()
        try:
            container = av.open(
                target, "r", options=self._options(), timeout=(self.open_timeout_s, self.read_timeout_s)
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise self._open_error(exc, time.monotonic() - started) from None
        if not container.streams.video:
            container.close()
            raise SourceOpenError(f"{self.url} has no video stream", self.url, "unsupported")
        stream = container.streams.video[0]
        if stream.time_base is None:
            container.close()
            raise SourceOpenError(f"{self.url}: video stream has no time base", self.url, "unsupported")
        return container, stream

    def _anchor(self, container: InputContainer, stream: VideoStream) -> float | None:
        """Wall time of pts 0, or None to take it from the first packet's arrival (network streams)."""
        if self.start_time is not None:
            return self.start_time
        created = parse_creation_time(container.metadata.get("creation_time"))
        if created is None:
            created = parse_creation_time(stream.metadata.get("creation_time"))
        if created is not None or self.is_network:
            return created
        try:
            return _local_path(self._url).stat().st_mtime
        except OSError:
            return None  # gone since opening: fall back to the first packet's arrival

    # ------------------------------------------------------------------------------------ reading
    def iter_samples(self, sample_interval_s: float) -> Iterator[Frame]:
        """Yield one frame per ``sample_interval_s`` of stream time: the first frame at or after each
        due time (due times lie on the grid 0, interval, 2*interval, ... seconds from stream start).

        Raises :class:`SourceOpenError` before the first frame and :class:`SourceReadError` when the stream
        breaks (a live stream that ends counts as broken); returns at the end of a file or after :meth:`stop`.
        """
        clock = SampleClock(sample_interval_s)
        if self._stop.is_set():
            return
        self.stats = SourceStats()
        self.decode_mode = None
        container, stream = self._open()
        try:
            self.is_live = self.scheme in LIVE_SCHEMES or (
                self.scheme in HTTP_SCHEMES and container.duration is None
            )
            session = DecodeSession(self, container, stream, clock, self._anchor(container, stream))
            yield from session.run()
        finally:
            container.close()


def grab_frame(
    url: str | os.PathLike[str],
    stream_id: str | None = None,
    *,
    timeout_s: float = 10.0,
    transport: Transport = "tcp",
) -> Frame:
    """Open a stream, decode its next key frame, close it: a full-resolution evidence frame from a camera's
    main stream, which is otherwise never opened. Raises :class:`SourceOpenError` /
    :class:`SourceReadError` (``stalled`` when no key frame comes within ``timeout_s``)."""
    src = VideoSource(
        url,
        stream_id,
        transport=transport,
        open_timeout_s=timeout_s,
        read_timeout_s=timeout_s,
        gop_hint_s=1.0,  # no GOP probe: the key-frame decoder takes the first key frame that arrives
        stall_timeout_s=timeout_s,
        threads=1,
    )
    frames = src.iter_samples(3600.0)
    try:
        for frame in frames:
            return frame
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # closes the container now, not when the generator is collected
    raise SourceReadError(f"{src.url}: ended before a complete frame", src.url, "ended")


class FileSource(VideoSource):
    """A local video file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        stream_id: str | None = None,
        *,
        start_time: float | None = None,
        gop_probe_s: float = 10.0,
        max_consecutive_errors: int = 50,
        threads: int = 0,
    ) -> None:
        super().__init__(
            path,
            stream_id,
            start_time=start_time,
            gop_probe_s=gop_probe_s,
            max_consecutive_errors=max_consecutive_errors,
            threads=threads,
        )
        if self.is_network:
            raise ValueError(f"FileSource takes a local path, got {self.url}")

    @staticmethod
    def probe(path: str | os.PathLike[str], max_scan_s: float = 30.0) -> ProbeResult:
        """(width, height, fps, duration, gop_s) without decoding; GOP from the first key-frame gaps."""
        src = FileSource(path)
        container, stream = src._open()
        try:
            tb = stream.time_base or Fraction(1, 1)
            rate = stream.average_rate or stream.guessed_rate
            duration: float | None = None
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None:
                duration = float(stream.duration * tb)
            gop = GopEstimator()
            origin = stream.start_time or 0
            try:
                for pk in container.demux(stream):
                    ts = pk.pts if pk.pts is not None else pk.dts
                    if ts is None:
                        continue
                    pts_s = float((ts - origin) * tb)
                    if pk.is_keyframe:
                        gop.add_key(pts_s)
                    if gop.gaps >= 3 or pts_s > max_scan_s:
                        break
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceReadError(f"cannot read {src.url}: {exc.strerror}", src.url, "corrupt") from None
            ctx = stream.codec_context
            return ProbeResult(ctx.width, ctx.height, float(rate) if rate else 0.0, duration, gop.gop_s)
        finally:
            container.close()
