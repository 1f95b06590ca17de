"""One inference worker per process, shared by all streams, batching frames across streams.

Each stream has a slot holding at most ``per_stream`` waiting frames; when a slow model
falls behind, the oldest waiting frame of that stream is dropped and counted (never a fake
frame in its place). Results go back to each stream's handler in frame order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from detector.detections import Detections
from detector.inference import InferenceBackend, InferenceError
from detector.sources import Frame

log = logging.getLogger(__name__)

ResultHandler = Callable[[Frame, Detections], None]


class InferenceService(threading.Thread):
    def __init__(
        self,
        backend: InferenceBackend,
        stop: threading.Event,
        *,
        max_batch: int = 8,
        per_stream: int = 2,
        gather_s: float = 0.02,
    ) -> None:
        super().__init__(name="inference", daemon=True)
        self.backend = backend
        self.stop_event = stop
        self.max_batch = max_batch
        self.per_stream = per_stream
        self.gather_s = gather_s
        self._handlers: dict[str, ResultHandler] = {}
        self._queues: dict[str, deque[Frame]] = {}
        self._cv = threading.Condition()
        self.dropped: dict[str, int] = {}
        self.batches = 0
        self.frames = 0
        self.busy_s = 0.0
        self.errors = 0

    def register(self, stream_id: str, handler: ResultHandler) -> None:
        with self._cv:
            self._handlers[stream_id] = handler
            self._queues[stream_id] = deque()
            self.dropped[stream_id] = 0

    def submit(self, frame: Frame, *, block: bool = False) -> None:
        """Queue a frame. Live streams (``block=False``) drop their oldest waiting frame when the
        model falls behind; files (``block=True``) wait instead, so a replay loses no sample."""
        with self._cv:
            q = self._queues[frame.stream_id]
            while block and len(q) >= self.per_stream and not self.stop_event.is_set():
                self._cv.wait(0.2)
            if len(q) >= self.per_stream:
                q.popleft()
                self.dropped[frame.stream_id] += 1
            q.append(frame)
            self._cv.notify_all()

    def pending(self) -> int:
        with self._cv:
            return sum(len(q) for q in self._queues.values())

    def _take(self) -> list[Frame]:
        """Round-robin over streams so one busy stream cannot starve the others."""
        batch: list[Frame] = []
        with self._cv:
            while not any(self._queues.values()) and not self.stop_event.is_set():
                self._cv.wait(0.2)
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch:
                took = False
                for q in self._queues.values():
                    if q and len(batch) < self.max_batch:
                        batch.append(q.popleft())
                        took = True
                if not took:
                    left = deadline - time.monotonic()
                    if left <= 0 or (batch == [] and self.stop_event.is_set()):
                        break
                    self._cv.wait(left)
            if batch:
                self._cv.notify_all()
        return batch

    def run(self) -> None:
        while not self.stop_event.is_set() or self.pending():
            batch = self._take()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = self.backend.infer([f.image for f in batch])
            except InferenceError as err:
                self.errors += 1
                log.error("inference failed on a batch of %d frames: %s", len(batch), err)
                continue
            self.busy_s += time.perf_counter() - t0
            self.batches += 1
            self.frames += len(batch)
            for frame, dets in zip(batch, results, strict=True):
                try:
                    self._handlers[frame.stream_id](frame, dets)
                except Exception:  # one stream's bug must not stop the others
                    log.exception("stream %s: processing a frame failed", frame.stream_id)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()
