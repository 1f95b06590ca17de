"""Camera re-check (反馈核查), the detector's side of ``detector/contracts/recheck.v1.schema.json``.

The API publishes ``<prefix>/commands/recheck/{stream}``; the detector running that stream
looks at the next sampled frame of it, decides whether an object of the case's rule label is
still in the zone where the case's box was, and answers on ``<prefix>/recheck-results/{stream}``
with a fresh annotated frame.

Whoever may publish on the commands topic can ask for a live frame, so a command is taken only in
the agreed shape (``detector/contracts/recheck.v1.schema.json``, ``$defs/command``: no extra
key, at most 64 KiB, not retained), for the stream named by its topic, and with ``reply_topic``
equal to the agreed answer topic: the detector never answers anywhere else. Anything else is
logged with the reason and dropped (counted in ``refused``).

``present``: a detection of the label, score ≥ the rule's ``min_score``, bottom-centre in the
zone (when the zone is known) and overlapping the case box (IoU ≥ ``min_iou``, when the box is
known). Otherwise ``absent``.

With several models (``detector.inference.rule_models``) only the detections of the model that serves
the case's rule on that stream count, and the answer names that model.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections, box_iou
from detector.contracts.errors import DetectorError
from detector.contracts.recheck import (
    COMMAND_SCHEMA,
    answer_topic,
    build_result,
    command_topic,
    command_validator,
)
from detector.delivery.mqtt import Communicator, ReceivedMessage
from detector.evidence import render_evidence
from detector.pipeline import StreamPipeline

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64 * 1024  # a command is ~0.5 KiB
MIN_IOU = 0.3
_MAX_REASON = 300


def _short(text: str, limit: int = _MAX_REASON) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


class RecheckCommandError(DetectorError, ValueError):
    """A re-check command that cannot be acted on; the message says why."""


@dataclass(frozen=True)
class RecheckCommand:
    request_id: str
    case_id: int
    stream: str
    zone: str | None
    bbox: tuple[float, float, float, float] | None
    rule: str
    label: str
    reply_topic: str

    @classmethod
    def parse(cls, payload: bytes, *, topic: str, prefix: str) -> RecheckCommand:
        """Check a command received on ``topic``; every refusal is a ``RecheckCommandError``
        with the reason."""
        if len(payload) > MAX_COMMAND_BYTES:
            raise RecheckCommandError(f"{len(payload)} bytes, over the {MAX_COMMAND_BYTES} byte limit")
        try:
            data = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            raise RecheckCommandError(f"not UTF-8 JSON: {_short(str(err), 120)}") from err
        if not isinstance(data, dict) or data.get("schema") != COMMAND_SCHEMA:
            raise RecheckCommandError(f"not a {COMMAND_SCHEMA} command")
        validator = command_validator()
        errors = sorted(validator.iter_errors(data), key=lambda e: (e.json_path, e.message))
        if errors:
            parts = [f"{e.json_path}: {_short(e.message, 120)}" for e in errors[:3]]
            raise RecheckCommandError("off the contract: " + "; ".join(parts))
        stream = str(data["stream"])
        own_topic = command_topic(prefix, stream)
        if topic != own_topic:
            raise RecheckCommandError(f"a command for stream {stream!r} on {topic!r}, not on {own_topic!r}")
        agreed = answer_topic(prefix, stream)
        if data["reply_topic"] != agreed:
            raise RecheckCommandError(
                f"reply_topic {_short(str(data['reply_topic']), 120)!r} is not the agreed {agreed!r}"
            )
        bbox = data["bbox"]
        return cls(
            request_id=str(data["request_id"]),
            case_id=int(data["case_id"]),
            stream=stream,
            zone=None if data.get("zone") is None else str(data["zone"]),
            bbox=None if bbox is None else (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
            rule=str(data["rule"]),
            label=str(data["label"]),
            reply_topic=agreed,
        )


def judge(
    cmd: RecheckCommand, pipe: StreamPipeline, dets: Detections, frame_size: tuple[int, int]
) -> tuple[bool, float | None, tuple[float, float, float, float] | None]:
    """Whether the case's object is still there: (present, score, normalised box)."""
    w, h = frame_size
    dets = pipe.engine.seen_by(cmd.rule, dets)  # the model that serves the case's rule
    if len(dets) == 0:
        return False, None, None
    given = dets.data.get("label")
    labels = (
        np.asarray(given, dtype=object)
        if given is not None
        else np.array([pipe.engine.label_of(str(n)) for n in dets.class_name], dtype=object)
    )
    keep = labels == cmd.label
    keep &= dets.confidence >= pipe.min_score(cmd.rule)
    zone = pipe.zones.get(cmd.zone) if cmd.zone else None
    if zone is not None:
        keep &= zone.contains_boxes(dets.xyxy, (w, h))
    if cmd.bbox is not None:
        box = np.array([[cmd.bbox[0] * w, cmd.bbox[1] * h, cmd.bbox[2] * w, cmd.bbox[3] * h]], np.float32)
        keep &= box_iou(dets.xyxy, box)[:, 0] >= MIN_IOU
    if not keep.any():
        return False, None, None
    i = int(np.argmax(np.where(keep, dets.confidence, -1.0)))
    x1, y1, x2, y2 = (float(v) for v in dets.xyxy[i])
    return True, float(dets.confidence[i]), (x1 / w, y1 / h, x2 / w, y2 / h)


class Rechecker:
    """Subscribes to the re-check commands of the streams this worker runs and answers them."""

    def __init__(
        self,
        comm: Communicator,
        pipelines: dict[str, StreamPipeline],
        prefix: str,
        worker: str,
    ) -> None:
        self.comm = comm
        self.pipelines = pipelines
        self.prefix = prefix
        self.worker = worker
        self._pending: dict[str, list[RecheckCommand]] = {}
        self._lock = threading.Lock()
        self.answered = 0
        self.refused = 0
        self.last_refusal: str | None = None

    def start(self) -> Rechecker:
        for stream_id in self.pipelines:
            self.watch(stream_id)
        return self

    def watch(self, stream_id: str) -> None:
        """Answer the commands of ``stream_id`` too (a stream added while running); a removed stream's
        commands are logged and skipped, as for any stream this worker does not run."""
        self.comm.subscribe(command_topic(self.prefix, stream_id), self._on_command, qos=1)

    def _refuse(self, topic: str, reason: str) -> None:
        with self._lock:
            self.refused += 1
            self.last_refusal = reason
        log.warning("re-check command on %r refused: %s", _short(topic, 200), reason)

    def _on_command(self, msg: ReceivedMessage) -> None:
        if msg.retain:  # a retained command would run again at every subscribe
            self._refuse(msg.topic, "retained: re-check commands are never retained")
            return
        try:
            cmd = RecheckCommand.parse(msg.payload, topic=msg.topic, prefix=self.prefix)
        except RecheckCommandError as err:
            self._refuse(msg.topic, str(err))
            return
        if cmd.stream not in self.pipelines:
            log.warning(
                "re-check %s for stream %s, which this worker does not run", cmd.request_id, cmd.stream
            )
            return
        with self._lock:
            queue = self._pending.setdefault(cmd.stream, [])
            if all(c.request_id != cmd.request_id for c in queue):
                queue.append(cmd)
        log.info(
            "re-check %s of case %d queued for the next frame of %s", cmd.request_id, cmd.case_id, cmd.stream
        )

    def on_frame(self, stream_id: str, ts: float, image: npt.NDArray[np.uint8], dets: Detections) -> None:
        """Called with every processed frame; answers the stream's waiting commands with it."""
        with self._lock:
            todo = self._pending.pop(stream_id, [])
        for cmd in todo:
            self._answer(cmd, self.pipelines[stream_id], ts, image, dets)

    def _answer(
        self,
        cmd: RecheckCommand,
        pipe: StreamPipeline,
        ts: float,
        image: npt.NDArray[np.uint8],
        dets: Detections,
    ) -> None:
        h, w = image.shape[:2]
        if pipe.rule_models and cmd.rule not in pipe.rule_models:
            log.warning(
                "re-check %s: no zone of %s enforces %s now; judged on every model's %s detections",
                cmd.request_id, cmd.stream, cmd.rule, cmd.label,
            )  # fmt: skip
        present, score, box = judge(cmd, pipe, dets, (w, h))
        model = pipe.model_for(cmd.rule)
        zone = pipe.zones.get(cmd.zone) if cmd.zone else None
        draw = None if box is None else [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
        ev = render_evidence(
            image,
            draw,
            zone.polygon if zone is not None else None,
            f"recheck {cmd.rule}: {'present' if present else 'absent'}",
            pipe.evidence.max_width,
            pipe.evidence.jpeg_quality,
            captured_at=ts,
        )
        answer = build_result(
            request_id=cmd.request_id,
            case_id=cmd.case_id,
            stream=cmd.stream,
            present=present,
            score=score,
            bbox=box,
            jpeg=ev.jpeg,
            sha256=ev.sha256,
            captured_at=ts,
            width=ev.width,
            height=ev.height,
            checked_at=datetime.now(UTC),
            detector=f"{self.worker}/{model.name}@{model.version}",
        )
        self.comm.publish(answer_topic(self.prefix, cmd.stream), json.dumps(answer).encode(), qos=1)
        self.answered += 1
        log.info("re-check %s of case %d: %s", cmd.request_id, cmd.case_id, answer["result"])


OnFrame = Callable[[str, float, npt.NDArray[np.uint8], Detections], None]
