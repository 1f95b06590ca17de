"""One stream's path from detections to events: rules → violation lifecycle → evidence → sink.

Inference is not here: a shared (batched) inference service hands each stream its
``Detections``; :class:`StreamPipeline` is pure with respect to time (frame timestamps only),
so a file replayed as fast as the machine allows gives the same events as the live stream.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.config import EvidenceConfig, StreamConfig
from detector.contracts.detections import Detections
from detector.contracts.events import build_event, violation_id
from detector.delivery.publisher import EventSink
from detector.evidence import Evidence, decode_jpeg, encode_jpeg, render_evidence
from detector.rules.base import ViolationUpdate
from detector.rules.engine import RuleEngine, label_map
from detector.rules.zones import Zone

log = logging.getLogger(__name__)

#: ``seq`` counts tenths of a second of frame time since the violation was first seen, doubled so
#: that a ``cleared`` sorts after an ``updated`` of the same frame. It survives a detector restart
#: (it is derived from frame time, not from a counter) and fits the schema for years.
SEQ_PER_S = 10
#: What a re-check of a rule name the config does not know needs (commands name a rule the API knows).
UNKNOWN_RULE_MIN_SCORE = 0.25
#: JPEG quality of the evidence frames a checkpoint carries to the next worker
JPEG_HELD = 92


@dataclass(frozen=True)
class ModelInfo:
    """What the events say about the model, and how its classes map onto rule labels.

    ``key`` names the loaded instance in merged detections (``data["model"]``); None: ``name@version``.
    """

    name: str
    version: str
    sha256: str | None
    class_names: tuple[str, ...]
    rule_labels: Mapping[str, str]
    key: str | None = None

    @property
    def id(self) -> str:
        return self.key or f"{self.name}@{self.version}"

    def as_event(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


#: Called after each sample with (pipeline, ts, clean image, detections, the events it sent): the frame
#: collector (``detector.collect``) hooks in here. It runs on the inference thread, so it must be cheap.
FrameObserver = Callable[
    ["StreamPipeline", float, npt.NDArray[np.uint8], Detections, list[dict[str, Any]]], None
]


def event_seq(update: ViolationUpdate) -> int:
    tenths = max(0, round((update.ts - update.first_seen) * SEQ_PER_S))
    return tenths * 2 + (1 if update.event == "cleared" else 0)


@dataclass
class StreamPipeline:
    """Rules, evidence and event building for one stream.

    ``model`` serves every rule that ``rule_models`` (rule name -> model) does not name; an event
    carries the model of its rule, and each rule judges only the detections of its model.
    """

    stream: StreamConfig
    model: ModelInfo
    sink: EventSink
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    rule_models: Mapping[str, ModelInfo] = field(default_factory=dict)
    observer: FrameObserver | None = None
    engine: RuleEngine = field(init=False)
    zones: dict[str, Zone] = field(init=False)
    events_sent: int = 0
    samples: int = 0
    last_ts: float | None = None
    _frames: dict[float, npt.NDArray[np.uint8]] = field(default_factory=dict, init=False)
    _size: tuple[int, int] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _jpeg: dict[float, bytes] = field(default_factory=dict, init=False, repr=False)  # held frames, encoded

    def __post_init__(self) -> None:
        zones = [
            Zone.from_config(
                {"id": z.id, "polygon": z.polygon, "rules": list(z.rules), "params": dict(z.params)}
            )
            for z in self.stream.zones
        ]
        self.zones = {z.id: z for z in zones}
        sources = {rule: info.id for rule, info in self.rule_models.items()}
        self.engine = RuleEngine(
            zones,
            self.stream.effective_rules,
            label_map(dict(self.model.rule_labels)),
            rule_sources=sources or None,
        )

    def model_for(self, rule: str) -> ModelInfo:
        """The model that serves ``rule`` on this stream."""
        return self.rule_models.get(rule, self.model)

    def held_frames(self) -> Mapping[float, npt.NDArray[np.uint8]]:
        """The clean frames kept for evidence (the best frame of each active violation), by timestamp."""
        return MappingProxyType(self._frames)

    def min_score(self, rule: str) -> float:
        """The score a detection needs for ``rule`` on this stream (its stream-level parameters);
        ``UNKNOWN_RULE_MIN_SCORE`` for a name that is no rule."""
        params = self.stream.effective_rules.of(rule)
        return UNKNOWN_RULE_MIN_SCORE if params is None else float(params.min_score)

    # ------------------------------------------------------------------ per sample
    def process(self, ts: float, image: npt.NDArray[np.uint8], dets: Detections) -> list[dict[str, Any]]:
        """Feed one sampled frame and its detections; returns the events sent to the sink."""
        with self._lock:
            return self._process(ts, image, dets)

    def _process(self, ts: float, image: npt.NDArray[np.uint8], dets: Detections) -> list[dict[str, Any]]:
        h, w = image.shape[:2]
        self._size = (w, h)
        self.samples += 1
        self.last_ts = ts
        self._frames[ts] = image
        updates = self.engine.step(dets, ts, (w, h))
        out = [self._emit(u, image) for u in updates]
        if self.observer is not None:
            self.observer(self, ts, image, dets, out)
        keep = self.engine.evidence_frames() | {ts}
        for old in [t for t in self._frames if t not in keep]:
            del self._frames[old]
        return out

    # ------------------------------------------------------------------ moving to another worker
    def checkpoint(self) -> bytes:
        """What another worker needs to go on with this stream where it stands: the tracker and rule state
        (so an active violation keeps its ``violation_id``), the last frame time and the clean frames held
        as evidence (JPEG). Pickled: it only travels between this deployment's own workers."""
        with self._lock:
            state = {
                "engine": self.engine,
                "last_ts": self.last_ts,
                "size": self._size,
                "frames": {t: self._held_jpeg(t, f) for t, f in self._frames.items()},
            }
            return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _held_jpeg(self, ts: float, frame: npt.NDArray[np.uint8]) -> bytes:
        """A held frame as JPEG, encoded once however many checkpoints carry it."""
        for old in [t for t in self._jpeg if t not in self._frames]:
            del self._jpeg[old]
        if ts not in self._jpeg:
            self._jpeg[ts] = encode_jpeg(frame, JPEG_HELD, max_bytes=1 << 23)
        return self._jpeg[ts]

    def restore(self, blob: bytes) -> float | None:
        """Go on from a :meth:`checkpoint` of this stream (taken by any worker); returns its last frame
        time: frames up to it were judged already."""
        state = pickle.loads(blob)  # written by checkpoint() of this deployment's own workers
        engine: RuleEngine = state["engine"]
        with self._lock:
            engine.label_of = self.engine.label_of
            engine.rule_sources = self.engine.rule_sources
            self.engine = engine
            self.last_ts = state["last_ts"]
            self._size = state["size"]
            self._frames = {t: decode_jpeg(b) for t, b in state["frames"].items()}
        return self.last_ts

    def finish(self) -> list[dict[str, Any]]:
        """End of input (a replay ending, a shutdown): report, but do not clear, what is active."""
        if self.last_ts is None:
            return []
        return [self._emit(u, None) for u in self.engine.flush(self.last_ts)]

    # ------------------------------------------------------------------ events
    def _emit(self, u: ViolationUpdate, current: npt.NDArray[np.uint8] | None) -> dict[str, Any]:
        vid = violation_id(self.stream.id, u.violation_key, u.first_seen)
        evidence = self._evidence(u, current) if u.event == "opened" else None
        w, h = self._size or (1, 1)
        x1, y1, x2, y2 = u.bbox
        bbox_norm = [
            min(max(x1 / w, 0.0), 1.0),
            min(max(y1 / h, 0.0), 1.0),
            min(max(x2 / w, 0.0), 1.0),
            min(max(y2 / h, 0.0), 1.0),
        ]
        loc = self.stream.location
        payload = build_event(
            u.event,
            violation_id=vid,
            seq=event_seq(u),
            rule=u.rule,
            label=u.label,
            stream=self.stream.id,
            zone=u.zone,
            bbox_norm=bbox_norm,
            score_median=min(max(u.score_median, 0.0), 1.0),
            score_top=min(max(u.score_top, 0.0), 1.0),
            first_seen=u.first_seen,
            last_seen=u.last_seen,
            evidence=evidence,
            model=self.model_for(u.rule).as_event(),
            location={
                "lat": loc.lat,
                "lon": loc.lon,
                "address": loc.address,
                "grid": loc.grid,
                "road": loc.road,
            },
        )
        self.sink.publish_event(payload)
        self.events_sent += 1
        log.info(
            "%s %s %s zone=%s %s", self.stream.id, u.event, u.rule, u.zone, vid,
            extra={"stream": self.stream.id, "violation_id": vid},
        )  # fmt: skip
        return payload

    def _evidence(self, u: ViolationUpdate, current: npt.NDArray[np.uint8] | None) -> Evidence | None:
        """The best frame of the violation so far, with its box and zone drawn."""
        frame = self._frames.get(u.best_frame_ts, current)
        if frame is None:
            return None
        zone = self.zones.get(u.zone)
        return render_evidence(
            frame,
            u.best_bbox,
            zone.polygon if zone is not None else None,
            f"{u.rule} {u.label} {u.score_median:.2f}",
            self.evidence.max_width,
            self.evidence.jpeg_quality,
            captured_at=u.best_frame_ts,
        )
