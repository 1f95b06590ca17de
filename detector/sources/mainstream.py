"""Two inputs per camera, as analytics cameras are deployed: detect on the low-resolution substream
(``detect_url``), open the main stream (``url``) only when a violation needs its evidence.

:class:`MainStreamPipeline` is a :class:`~detector.pipeline.StreamPipeline` whose ``opened`` evidence is a
full-resolution frame grabbed from the main stream at that moment (its next key frame), with the
violation's current box scaled from substream to main-stream pixels (same view, other resolution). When
the main stream does not answer within ``ingest.evidence_timeout_s`` the substream frame is the evidence,
and the failure is logged (masked URL).

Grabbing takes up to a GOP plus the connection set-up, so these streams' results are processed on a thread
of their own (:class:`SerialHandler`, frame order kept) instead of on the shared inference thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections
from detector.evidence import Evidence, render_evidence
from detector.pipeline import StreamPipeline
from detector.rules.base import ViolationUpdate
from detector.sources import Frame, SourceError, grab_frame

log = logging.getLogger(__name__)

Grabber = Callable[[], Frame]


@dataclass
class MainStreamPipeline(StreamPipeline):
    """A stream pipeline whose evidence comes from the main stream (``grabber``)."""

    grabber: Grabber | None = None
    main_grabs: int = 0
    main_failures: int = 0
    last_main_error: str | None = field(default=None, init=False)

    def _evidence(self, u: ViolationUpdate, current: npt.NDArray[np.uint8] | None) -> Evidence | None:
        if self.grabber is None or self._size is None:
            return super()._evidence(u, current)
        try:
            main = self.grabber()
        except SourceError as err:  # messages carry masked URLs only
            self.main_failures += 1
            self.last_main_error = str(err)
            log.warning(
                "%s: no main-stream evidence frame (%s); using the detection frame", self.stream.id, err
            )
            return super()._evidence(u, current)
        self.main_grabs += 1
        sub_w, sub_h = self._size
        main_h, main_w = main.image.shape[:2]
        sx, sy = main_w / sub_w, main_h / sub_h
        x1, y1, x2, y2 = u.bbox
        zone = self.zones.get(u.zone)
        return render_evidence(
            main.image,
            (x1 * sx, y1 * sy, x2 * sx, y2 * sy),
            zone.polygon if zone is not None else None,
            f"{u.rule} {u.label} {u.score_median:.2f}",
            self.evidence.max_width,
            self.evidence.jpeg_quality,
            captured_at=main.ts,
        )


def main_stream_grabber(url: str, stream_id: str, timeout_s: float, transport: str = "tcp") -> Grabber:
    """A grabber for ``url`` (raw, with its password; only ever shown masked)."""
    mode: Literal["tcp", "udp"] = "udp" if transport == "udp" else "tcp"

    def grab() -> Frame:
        return grab_frame(url, stream_id, timeout_s=timeout_s, transport=mode)

    return grab


Result = tuple[Frame, Detections]


class SerialHandler:
    """Runs one stream's result handler on its own thread, in frame order.

    The queue is bounded: when the handler falls behind by ``max_pending`` results the oldest is dropped and
    counted (like the inference queue), so a hung main stream cannot grow memory without bound.
    """

    def __init__(
        self, name: str, handler: Callable[[Frame, Detections], None], max_pending: int = 16
    ) -> None:
        self.handler = handler
        self.dropped = 0
        self._q: queue.Queue[Result | None] = queue.Queue()
        self._max = max_pending
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"post-{name}", daemon=True)
        self._thread.start()

    def __call__(self, frame: Frame, dets: Detections) -> None:
        with self._lock:
            while self._q.qsize() >= self._max:
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    break
                self.dropped += 1
            self._q.put((frame, dets))

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            try:
                self.handler(*item)
            except Exception:  # one stream's bug must not stop its thread
                log.exception("stream %s: processing a frame failed", item[0].stream_id)

    def close(self, timeout: float = 30.0) -> None:
        """Process what is queued, then stop the thread."""
        self._q.put(None)
        self._thread.join(timeout)
