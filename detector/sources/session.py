"""One ``iter_samples`` run: probe the GOP from packets, choose the decode mode, decode, drop, sample.

Decoding rules: frames the decoder flags as corrupt are dropped, and after a decode error every frame is
dropped until the next key frame later than the error, so concealment artefacts (grey or smeared frames) never
reach detection. Nothing is synthesised for gaps: a grid point with no frame is simply skipped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from fractions import Fraction
from itertools import chain
from typing import TYPE_CHECKING, Literal

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from detector.sources.base import (
    DecodeMode,
    Frame,
    GopEstimator,
    SampleClock,
    SourceReadError,
    choose_decode_mode,
    scrub,
)

if TYPE_CHECKING:
    from detector.sources.pyav import VideoSource

log = logging.getLogger(__name__)


class DecodeSession:
    """The state of one ``iter_samples`` run: probe the GOP, pick the decode mode, decode and sample."""

    def __init__(
        self,
        src: VideoSource,
        container: InputContainer,
        stream: VideoStream,
        clock: SampleClock,
        anchor: float | None,
    ) -> None:
        self.src = src
        self.container = container
        self.stream = stream
        self.clock = clock
        self.tb: Fraction = stream.time_base or Fraction(1, 1)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.anchor = anchor  # wall time of pts 0; None: estimated from the packets' arrival (network)
        # a live stream's anchor is refined until the first frame is out: min(arrival - pts) over the packets
        # (every packet arrives after it was sent), never before the connection was opened
        self.refine = anchor is None and src.is_network
        self.origin: int | None = stream.start_time
        self.gop = GopEstimator()
        self.mode: DecodeMode = "all"
        self.error_after_s: float | None = None  # drop frames until a key frame later than this
        self.last_s: float | None = None  # pts of the last good frame
        self.jump_s: float | None = None  # a far-ahead pts waiting for the next frame to confirm it
        self.stats = src.stats
        self.progress_at = time.monotonic()  # the last sign of a working stream (a good frame or a key frame)
        self.pending_error: SourceReadError | None = None  # raised once what was buffered is decoded

    # ---------------------------------------------------------------- packets
    def _pts_s(self, ts: int | None) -> float | None:
        if ts is None:
            return None
        if self.origin is None:
            self.origin = ts
        return float((ts - self.origin) * self.tb)

    def _packets(self) -> Iterator[Packet[VideoStream]]:
        src = self.src
        demux = self.container.demux(self.stream)
        while not src._stop.is_set():
            try:
                pk = next(demux)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as exc:
                timeout = isinstance(exc, av.error.ExitError | TimeoutError)
                reason: Literal["timeout", "lost", "corrupt"] = (
                    "timeout" if timeout else "lost" if src.is_network else "corrupt"
                )
                detail = scrub(str(getattr(exc, "strerror", None) or type(exc).__name__), src._url)
                raise SourceReadError(
                    f"{src.url}: read failed ({reason}: {detail})", src.url, reason
                ) from None
            if pk.size == 0 and pk.pts is None and pk.dts is None:
                continue  # PyAV's end-of-stream flush packet; we flush the decoder ourselves
            if self.refine:
                self._refine_anchor(self._pts_s(pk.pts if pk.pts is not None else pk.dts))
            elif self.anchor is None:
                first = self._pts_s(pk.pts if pk.pts is not None else pk.dts) or 0.0
                self.anchor = time.time() - first
            self.stats.packets += 1
            self._check_stall()
            yield pk

    def _refine_anchor(self, pts_s: float | None) -> None:
        if pts_s is None:
            return
        floor = self.src.opened_at if self.src.opened_at is not None else -math.inf
        estimate = time.time() - pts_s
        self.anchor = max(floor, estimate if self.anchor is None else min(self.anchor, estimate))

    def _check_stall(self) -> None:
        """Packets keep coming but nothing usable does (no key frame, every frame broken): a stall."""
        limit = self.src.stall_timeout_s
        if limit is not None and time.monotonic() - self.progress_at > limit:
            src = self.src
            raise SourceReadError(
                f"{src.url}: stalled: no usable frame for {limit:g} s ({self.stats.packets} packets, "
                f"{self.stats.decode_errors} decode errors, {self.stats.dropped_corrupt} frames dropped)",
                src.url,
                "stalled",
            )

    def _note_key(self, pk: Packet[VideoStream]) -> None:
        pts_s = self._pts_s(pk.pts if pk.pts is not None else pk.dts)
        if pk.is_keyframe and pts_s is not None:
            self.gop.add_key(pts_s)

    @property
    def gop_s(self) -> float | None:
        """The measured GOP, else the hint an earlier connection left."""
        return self.gop.gop_s if self.gop.gop_s is not None else self.src.gop_hint_s

    def _probe(self, packets: Iterator[Packet[VideoStream]]) -> list[Packet[VideoStream]]:
        """Read packets (without decoding) until two key-frame gaps are seen, to estimate the GOP."""
        buffered: list[Packet[VideoStream]] = []
        first_s: float | None = None
        if self.src.gop_hint_s is not None:
            return buffered  # the GOP is known from an earlier connection: no probe
        try:
            for pk in packets:
                buffered.append(pk)
                self._note_key(pk)
                if pk.is_keyframe:
                    self.progress_at = time.monotonic()
                pts_s = self._pts_s(pk.pts if pk.pts is not None else pk.dts)
                if first_s is None:
                    first_s = pts_s
                spanned = pts_s is not None and first_s is not None and pts_s - first_s > self.src.gop_probe_s
                if self.gop.gaps >= 2 or spanned or len(buffered) >= 5000:
                    break
        except SourceReadError as err:  # the stream broke while probing: decode what came, then report
            self.pending_error = err
        return buffered

    def _set_mode(self, mode: DecodeMode) -> None:
        if mode == self.mode and self.src.decode_mode is not None:
            return
        if self.src.decode_mode is not None:
            log.info("%s: decode mode %s -> %s (GOP %s s)", self.src.stream_id, self.mode, mode, self.gop_s)
        self.mode = self.src.decode_mode = mode
        self.src.gop_s = self.gop_s
        self.stream.codec_context.skip_frame = "NONKEY" if mode == "keyframes" else "DEFAULT"

    # ---------------------------------------------------------------- decoding
    def run(self) -> Iterator[Frame]:
        packets = self._packets()
        buffered = self._probe(packets)
        self.src.gop_s = self.gop_s
        mode = choose_decode_mode(self.clock.interval_s, self.gop_s)
        ctx = self.stream.codec_context
        ctx.thread_count = self.src.threads
        # frame threading delays each output by a frame per thread: worth it when every frame is decoded,
        # pure latency when only key frames are (they are independent anyway)
        ctx.thread_type = "AUTO" if mode == "all" else "SLICE"
        self._set_mode(mode)
        log.info("%s: decoding %s (GOP %s s)", self.src.stream_id, mode, self.gop_s)
        consecutive = 0
        for i, pk in enumerate(chain(buffered, packets)):
            if self.src._stop.is_set():
                return
            if i >= len(buffered) and pk.is_keyframe:
                self._note_key(pk)
                self._set_mode(choose_decode_mode(self.clock.interval_s, self.gop_s))
            if self.mode == "keyframes" and not self._key_due(pk):
                if pk.is_keyframe:  # a key frame not due yet: the stream works, it is simply not decoded
                    self.progress_at = time.monotonic()
                continue
            t0 = time.perf_counter()
            try:
                frames = self.stream.decode(pk)
            except av.error.FFmpegError as exc:
                consecutive += 1
                self.stats.decode_errors += 1
                self._poison(self._pts_s(pk.pts if pk.pts is not None else pk.dts))
                log.debug("%s: decode error %s", self.src.stream_id, exc.strerror)
                if consecutive > self.src.max_consecutive_errors:
                    raise SourceReadError(
                        f"{self.src.url}: {consecutive} packets in a row failed to decode (corrupt stream)",
                        self.src.url,
                        "corrupt",
                    ) from None
                continue
            finally:
                self.stats.decode_s += time.perf_counter() - t0
            consecutive = 0
            yield from self._sample(frames)
        if self.src._stop.is_set():
            return
        try:
            yield from self._sample(self.stream.decode(None))
        except av.error.FFmpegError:
            self.stats.decode_errors += 1
        if self.pending_error is not None:
            raise self.pending_error
        self._finish()

    def _key_due(self, pk: Packet[VideoStream]) -> bool:
        """Key-frame mode decodes only due key frames: each stands alone, so skipping one loses nothing."""
        if not pk.is_keyframe:
            return False
        pts_s = self._pts_s(pk.pts)
        return pts_s is None or self.clock.is_due(pts_s)

    @property
    def _max_jump_s(self) -> float:
        return max(30.0, 4 * (self.gop_s or 0.0))

    def _poison(self, pts_s: float | None) -> None:
        """Drop frames until a key frame later than ``pts_s`` (a corrupt header may carry a wild pts)."""
        plausible = pts_s is not None and (self.last_s is None or pts_s - self.last_s <= self._max_jump_s)
        at = pts_s if plausible and pts_s is not None else (self.last_s or 0.0)
        self.error_after_s = at if self.error_after_s is None else max(self.error_after_s, at)

    def _in_sequence(self, pts_s: float) -> bool:
        """Monotonic timestamps; a big forward jump counts only once the next frame confirms it."""
        if self.last_s is None:
            return True
        if pts_s <= self.last_s:
            return False  # out of order or repeated: never go back in time
        if pts_s - self.last_s <= self._max_jump_s:
            self.jump_s = None
            return True
        if self.jump_s is not None and 0 < pts_s - self.jump_s <= self._max_jump_s:
            log.warning("%s: timestamps jump %.1f s -> %.1f s", self.src.stream_id, self.last_s, pts_s)
            self.jump_s = None
            return True
        self.jump_s = pts_s
        self.stats.dropped_corrupt += 1
        return False

    def _sample(self, frames: list[VideoFrame]) -> Iterator[Frame]:
        for f in frames:
            pts_s = self._pts_s(f.pts if f.pts is not None else f.dts)
            if pts_s is None:
                pts_s = (self.last_s or 0.0) + (1.0 / self.fps if self.fps else 0.0)
            if f.is_corrupt:
                self.stats.dropped_corrupt += 1
                self._poison(pts_s)
                continue
            if self.error_after_s is not None:
                if f.key_frame and pts_s > self.error_after_s:
                    self.error_after_s = None
                else:
                    self.stats.dropped_corrupt += 1
                    continue
            if not self._in_sequence(pts_s):
                continue
            self.last_s = self.stats.last_pts_s = pts_s
            self.stats.decoded += 1
            self.progress_at = time.monotonic()
            if not self.clock.take(pts_s):
                continue
            self.stats.sampled += 1
            self.refine = False  # frames are out: the anchor stays, so timestamps never step back
            anchor = self.anchor if self.anchor is not None else 0.0
            index = round(pts_s * self.fps) if self.fps else self.stats.decoded - 1
            t0 = time.perf_counter()
            image: npt.NDArray[np.uint8] = f.to_ndarray(format="bgr24")  # type: ignore[assignment]
            self.stats.decode_s += time.perf_counter() - t0
            yield Frame(self.src.stream_id, anchor + pts_s, pts_s, image, index)
            self.progress_at = time.monotonic()  # time the consumer held the frame is not a stall

    def _finish(self) -> None:
        src, st = self.src, self.stats
        if src.is_live:
            raise SourceReadError(
                f"{src.url}: live stream ended after {st.packets} packets", src.url, "ended"
            )
        duration = self.container.duration / av.time_base if self.container.duration is not None else None
        margin = max(self.gop_s or 0.0, 1.0)
        short = duration is not None and (st.last_pts_s or 0.0) + margin < duration
        level = logging.WARNING if st.decode_errors or st.dropped_corrupt or short else logging.INFO
        end = "n/a" if st.last_pts_s is None else f"{st.last_pts_s:.2f}"
        log.log(
            level,
            "%s: end of %s at %s s%s (%s mode): %d packets, %d frames decoded, %d sampled, "
            "%d decode errors, %d frames dropped as corrupt",
            src.stream_id,
            src.url,
            end,
            "" if duration is None or not math.isfinite(duration) else f" of {duration:.2f} s",
            self.mode,
            st.packets,
            st.decoded,
            st.sampled,
            st.decode_errors,
            st.dropped_corrupt,
        )
