"""One inference worker per process, shared by all streams, batching each model's frames across streams.

A deployment may run several models (``detector.inference.rule_models``): the service keeps one backend per
model and batches each model's frames across the streams that need it. A stream registers the models it needs
and a ``merge`` that makes one :class:`Detections` of their answers; a frame is submitted once, queued
once per model it needs (the same decoded image), and handed to the stream's handler once every model
has answered, merged. With one model (a single backend given) nothing changes: no merge, no labels.

Each stream holds at most ``per_stream`` frames still waiting for some model; when a slow model falls
behind, the stream's oldest waiting frame is dropped and counted once (never a fake frame in its place),
whatever models had already seen it. Each batch is one model's, filled round-robin over the streams from
a rotating start, so under overload every stream loses the same share; the model whose oldest waiting
frame is oldest runs next. Results go back to each stream's handler in frame order, on this thread.

The service measures each stream's sample lag: the time from a frame's timestamp (for a live stream,
when it arrived) to its merged detections reaching the handler.

A model's backend can be replaced while the service runs (:meth:`InferenceService.swap`, used by
``detector.inference.hotswap`` when the manifest's default changes): the swap happens on this thread
between two batches, so every queued frame is inferred once, by the old backend or by the new one, and
none is dropped for it; the ``then`` callback runs right after, still before the next batch.

Streams come and go while the service runs (``citywatch run``'s live configuration): :meth:`unregister`
lets the frames a stream already submitted reach its handler, then forgets it; an answer that arrives
for a stream no longer registered (or registered again since) is discarded.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from detector.contracts.detections import Detections
from detector.contracts.errors import DetectorError
from detector.inference import InferenceBackend, InferenceError
from detector.inference.counters import ModelCounters, StreamCounters
from detector.sources import Frame

log = logging.getLogger(__name__)

ResultHandler = Callable[[Frame, Detections], None]
Merge = Callable[[Mapping[str, Detections]], Detections]
#: called on the inference thread with the backend a swap replaced
Swapped = Callable[[InferenceBackend], None]

DEFAULT_MODEL = "default"


class InferenceServiceError(DetectorError):
    """A frame was submitted for a stream the service does not know, or a stream needs an unknown model."""


@dataclass(eq=False)
class _Job:
    """One submitted frame and the answers of the models it needs."""

    frame: Frame
    seq: int
    untaken: set[str]  # models that have not taken it into a batch yet
    pending: set[str]  # models that have not answered yet
    results: dict[str, Detections] = field(default_factory=dict)
    dead: bool = False  # dropped or failed: answers are discarded
    owner: _Stream | None = None  # the registration it was submitted under


@dataclass
class _Swap:
    model: str
    backend: InferenceBackend
    then: Swapped | None


@dataclass
class _Stream:
    handler: ResultHandler
    models: tuple[str, ...]
    merge: Merge | None
    waiting: deque[_Job] = field(default_factory=deque)  # jobs some model has not taken yet
    open: int = 0  # jobs submitted and neither delivered nor dropped


class InferenceService(threading.Thread):
    def __init__(
        self,
        backend: InferenceBackend | Mapping[str, InferenceBackend],
        stop: threading.Event,
        *,
        max_batch: int | Mapping[str, int] = 8,
        per_stream: int = 2,
        gather_s: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="inference", daemon=True)
        backends = dict(backend) if isinstance(backend, Mapping) else {DEFAULT_MODEL: backend}
        batches = dict(max_batch) if isinstance(max_batch, Mapping) else dict.fromkeys(backends, max_batch)
        if (
            not backends
            or set(batches) != set(backends)
            or min(batches.values()) < 1
            or per_stream < 1
            or gather_s < 0
        ):
            raise ValueError(
                f"bad batching: models={list(backends)} max_batch={max_batch} per_stream={per_stream} "
                f"gather_s={gather_s}"
            )
        self.backends = backends
        self.backend = next(iter(backends.values()))  # the first (with one model: the only) backend
        self.stop_event = stop
        self.max_batch = batches
        self.per_stream = per_stream
        self.gather_s = gather_s
        self.clock = clock
        self._streams: dict[str, _Stream] = {}
        self._queues: dict[str, dict[str, deque[_Job]]] = {m: {} for m in backends}  # model -> stream -> jobs
        self._order: list[str] = []
        self._cursor = dict.fromkeys(backends, 0)
        self._seq = itertools.count()
        self._swaps: list[_Swap] = []
        self._cv = threading.Condition()
        self._in_flight = 0  # frames of the batch being inferred and handed out (pending() counts them)
        self.counters: dict[str, StreamCounters] = {}
        self.model_counters = {m: ModelCounters() for m in backends}
        self.batches = 0
        self.frames = 0
        self.busy_s = 0.0
        self.errors = 0
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ streams
    def register(
        self,
        stream_id: str,
        handler: ResultHandler,
        models: Sequence[str] | None = None,
        merge: Merge | None = None,
    ) -> None:
        """``models``: the models this stream's frames go to (default: the first model); with several,
        ``merge`` makes one Detections of their answers (required)."""
        needed = tuple(dict.fromkeys(models)) if models else (next(iter(self.backends)),)
        unknown = [m for m in needed if m not in self.backends]
        if unknown:
            raise InferenceServiceError(f"stream {stream_id!r} needs unknown model(s) {unknown}")
        if len(needed) > 1 and merge is None:
            raise InferenceServiceError(f"stream {stream_id!r} needs {len(needed)} models but no merge")
        with self._cv:
            self._streams[stream_id] = _Stream(handler, needed, merge)
            for m in self.backends:
                self._queues[m].pop(stream_id, None)
            for m in needed:
                self._queues[m][stream_id] = deque()
            if stream_id not in self._order:
                self._order.append(stream_id)
            self.counters.setdefault(stream_id, StreamCounters())

    def unregister(self, stream_id: str, timeout_s: float = 10.0) -> bool:
        """Forget ``stream_id`` once the frames it submitted have reached its handler (up to
        ``timeout_s``; what is left then is dropped and counted). Submit nothing more for it first (stop
        its worker). Returns whether every frame was handled; its counters stay."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            st = self._streams.get(stream_id)
            if st is None:
                return True
            while st.open and not self.stop_event.is_set() and time.monotonic() < deadline:
                self._cv.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            drained = st.open == 0
            for job in list(st.waiting):
                self._drop(st, job)
                self.counters[stream_id].dropped += 1
            del self._streams[stream_id]
            for per in self._queues.values():
                per.pop(stream_id, None)
            self._order.remove(stream_id)
            self._cv.notify_all()
        return drained

    @property
    def dropped(self) -> dict[str, int]:
        return {sid: c.dropped for sid, c in self.counters.items()}

    def submit(self, frame: Frame, *, block: bool = False) -> None:
        """Queue a frame for every model its stream needs. Live streams (``block=False``) drop their
        oldest waiting frame when a model falls behind; files (``block=True``) wait instead, so a replay
        loses no sample."""
        with self._cv:
            st = self._streams.get(frame.stream_id)
            if st is None:
                raise InferenceServiceError(f"stream {frame.stream_id!r} is not registered")
            while block and len(st.waiting) >= self.per_stream and not self.stop_event.is_set():
                self._cv.wait(0.2)
            c = self.counters[frame.stream_id]
            c.submitted += 1
            if len(st.waiting) >= self.per_stream:
                self._drop(st, st.waiting[0])
                c.dropped += 1
            job = _Job(frame, next(self._seq), set(st.models), set(st.models), owner=st)
            st.open += 1
            st.waiting.append(job)
            for m in st.models:
                self._queues[m][frame.stream_id].append(job)
            self._cv.notify_all()

    def _drop(self, st: _Stream, job: _Job) -> None:
        """Forget a job (under the lock): out of the stream's waiting list and every model's queue."""
        if not job.dead:
            st.open -= 1
        job.dead = True
        if job in st.waiting:
            st.waiting.remove(job)
        for m in job.untaken:
            q = self._queues[m].get(job.frame.stream_id)
            if q is not None and job in q:
                q.remove(job)
        job.untaken.clear()

    def pending(self) -> int:
        """Frames queued for a model, counted once per model."""
        with self._cv:
            return sum(len(q) for per in self._queues.values() for q in per.values())

    def idle(self) -> bool:
        """Nothing queued and no batch being inferred or handed out: every submitted frame was judged
        (``pending()`` alone misses the batch in hand)."""
        with self._cv:
            return self._in_flight == 0 and not any(q for per in self._queues.values() for q in per.values())

    def stream_stats(self, stream_id: str) -> dict[str, Any]:
        """What a stream's published state shows about its inference."""
        with self._cv:
            c = self.counters.get(stream_id, StreamCounters())
            lag = None if c.last_lag_s is None else round(c.last_lag_s, 3)
            return {"lag_s": lag, "inference_dropped": c.dropped}

    def counters_now(self) -> tuple[dict[str, StreamCounters], dict[str, ModelCounters]]:
        """Copies of the per-stream and per-model counters, taken at one instant (for the metrics)."""
        with self._cv:
            return (
                {sid: replace(c) for sid, c in self.counters.items()},
                {m: replace(c) for m, c in self.model_counters.items()},
            )

    def reset_lag(self) -> None:
        with self._cv:
            for c in self.counters.values():
                c.max_lag_s = 0.0

    def stats(self) -> dict[str, Any]:
        """``frames`` and ``batches`` count model inferences (a frame two models see counts twice)."""
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
                "models": {m: c.as_dict() for m, c in self.model_counters.items()},
            }

    # ------------------------------------------------------------------ batching
    def _next_model(self) -> str | None:
        """The model whose oldest queued frame is the oldest (None: nothing queued)."""
        best: tuple[int, str] | None = None
        for m, per in self._queues.items():
            for q in per.values():
                if q and (best is None or q[0].seq < best[0]):
                    best = (q[0].seq, m)
        return None if best is None else best[1]

    def _fill(self, model: str, batch: list[_Job]) -> bool:
        """One round-robin pass over ``model``'s queues from its rotating cursor; True if it took one."""
        took = False
        order = [sid for sid in self._order if sid in self._queues[model]]
        n = len(order)
        for k in range(n):
            if len(batch) >= self.max_batch[model]:
                break
            q = self._queues[model][order[(self._cursor[model] + k) % n]]
            if q:
                job = q.popleft()
                job.untaken.discard(model)
                if not job.untaken:
                    st = job.owner
                    if st is not None and job in st.waiting:
                        st.waiting.remove(job)
                batch.append(job)
                took = True
        if n:
            self._cursor[model] = (self._cursor[model] + 1) % n
        return took

    def _take(self) -> tuple[str, list[_Job]]:
        """The next batch: one model and up to its ``max_batch`` frames (empty when stopping)."""
        batch: list[_Job] = []
        with self._cv:
            model = self._next_model()
            while model is None and not self.stop_event.is_set() and not self._swaps:
                self._cv.wait(0.2)
                model = self._next_model()
            if model is None:
                return next(iter(self.backends)), batch
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch[model]:
                if self._fill(model, batch):
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or (not batch and self.stop_event.is_set()):
                    break
                self._cv.wait(left)
            if batch:
                self._in_flight = len(batch)
                self._cv.notify_all()  # room in the queues: wake files waiting to submit
        return model, batch

    def run(self) -> None:
        while not self.stop_event.is_set() or self.pending():
            self._apply_swaps()
            model, batch = self._take()
            if batch:
                try:
                    self._run_batch(model, batch)
                finally:
                    with self._cv:
                        self._in_flight = 0
        with self._cv:
            left, self._swaps = self._swaps, []
        for sw in left:  # stopped before it could be swapped in: nobody will use it
            sw.backend.close()

    # ------------------------------------------------------------------ swapping a model
    def swap(self, model: str, backend: InferenceBackend, then: Swapped | None = None) -> None:
        """Run ``model`` on ``backend`` from the next batch on; ``then(old_backend)`` runs on the inference
        thread right after the swap (update what names the model, close the old backend; without ``then``
        the old backend is closed here)."""
        with self._cv:
            if model not in self.backends:
                raise InferenceServiceError(
                    f"cannot swap unknown model {model!r}; models: {list(self.backends)}"
                )
            self._swaps.append(_Swap(model, backend, then))
            self._cv.notify_all()

    def _apply_swaps(self) -> None:
        """Between two batches (this thread runs them): put each waiting swap's backend in place."""
        done: list[tuple[_Swap, InferenceBackend]] = []
        with self._cv:
            todo, self._swaps = self._swaps, []
            for sw in todo:
                old = self.backends[sw.model]
                self.backends[sw.model] = sw.backend
                if self.backend is old:
                    self.backend = sw.backend
                done.append((sw, old))
        for sw, old in done:
            try:
                if sw.then is not None:
                    sw.then(old)  # it closes the old backend
                else:
                    old.close()
            except Exception:  # the swap is done; a failing callback must not stop inference
                log.exception("model %s: after the swap", sw.model)

    def _run_batch(self, model: str, batch: list[_Job]) -> None:
        t0 = time.perf_counter()
        try:
            results = self.backends[model].infer_streams(
                [job.frame.image for job in batch],
                [(job.frame.stream_id, job.frame.ts) for job in batch],
                wait=False,
            )
        except InferenceError as err:
            with self._cv:
                self.errors += 1
                self.model_counters[model].errors += 1
                for job in batch:  # the frames are lost for every model: their other answers too
                    if job.owner is not None:
                        self._drop(job.owner, job)
            log.error("inference failed (model %s) on a batch of %d frames: %s", model, len(batch), err)
            return
        spent = time.perf_counter() - t0
        ready: list[_Job] = []
        with self._cv:
            self.busy_s += spent
            self.batches += 1
            self.frames += len(batch)
            mc = self.model_counters[model]
            mc.busy_s += spent
            mc.batches += 1
            mc.frames += len(batch)
            for job, dets in zip(batch, results, strict=True):
                self.counters[job.frame.stream_id].infer_s += spent / len(batch)
                job.pending.discard(model)
                job.results[model] = dets
                if not job.pending and not job.dead:
                    ready.append(job)
        for job in ready:
            self._deliver(job)

    def _deliver(self, job: _Job) -> None:
        frame = job.frame
        st = job.owner
        if st is None or self._streams.get(frame.stream_id) is not st:  # unregistered since: not wanted
            return
        try:
            dets = job.results[st.models[0]] if st.merge is None else st.merge(job.results)
            st.handler(frame, dets)
        except Exception:  # one stream's bug must not stop the others
            log.exception("stream %s: processing a frame failed", frame.stream_id)
        lag = self.clock() - frame.ts
        with self._cv:
            st.open -= 1
            if not st.open:  # an unregister may be waiting for it
                self._cv.notify_all()
            c = self.counters[frame.stream_id]
            c.done += 1
            c.last_lag_s = lag
            c.max_lag_s = max(c.max_lag_s, lag)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()
