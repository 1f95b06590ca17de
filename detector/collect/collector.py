"""The collector: sees every sample of the streams it is attached to and keeps the frames worth labelling.

    collector = Collector.from_config(cfg.collect, base_dir).start()
    collector.attach(pipeline)      # sets pipeline.observer (nothing for a stream with collect: false)
    ...
    collector.stop()                # writes what is queued, then returns

:meth:`observe` runs on the inference thread: it decides (``detector.collect.policy``, the hour's cap
checked first) and queues the frame; a bounded queue and one writer thread do the resizing, JPEG
encoding and writing, so the stream never waits for the disk. When the queue is full the sample is
dropped and counted. Frames are stored at the evidence's size (``evidence.max_width``), so a box the
desk draws on the evidence image is in the stored frame's pixels. A case frame is the violation's
evidence frame (its best sample) when the pipeline still holds it, else the frame it opened on; a frame
already kept for another reason gets ``case`` and the violation id added to its sidecar.

The writer indexes the collection at start, applies the age limits and the budget then, after any write
that takes it over budget, and every ``RETENTION_EVERY_S`` seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from detector.collect.policy import Det, Quota, StreamPolicy, commit, decide, flatten
from detector.collect.record import (
    JPEG_QUALITY,
    FrameRecord,
    ModelRef,
    Prediction,
    frame_id,
    iso_ms,
    read_record,
    utc_ms,
)
from detector.collect.store import CollectionStore, store_for
from detector.config.collect import CollectConfig
from detector.contracts.detections import Detections
from detector.pipeline import StreamPipeline

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 600.0
RECENT_FRAMES = 512  # (stream, ts) -> sidecar of recent writes, to add a case to a frame already kept
TS_MATCH_S = 0.0015  # an evidence captured_at (ms) names a held frame within this


@dataclass
class _Job:
    stream: str
    ts: float
    image: npt.NDArray[np.uint8]
    reasons: list[str]
    dets: Sequence[Det]
    model: Mapping[str, Any] | None
    max_width: int
    violation_id: str | None = None


@dataclass
class _StreamState:
    quota: Quota = field(default_factory=Quota)
    policy: StreamPolicy | None = None
    policy_key: tuple[Any, ...] = ()
    dets: dict[float, list[Det]] = field(default_factory=dict)  # detections of the frames the pipeline holds


class Collector:
    """Frames worth labelling from every attached stream, within ``cfg``'s caps and budget."""

    def __init__(self, cfg: CollectConfig, store: CollectionStore) -> None:
        self.cfg = cfg
        self.store = store
        self.counts: Counter[str] = Counter()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=cfg.queue)
        self._streams: dict[str, _StreamState] = {}
        self._recent: OrderedDict[tuple[str, float], Path] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # counts: streams with main-stream evidence observe on own threads
        self._last_retention = 0.0

    @classmethod
    def from_config(
        cls, cfg: CollectConfig, base_dir: Path | None = None, clock: Callable[[], float] = time.time
    ) -> Collector:
        """``cfg.dir`` relative to ``base_dir`` (the config file's folder); ``clock`` for the age limits."""
        root = cfg.dir if cfg.dir.is_absolute() or base_dir is None else base_dir / cfg.dir
        store = store_for(root, cfg.budget_mb, cfg.max_age_days, cfg.reviewed_max_age_days)
        store.clock = clock
        return cls(cfg, store)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Collector:
        self._thread = threading.Thread(target=self._run, name="collect-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.error(
                "collect: the writer does not take frames any more; %d not written", self._queue.qsize()
            )
        self._thread.join(timeout)
        self._thread = None
        log.info("collect: %s", self.stats())

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every queued frame is written (tests, replays)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def attach(self, pipe: StreamPipeline) -> bool:
        """Observe ``pipe`` unless its stream says ``collect: false``; returns whether it is observed."""
        if not pipe.stream.collect:
            return False
        pipe.observer = self.observe
        return True

    def stats(self) -> dict[str, Any]:
        return {
            **dict(sorted(self.counts.items())),
            "queued": self._queue.qsize(),
            "frames": len(self.store.entries),
            "mib": round(self.store.total / (1024 * 1024), 1),
        }

    # ------------------------------------------------------------------ on the inference thread
    def observe(
        self,
        pipe: StreamPipeline,
        ts: float,
        image: npt.NDArray[np.uint8],
        dets: Detections,
        events: list[dict[str, Any]],
    ) -> None:
        try:
            self._observe(pipe, ts, image, dets, events)
        except Exception:  # the collector must never stop a stream
            self._count("errors")
            log.exception("collect: %s: sample at %s not considered", pipe.stream.id, iso_ms(ts))

    def _observe(
        self,
        pipe: StreamPipeline,
        ts: float,
        image: npt.NDArray[np.uint8],
        dets: Detections,
        events: list[dict[str, Any]],
    ) -> None:
        sid = pipe.stream.id
        st = self._streams.setdefault(sid, _StreamState())
        # the ModelInfos themselves: a hot swap keeps a model's id but brings a new info (its classes)
        key = (pipe.model, tuple(sorted(pipe.rule_models.items(), key=lambda item: item[0])))
        if st.policy is None or st.policy_key != key:  # first sample, or the models were swapped
            st.policy, st.policy_key = StreamPolicy.of(pipe), key
        rows = flatten(dets, pipe.model.id, pipe.model.rule_labels)
        held = pipe.held_frames()
        st.dets = {t: d for t, d in st.dets.items() if t in held}
        st.dets[ts] = rows
        width = pipe.evidence.max_width
        decision = decide(self.cfg, st.policy, st.quota, ts, rows)
        if decision.capped:
            self._count("capped")
        job = None
        if decision.reasons:
            job = _Job(sid, ts, image, list(decision.reasons), rows, pipe.model.as_event(), width)
        for event in events if self.cfg.case_frames else ():
            if event.get("event") != "opened":
                continue
            at = _held_ts(held, event.get("evidence") or {})
            if job is not None and job.violation_id is None and (at is None or at == ts):
                job.reasons.append("case")
                job.violation_id = event["violation_id"]
                continue
            frame_ts = ts if at is None else at
            case = _Job(
                sid, frame_ts, held.get(frame_ts, image), ["case"], st.dets.get(frame_ts, rows),
                event.get("model"), width, event["violation_id"],
            )  # fmt: skip
            self._put(case)
        if job is not None and self._put(job):
            commit(st.quota, decision)

    def _put(self, job: _Job) -> bool:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._count("dropped_queue_full")
            return False
        for reason in job.reasons:
            self._count(f"kept_{reason}")
        return True

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        try:
            self.store.scan()
            self._retention()
        except Exception:
            log.exception("collect: cannot index %s", self.store.root)
        while True:
            try:
                job = self._queue.get(timeout=RETENTION_EVERY_S / 10)
            except queue.Empty:
                if time.monotonic() - self._last_retention >= RETENTION_EVERY_S:
                    self._retention()
                continue
            try:
                if job is None:
                    return
                self._write(job)
                if self.store.over_budget or time.monotonic() - self._last_retention >= RETENTION_EVERY_S:
                    self._retention()
            except Exception:
                self._count("write_errors")
                log.exception("collect: cannot write a frame of %s", job.stream if job else "?")
            finally:
                self._queue.task_done()

    def _retention(self) -> None:
        self._last_retention = time.monotonic()
        deleted = self.store.enforce()
        self._count("deleted_age", deleted.aged)
        self._count("deleted_budget", deleted.budget)

    def _write(self, job: _Job) -> None:
        existing = self._recent.get((job.stream, job.ts))
        if existing is not None and existing.exists():
            self._merge(existing, job)
            return
        h, w = job.image.shape[:2]
        scale = min(1.0, job.max_width / w)
        preds = [
            Prediction(
                label=d.label,
                xyxy=_box(d.xyxy, scale, w * scale, h * scale),
                score=min(max(d.score, 0.0), 1.0),
                model=d.model,
            )
            for d in job.dets
        ]
        image = job.image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not encode the frame as JPEG")
        n = 1
        while self.store.exists(frame_id(job.stream, job.ts, job.reasons[0], n), job.stream, job.ts):
            n += 1
        record = FrameRecord(
            id=frame_id(job.stream, job.ts, job.reasons[0], n),
            stream=job.stream,
            captured_at=utc_ms(job.ts),
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            reasons=job.reasons,  # type: ignore[arg-type]
            model=ModelRef.model_validate(job.model) if job.model else None,
            predictions=preds,
            violation_id=job.violation_id,
        )
        path = self.store.write(record, buf.tobytes())
        self._count("written")
        self._recent[(job.stream, job.ts)] = path
        while len(self._recent) > RECENT_FRAMES:
            self._recent.popitem(last=False)

    def _merge(self, path: Path, job: _Job) -> None:
        """Add ``job``'s reasons (and its violation id) to the frame already stored at ``path``; a second
        violation on one frame gets a frame of its own."""
        record = read_record(path)
        if job.violation_id is not None and record.violation_id not in (None, job.violation_id):
            del self._recent[(job.stream, job.ts)]
            self._write(job)
            return
        reasons = [*record.reasons, *job.reasons]
        vid = record.violation_id or job.violation_id
        update = {"reasons": list(dict.fromkeys(reasons)), "violation_id": vid}
        self.store.update(path, record.model_copy(update=update))
        self._count("merged")


def _box(
    xyxy: tuple[float, float, float, float], scale: float, w: float, h: float
) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (round(v * scale, 1) for v in xyxy)
    return (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))


def _held_ts(held: Mapping[float, Any], evidence: Mapping[str, Any]) -> float | None:
    """The held frame an event's evidence was made from (its ``captured_at``), if the pipeline holds it."""
    at = evidence.get("captured_at")
    if not isinstance(at, str):
        return None
    target = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    best = min(held, key=lambda t: abs(t - target), default=None)
    return best if best is not None and abs(best - target) <= TS_MATCH_S else None
