"""One inference worker per process, shared by all streams, batching frames across streams.

Each stream has a slot holding at most ``per_stream`` waiting frames; when a slow model
falls behind, the oldest waiting frame of that stream is dropped and counted (never a fake
frame in its place). Batches are filled round-robin from a rotating start, so under overload
every stream loses the same share instead of the last-registered ones losing everything.
Results go back to each stream's handler in frame order, on this thread.

The service measures each stream's sample lag: the time from a frame's timestamp (for a live
stream, when it arrived) to its detections reaching the handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detector.detections import Detections
from detector.inference import InferenceBackend, InferenceError
from detector.sources import Frame

log = logging.getLogger(__name__)

ResultHandler = Callable[[Frame, Detections], None]


class InferenceServiceError(Exception):
    """A frame was submitted for a stream the service does not know."""


@dataclass
class StreamCounters:
    """Per-stream figures; ``max_lag_s`` is the worst since the last :meth:`InferenceService.reset_lag`."""

    submitted: int = 0
    done: int = 0
    dropped: int = 0
    last_lag_s: float | None = None
    max_lag_s: float = 0.0


class InferenceService(threading.Thread):
    def __init__(
        self,
        backend: InferenceBackend,
        stop: threading.Event,
        *,
        max_batch: int = 8,
        per_stream: int = 2,
        gather_s: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="inference", daemon=True)
        if max_batch < 1 or per_stream < 1 or gather_s < 0:
            raise ValueError(
                f"bad batching: max_batch={max_batch} per_stream={per_stream} gather_s={gather_s}"
            )
        self.backend = backend
        self.stop_event = stop
        self.max_batch = max_batch
        self.per_stream = per_stream
        self.gather_s = gather_s
        self.clock = clock
        self._handlers: dict[str, ResultHandler] = {}
        self._queues: dict[str, deque[Frame]] = {}
        self._order: list[str] = []
        self._cursor = 0
        self._cv = threading.Condition()
        self.counters: dict[str, StreamCounters] = {}
        self.batches = 0
        self.frames = 0
        self.busy_s = 0.0
        self.errors = 0
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ streams
    def register(self, stream_id: str, handler: ResultHandler) -> None:
        with self._cv:
            self._handlers[stream_id] = handler
            self._queues[stream_id] = deque()
            if stream_id not in self._order:
                self._order.append(stream_id)
            self.counters.setdefault(stream_id, StreamCounters())

    @property
    def dropped(self) -> dict[str, int]:
        return {sid: c.dropped for sid, c in self.counters.items()}

    def submit(self, frame: Frame, *, block: bool = False) -> None:
        """Queue a frame. Live streams (``block=False``) drop their oldest waiting frame when the
        model falls behind; files (``block=True``) wait instead, so a replay loses no sample."""
        with self._cv:
            q = self._queues.get(frame.stream_id)
            if q is None:
                raise InferenceServiceError(f"stream {frame.stream_id!r} is not registered")
            while block and len(q) >= self.per_stream and not self.stop_event.is_set():
                self._cv.wait(0.2)
            c = self.counters[frame.stream_id]
            c.submitted += 1
            if len(q) >= self.per_stream:
                q.popleft()
                c.dropped += 1
            q.append(frame)
            self._cv.notify_all()

    def pending(self) -> int:
        with self._cv:
            return sum(len(q) for q in self._queues.values())

    def stream_stats(self, stream_id: str) -> dict[str, Any]:
        """What a stream's published state shows about its inference."""
        with self._cv:
            c = self.counters.get(stream_id, StreamCounters())
            lag = None if c.last_lag_s is None else round(c.last_lag_s, 3)
            return {"lag_s": lag, "inference_dropped": c.dropped}

    def reset_lag(self) -> None:
        with self._cv:
            for c in self.counters.values():
                c.max_lag_s = 0.0

    def stats(self) -> dict[str, Any]:
        with self._cv:
            elapsed = max(time.monotonic() - self.started_at, 1e-9)
            return {
                "frames": self.frames,
                "batches": self.batches,
                "mean_batch": round(self.frames / self.batches, 2) if self.batches else 0.0,
                "busy": round(self.busy_s / elapsed, 3),
                "errors": self.errors,
                "dropped": sum(c.dropped for c in self.counters.values()),
                "max_lag_s": round(max((c.max_lag_s for c in self.counters.values()), default=0.0), 3),
            }

    # ------------------------------------------------------------------ batching
    def _fill(self, batch: list[Frame]) -> bool:
        """One round-robin pass from the rotating cursor; True when it took a frame."""
        took = False
        n = len(self._order)
        for k in range(n):
            if len(batch) >= self.max_batch:
                break
            sid = self._order[(self._cursor + k) % n]
            q = self._queues[sid]
            if q:
                batch.append(q.popleft())
                took = True
        if n:
            self._cursor = (self._cursor + 1) % n
        return took

    def _take(self) -> list[Frame]:
        batch: list[Frame] = []
        with self._cv:
            while not any(self._queues.values()) and not self.stop_event.is_set():
                self._cv.wait(0.2)
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch:
                if self._fill(batch):
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or (not batch and self.stop_event.is_set()):
                    break
                self._cv.wait(left)
            if batch:
                self._cv.notify_all()  # room in the queues: wake files waiting to submit
        return batch

    def run(self) -> None:
        while not self.stop_event.is_set() or self.pending():
            batch = self._take()
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[Frame]) -> None:
        t0 = time.perf_counter()
        try:
            results = self.backend.infer([f.image for f in batch])
        except InferenceError as err:
            self.errors += 1
            log.error("inference failed on a batch of %d frames: %s", len(batch), err)
            return
        spent = time.perf_counter() - t0
        with self._cv:
            self.busy_s += spent
            self.batches += 1
            self.frames += len(batch)
        for frame, dets in zip(batch, results, strict=True):
            try:
                self._handlers[frame.stream_id](frame, dets)
            except Exception:  # one stream's bug must not stop the others
                log.exception("stream %s: processing a frame failed", frame.stream_id)
            lag = self.clock() - frame.ts
            with self._cv:
                c = self.counters[frame.stream_id]
                c.done += 1
                c.last_lag_s = lag
                c.max_lag_s = max(c.max_lag_s, lag)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()
