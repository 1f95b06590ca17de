"""One worker thread per stream: open the source, sample frames, hand them to inference.

The worker never invents a frame: a gap (camera down, network stall) is simply time without
samples, which the tracker sees through the frame timestamps. It reconnects forever with
exponential backoff and reports its state (connecting, live, stalled, failed, finished).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detector.config import StreamConfig
from detector.sources import Frame, SourceError, SourceOpenError
from detector.sources.pyav import VideoSource

log = logging.getLogger(__name__)

StateName = Literal["connecting", "live", "stalled", "failed", "finished", "stopped"]
FrameSink = Callable[[Frame, bool], None]  # (frame, block): files wait for inference, live drops
StateSink = Callable[[str, dict[str, Any]], None]


@dataclass
class StreamState:
    state: StateName = "connecting"
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    last_frame_ts: float | None = None
    samples: int = 0
    reconnects: int = 0
    decode_mode: str | None = None
    fps: float = 0.0

    def as_dict(self, stream: StreamConfig) -> dict[str, Any]:
        return {
            "stream": stream.id,
            "state": self.state,
            "since": self.since,
            "connected": self.state == "live",
            "last_frame_ts": self.last_frame_ts,
            "last_error": self.last_error,
            "samples": self.samples,
            "reconnects": self.reconnects,
            "decode_mode": self.decode_mode,
            "sample_fps": round(self.fps, 3),
            "url": stream.display_url,
        }


def resolve_url(url: str, base_dir: Path) -> str:
    """Relative file paths are relative to the config file's folder."""
    if "://" in url and not url.startswith("file://"):
        return url
    path = Path(url[len("file://") :] if url.startswith("file://") else url)
    return str(path if path.is_absolute() else (base_dir / path).resolve())


class StreamWorker(threading.Thread):
    """Reads one stream until stopped; files end in ``finished`` (no fake frames, no loop)."""

    def __init__(
        self,
        stream: StreamConfig,
        base_dir: Path,
        on_frame: FrameSink,
        on_state: StateSink,
        stop: threading.Event,
        *,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 30.0,
        pace: bool = True,
    ) -> None:
        super().__init__(name=f"stream-{stream.id}", daemon=True)
        self.stream = stream
        self.url = resolve_url(stream.detect_url or stream.url, base_dir)
        self.is_file = "://" not in self.url
        self.on_frame = on_frame
        self.on_state = on_state
        self.stop_event = stop
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.pace = pace and self.is_file and stream.file_speed > 0
        self.state = StreamState()
        self._source: VideoSource | None = None

    def _set(self, state: StateName, error: str | None = None) -> None:
        if state != self.state.state or error != self.state.last_error:
            self.state.state = state
            self.state.since = time.time()
            self.state.last_error = error
            level = logging.WARNING if state in ("failed", "stalled") else logging.INFO
            log.log(level, "stream %s: %s%s", self.stream.id, state, f" ({error})" if error else "")
            self.on_state(self.stream.id, self.state.as_dict(self.stream))

    def stop(self) -> None:
        self.stop_event.set()
        if self._source is not None:
            self._source.stop()

    def run(self) -> None:
        delay = self.backoff_min_s
        while not self.stop_event.is_set():
            self._set("connecting", self.state.last_error)
            try:
                finished = self._read()
            except SourceOpenError as err:
                self._set("failed", str(err))
            except SourceError as err:
                self._set("stalled", str(err))
            else:
                if finished:
                    self._set("finished")
                    return
                delay = self.backoff_min_s
            if self.stop_event.wait(delay):
                break
            delay = min(self.backoff_max_s, delay * 2)
            self.state.reconnects += 1
        self._set("stopped", self.state.last_error)

    def _read(self) -> bool:
        start = self.stream.start_time.timestamp() if self.stream.start_time else None
        src = VideoSource(self.url, self.stream.id, start_time=start)
        self._source = src
        t_wall0: float | None = None
        pts0 = 0.0
        window: list[float] = []
        try:
            for frame in src.iter_samples(self.stream.sample_interval_s):
                if self.stop_event.is_set():
                    return False
                if self.state.state != "live":
                    self.state.decode_mode = src.decode_mode
                    self._set("live")
                if self.pace:
                    if t_wall0 is None:
                        t_wall0, pts0 = time.monotonic(), frame.pts_s
                    due = t_wall0 + (frame.pts_s - pts0) / self.stream.file_speed
                    if self.stop_event.wait(max(0.0, due - time.monotonic())):
                        return False
                now = time.monotonic()
                window = [t for t in window if now - t < 30.0] + [now]
                self.state.fps = (
                    (len(window) - 1) / max(window[-1] - window[0], 1e-6) if len(window) > 1 else 0.0
                )
                self.state.samples += 1
                self.state.last_frame_ts = frame.ts
                self.on_frame(frame, self.is_file)
        finally:
            self._source = None
        # a file that ends is finished; a live stream that ends has dropped
        if self.is_file:
            return True
        raise SourceError("stream ended", src.url)
