"""One worker thread per stream: open the source, sample frames, hand them to inference.

The worker never invents a frame: a gap (camera down, network stall) is simply time without
samples, which the tracker sees through the frame timestamps. It reconnects forever with
exponential backoff and reports its state:

- ``connecting``: opening the source;
- ``live``: frames arrive;
- ``stalled``: a stream that worked broke (lost connection, no usable frame for the stall timeout,
  the server refusing while it comes back); retried every ``ingest.reconnect_max_s`` at most;
- ``failed``: the source cannot be used as configured (wrong password, not found, not a video, a
  corrupt file; or a stream that never worked); retried every ``ingest.failed_retry_s`` at most,
  except a file that broke while being read (re-reading it would repeat its frames);
- ``finished`` (a file that ended), ``stopped``.

Every state carries the last error and its reason; URLs are always masked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detector.config import StreamConfig
from detector.sources import Frame, SourceError, SourceOpenError, SourceReadError, mask_url
from detector.sources.base import scrub
from detector.sources.pyav import VideoSource

log = logging.getLogger(__name__)

StateName = Literal["connecting", "live", "stalled", "failed", "finished", "stopped"]
FrameSink = Callable[[Frame, bool], None]  # (frame, block): files wait for inference, live drops
StateSink = Callable[[str, dict[str, Any]], None]
StatsSource = Callable[[], dict[str, Any]]

#: failure reasons a retry will not fix by itself: retried slowly, shown as ``failed``
NEEDS_A_PERSON = frozenset({"unauthorized", "not_found", "unsupported", "invalid", "corrupt"})


@dataclass
class StreamState:
    """A stream's health, as published (retained) on ``streams/{id}/state``."""

    state: StateName = "connecting"
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    reason: str | None = None
    last_frame_ts: float | None = None
    last_sample_at: float | None = None
    samples: int = 0
    reconnects: int = 0
    decode_mode: str | None = None
    gop_s: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float = 0.0
    decoded: int = 0  # frames decoded over every connection (for the metrics; not published)
    decode_s: float = 0.0  # seconds decoding them and converting the samples

    def as_dict(self, stream: StreamConfig) -> dict[str, Any]:
        return {
            "stream": stream.id,
            "state": self.state,
            "since": self.since,
            "connected": self.state == "live",
            "last_frame_ts": self.last_frame_ts,
            "last_sample_at": self.last_sample_at,
            "last_error": self.last_error,
            "reason": self.reason,
            "samples": self.samples,
            "reconnects": self.reconnects,
            "decode_mode": self.decode_mode,
            "gop_s": self.gop_s,
            "width": self.width,
            "height": self.height,
            "sample_fps": round(self.fps, 3),
            "sample_interval_s": stream.sample_interval_s,
            "input": "detect_url" if stream.detect_url else "url",
            "transport": stream.ingest.transport,
            "url": stream.display_url,
            "detect_url": stream.display_detect_url,
        }


def resolve_url(url: str, base_dir: Path) -> str:
    """Relative file paths are relative to the config file's folder."""
    if "://" in url and not url.startswith("file://"):
        return url
    path = Path(url[len("file://") :] if url.startswith("file://") else url)
    return str(path if path.is_absolute() else (base_dir / path).resolve())


class StreamWorker(threading.Thread):
    """Reads one stream until stopped; files end in ``finished`` (no fake frames, no loop).

    Detection reads ``detect_url`` (a camera's low-resolution substream) when the stream has one, else
    ``url``. Backoff and stall limits come from ``stream.ingest`` unless given here. ``extra_state``
    adds figures owned elsewhere (inference lag, dropped frames) to each published state.
    """

    def __init__(
        self,
        stream: StreamConfig,
        base_dir: Path,
        on_frame: FrameSink,
        on_state: StateSink,
        stop: threading.Event,
        *,
        backoff_min_s: float | None = None,
        backoff_max_s: float | None = None,
        failed_retry_s: float | None = None,
        stall_timeout_s: float | None = None,
        pace: bool = True,
        state_every_s: float = 15.0,
        extra_state: StatsSource | None = None,
    ) -> None:
        super().__init__(name=f"stream-{stream.id}", daemon=True)
        ing = stream.ingest
        self.stream = stream
        self.url = resolve_url(stream.detect_url or stream.url, base_dir)
        self.display_url = mask_url(self.url)
        self.is_file = "://" not in self.url
        self.on_frame = on_frame
        self.on_state = on_state
        self.stop_event = stop
        self.backoff_min_s = ing.reconnect_min_s if backoff_min_s is None else backoff_min_s
        self.backoff_max_s = ing.reconnect_max_s if backoff_max_s is None else backoff_max_s
        self.failed_retry_s = ing.failed_retry_s if failed_retry_s is None else failed_retry_s
        self.stall_timeout_s = ing.stall_timeout_s if stall_timeout_s is None else stall_timeout_s
        self.pace = pace and self.is_file and stream.file_speed > 0
        self.state_every_s = state_every_s
        self.extra_state = extra_state
        self.state = StreamState()
        self.history: deque[StateName] = deque(maxlen=64)  # recent states, oldest first
        self.ever_live = False
        self._gop_s: float | None = None  # measured by an earlier connection: reconnects skip the probe
        self._source: VideoSource | None = None
        self._source_lock = threading.Lock()
        self._published_at = 0.0
        self._last_failure: tuple[str, str | None] | None = None
        self._last_ts: float | None = None  # timestamps only go forward, across reconnects too
        self.skipped_backwards = 0
        self._window: deque[float] = deque()

    def resume_after(self, ts: float) -> None:
        """Skip frames up to frame time ``ts``: another worker judged them (a stream moved here); a file
        is read again from its start up to there without pacing, a live stream just goes on."""
        self._last_ts = ts

    # ---------------------------------------------------------------------------------- state
    def snapshot(self) -> dict[str, Any]:
        data = self.state.as_dict(self.stream)
        if self.extra_state is not None:
            data.update(self.extra_state())
        return data

    @property
    def _about(self) -> dict[str, str]:
        """``extra=`` of this stream's log lines (the ``stream`` field of a JSON log line)."""
        return {"stream": self.stream.id}

    def _publish(self) -> None:
        self._published_at = time.monotonic()
        try:
            self.on_state(self.stream.id, self.snapshot())
        except Exception:  # a broken state sink must not stop the stream
            log.exception("stream %s: publishing its state failed", self.stream.id, extra=self._about)

    def _set(self, state: StateName, error: str | None = None, reason: str | None = None) -> None:
        st = self.state
        if state == st.state and error == st.last_error and reason == st.reason:
            return
        if state != st.state:
            st.since = time.time()
            self.history.append(state)
        retry = state == "connecting" and st.state in ("failed", "stalled")
        st.state, st.last_error, st.reason = state, error, reason
        level = logging.DEBUG if retry else logging.INFO
        if state in ("failed", "stalled"):  # a failure is a warning once, not at every retry
            level = logging.DEBUG if (state, error) == self._last_failure else logging.WARNING
            self._last_failure = (state, error)
        elif state == "live":
            self._last_failure = None
        detail = f" ({error})" if error and state != "connecting" else ""
        log.log(level, "stream %s: %s%s", self.stream.id, state, detail, extra=self._about)
        self._publish()

    # ---------------------------------------------------------------------------------- control
    def stop(self) -> None:
        self.stop_event.set()
        with self._source_lock:
            if self._source is not None:
                self._source.stop()

    def run(self) -> None:
        delay = self.backoff_min_s
        log.info("stream %s: connecting to %s", self.stream.id, self.display_url, extra=self._about)
        self.history.append("connecting")
        self._publish()
        while not self.stop_event.is_set():
            self._set("connecting", self.state.last_error, self.state.reason)
            samples_before = self.state.samples
            cap = self.backoff_max_s
            try:
                finished = self._read()
            except SourceOpenError as err:
                person = err.reason in NEEDS_A_PERSON
                self._set("stalled" if self.ever_live and not person else "failed", str(err), err.reason)
                cap = self.failed_retry_s if person else self.backoff_max_s
            except SourceReadError as err:
                if self.is_file:  # reading the file again would repeat its frames: report and end
                    self._set("failed", str(err), err.reason)
                    return
                self._set("stalled", str(err), err.reason)
            except SourceError as err:
                self._set("stalled", str(err), "lost")
            except Exception as exc:  # a bug (ours or a sink's) must not kill the thread silently
                log.exception("stream %s: unexpected error", self.stream.id, extra=self._about)
                why = scrub(f"internal error: {type(exc).__name__}: {exc}", self.url)
                self._set("failed", why, "internal")
                cap = self.failed_retry_s
            else:
                if finished:
                    self._set("finished")
                    return
            if self.state.samples > samples_before:
                delay = self.backoff_min_s  # it worked for a while: start the backoff afresh
            delay = min(delay, cap)
            if self.stop_event.wait(delay):
                break
            delay = min(cap, delay * 2)
            self.state.reconnects += 1
        self._set("stopped", self.state.last_error, self.state.reason)

    # ---------------------------------------------------------------------------------- reading
    def _open_source(self) -> VideoSource:
        ing = self.stream.ingest
        start = self.stream.start_time.timestamp() if self.stream.start_time else None
        src = VideoSource(
            self.url,
            self.stream.id,
            start_time=start,
            transport=ing.transport,
            open_timeout_s=ing.open_timeout_s,
            read_timeout_s=self.stall_timeout_s,
            gop_hint_s=self._gop_s,
            stall_timeout_s=None if self.is_file else self.stall_timeout_s,
            threads=ing.decode_threads,
        )
        with self._source_lock:
            self._source = src
            if self.stop_event.is_set():
                src.stop()
        return src

    def _read(self) -> bool:
        """One connection: True when a file ended; raises SourceError when the source fails."""
        src = self._open_source()
        base = (self.state.decoded, self.state.decode_s)  # this connection's decoding adds to them
        t_wall0: float | None = None
        pts0 = 0.0
        try:
            for frame in src.iter_samples(self.stream.sample_interval_s):
                if self.stop_event.is_set():
                    return False
                if self._last_ts is not None and frame.ts <= self._last_ts:
                    # a reconnect whose clock anchor lands before frames already processed (a server that
                    # bursts its buffer): skip until time moves on, never feed the tracker a step back
                    self.skipped_backwards += 1
                    continue
                self._last_ts = frame.ts
                if self.state.state != "live":
                    self._went_live(src, frame)
                if self.pace:
                    if t_wall0 is None:
                        t_wall0, pts0 = time.monotonic(), frame.pts_s
                    due = t_wall0 + (frame.pts_s - pts0) / self.stream.file_speed
                    if self.stop_event.wait(max(0.0, due - time.monotonic())):
                        return False
                self._count(frame)
                self._decoded(src, base)
                self.on_frame(frame, self.is_file)
                if time.monotonic() - self._published_at >= self.state_every_s:
                    self._publish()
        except SourceError as err:
            raise type(err)(*_scrubbed_args(err, self.url)) from None
        finally:
            self._decoded(src, base)
            if src.gop_s is not None:
                self._gop_s = src.gop_s
            with self._source_lock:
                self._source = None
        if self.stop_event.is_set():
            return False
        if self.is_file:  # a file that ends is finished; a live stream that ends has dropped
            return True
        raise SourceReadError(f"{src.url}: the stream ended (the server closed it)", src.url, "ended")

    def _decoded(self, src: VideoSource, base: tuple[int, float]) -> None:
        self.state.decoded, self.state.decode_s = base[0] + src.stats.decoded, base[1] + src.stats.decode_s

    def _went_live(self, src: VideoSource, frame: Frame) -> None:
        st = self.state
        st.decode_mode, st.gop_s = src.decode_mode, src.gop_s
        st.height, st.width = frame.image.shape[:2]
        self.ever_live = True
        self._window.clear()
        self._set("live")

    def _count(self, frame: Frame) -> None:
        st = self.state
        now = time.monotonic()
        self._window.append(now)
        while now - self._window[0] > 30.0:
            self._window.popleft()
        span = self._window[-1] - self._window[0]
        st.fps = (len(self._window) - 1) / span if len(self._window) > 1 and span > 0 else 0.0
        st.samples += 1
        st.last_frame_ts = frame.ts
        st.last_sample_at = time.time()


def _scrubbed_args(err: SourceError, raw_url: str) -> tuple[Any, ...]:
    """The error's arguments with the raw URL and its password removed (FFmpeg quotes URLs)."""
    msg = scrub(str(err), raw_url)
    if isinstance(err, SourceOpenError | SourceReadError):
        return (msg, err.url, err.reason)
    return (msg, err.url)
