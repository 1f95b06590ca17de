"""Camera re-check (反馈核查), the detector's side of ``api/contracts/recheck.v1.schema.json``.

The API publishes ``<prefix>/commands/recheck/{stream}``; the detector running that stream
looks at the next sampled frame of it, decides whether an object of the case's rule label is
still in the zone where the case's box was, and answers on the command's ``reply_topic`` with
a fresh annotated frame. ``present``: a detection of the label, score ≥ the rule's
``min_score``, bottom-centre in the zone (when the zone is known) and overlapping the case box
(IoU ≥ ``min_iou``, when the box is known). Otherwise ``absent``.

With several models (``detector.rule_models``) only the detections of the model that serves the case's
rule on that stream count, and the answer names that model.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.detections import Detections, box_iou
from detector.events import iso_timestamp
from detector.evidence import render_evidence
from detector.mqtt import Communicator, ReceivedMessage
from detector.pipeline import StreamPipeline

log = logging.getLogger(__name__)

COMMAND_SCHEMA = "citywatch.recheck/1"
RESULT_SCHEMA = "citywatch.recheck-result/1"
MIN_IOU = 0.3


class RecheckCommandError(ValueError):
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
    def parse(cls, payload: bytes) -> RecheckCommand:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            raise RecheckCommandError(f"not JSON: {err}") from err
        if not isinstance(data, dict) or data.get("schema") != COMMAND_SCHEMA:
            raise RecheckCommandError(f"not a {COMMAND_SCHEMA} command")
        try:
            bbox = data.get("bbox")
            return cls(
                request_id=str(data["request_id"]),
                case_id=int(data["case_id"]),
                stream=str(data["stream"]),
                zone=None if data.get("zone") is None else str(data["zone"]),
                bbox=None
                if bbox is None
                else (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
                rule=str(data["rule"]),
                label=str(data["label"]),
                reply_topic=str(data["reply_topic"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise RecheckCommandError(f"missing or bad field: {err}") from err


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
    params = getattr(pipe.stream.effective_rules, cmd.rule, None)
    min_score = float(getattr(params, "min_score", 0.25))
    keep &= dets.confidence >= min_score
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

    def start(self) -> Rechecker:
        for stream_id in self.pipelines:
            self.comm.subscribe(f"{self.prefix}/commands/recheck/{stream_id}", self._on_command, qos=1)
        return self

    def _on_command(self, msg: ReceivedMessage) -> None:
        try:
            cmd = RecheckCommand.parse(msg.payload)
        except RecheckCommandError as err:
            log.warning("re-check command on %s ignored: %s", msg.topic, err)
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
        answer: dict[str, Any] = {
            "schema": RESULT_SCHEMA,
            "request_id": cmd.request_id,
            "case_id": cmd.case_id,
            "stream": cmd.stream,
            "result": "present" if present else "absent",
            "score": None if score is None else round(min(max(score, 0.0), 1.0), 4),
            "bbox": None if box is None else [round(min(max(v, 0.0), 1.0), 5) for v in box],
            "evidence": {
                "jpeg": base64.b64encode(ev.jpeg).decode("ascii"),
                "sha256": ev.sha256,
                "captured_at": iso_timestamp(ts),
                "width": ev.width,
                "height": ev.height,
            },
            "checked_at": iso_timestamp(datetime.now(UTC)),
            "detector": f"{self.worker}/{model.name}@{model.version}"[:128],
        }
        self.comm.publish(cmd.reply_topic, json.dumps(answer).encode(), qos=1)
        self.answered += 1
        log.info("re-check %s of case %d: %s", cmd.request_id, cmd.case_id, answer["result"])


OnFrame = Callable[[str, float, npt.NDArray[np.uint8], Detections], None]
