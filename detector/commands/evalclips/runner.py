"""Running resolved clips: a video through the replay pipeline, a still through each rule's model.

A video goes through :func:`detector.commands.replay.replay` with the pipeline and the models of its stream,
exactly as ``citywatch replay`` runs it; its ``opened`` events are the cases judged. A still goes
through every model its rules need (:meth:`~detector.inference.rule_models.StreamModels.merge`); each rule
sees only its own model's detections of the labels or classes it watches.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from detector.commands.evalclips.judge import Case, Seen, Verdict, cases_from_events, judge_still, judge_video
from detector.commands.evalclips.resolve import ClipRun, EvalInputError
from detector.commands.evalclips.spec import LABEL_RULE, RULE_LABEL, StillClip, VideoClip
from detector.commands.replay import replay
from detector.inference.zoom import ZoomBackend
from detector.rules.base import class_mask
from detector.sources import SourceError
from detector.sources.pyav import FileSource

GREY = (160, 160, 160)
COLOURS = {"false": (0, 0, 255), "allowed": (0, 200, 255), "expected": (0, 200, 0)}


@dataclass
class ClipResult:
    name: str
    kind: str
    file: str
    duration_s: float | None
    verdict: Verdict
    models: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "file": self.file,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 1),
            "opened": dict(sorted(self.verdict.opened.items())),
            "false": self.verdict.false,
            "missed": self.verdict.missed,
            "models": self.models,
            "passed": self.verdict.passed,
        }
        if self.kind == "image":
            out["detections"] = self.verdict.detections
        return out


class _NullSink:
    """The pipeline's events are taken from the replay result; nothing is sent anywhere."""

    def publish_event(self, payload: Mapping[str, Any]) -> int:
        return 0

    def publish_state(self, stream_id: str, state: Mapping[str, Any]) -> None:
        return None

    def flush(self, timeout: float) -> bool:
        return True

    def stop(self) -> None:
        return None


def run_video(run: ClipRun, clip: VideoClip, evidence_dir: Path | None, progress: bool) -> ClipResult:
    """Replay the clip's video through its stream's pipeline and judge the cases it opened."""
    pipeline = run.models.pipeline(run.stream, _NullSink(), run.config.evidence)
    batch = max(run.models.batches.values(), default=4)
    try:
        result = replay(run.file, run.stream, pipeline, run.models, batch=batch, progress=progress)
        duration = FileSource.probe(run.file).duration
    except SourceError as err:
        raise EvalInputError(f"clip {run.name}: {err}") from None
    start = run.stream.start_time.timestamp() if run.stream.start_time else 0.0
    cases = cases_from_events(result.events, start)
    if evidence_dir is not None:
        cases = _save_evidence(cases, result.events, evidence_dir / run.name)
    verdict = judge_video(clip, cases)
    return ClipResult(
        run.name, "video", str(run.file), duration or result.video_seconds, verdict, _names(run)
    )


def _save_evidence(cases: list[Case], events: list[dict[str, Any]], folder: Path) -> list[Case]:
    """Write each case's evidence JPEG (from its ``opened`` event) into ``folder``."""
    jpegs = {
        e["violation_id"]: (e.get("evidence") or {}).get("jpeg") for e in events if e["event"] == "opened"
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n, case in enumerate(sorted(cases, key=lambda c: (c.opened_at_s, c.rule, c.bbox)), 1):
        data = jpegs.get(case.violation_id)
        if not data:
            out.append(case)
            continue
        path = folder / f"{n:02d}-{case.rule}-{case.opened_at_s:05.1f}s.jpg"
        path.write_bytes(base64.b64decode(data))
        out.append(replace(case, evidence=str(path)))
    return out


def run_still(run: ClipRun, clip: StillClip, evidence_dir: Path | None) -> ClipResult:
    """Run the still through the model of each rule and judge what each rule would see."""
    read = cv2.imread(str(run.file), cv2.IMREAD_COLOR)
    if read is None:
        raise EvalInputError(f"clip {run.name}: {run.file}: not a readable image")
    image: npt.NDArray[np.uint8] = np.ascontiguousarray(read, dtype=np.uint8)
    h, w = image.shape[:2]
    rules = run.stream.effective_rules
    plan = run.models.plan(run.stream)
    dets = plan.merge({mid: run.models.models[mid].backend.infer([image])[0] for mid in plan.needed})
    seen: list[Seen] = []
    for rule, mid in plan.rules.items():
        mine = class_mask(dets, getattr(rules, rule).classes) & (dets.data["model"] == mid)
        for i in np.flatnonzero(mine):
            x1, y1, x2, y2 = (float(v) for v in dets.xyxy[i])
            box = (x1 / w, y1 / h, x2 / w, y2 / h)
            seen.append(Seen(RULE_LABEL[rule], str(dets.class_name[i]), float(dets.confidence[i]), box))
    seen.sort(key=lambda s: (s.label, -s.score))
    min_score = {label: getattr(rules, rule).min_score for label, rule in LABEL_RULE.items()}
    verdict = judge_still(clip, seen, min_score, rules.unclean_road.min_area)
    if evidence_dir is not None:
        _draw_still(image, verdict, evidence_dir / f"{run.name}.jpg")
    return ClipResult(run.name, "image", str(run.file), None, verdict, _names(run))


def _draw_still(image: npt.NDArray[np.uint8], verdict: Verdict, path: Path) -> None:
    """The still with every judged detection boxed: red false, amber allowed, green expected."""
    out = image.copy()
    h, w = out.shape[:2]
    for d in verdict.detections:
        status = str(d["status"]).split(" ")[0]
        colour = COLOURS.get(status, GREY)
        x1, y1, x2, y2 = (round(v * s) for v, s in zip(d["bbox"], (w, h, w, h), strict=True))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        text = f"{d['label']} {d['score']:.2f} {status}"
        cv2.putText(
            out, text, (x1 + 2, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), out, [cv2.IMWRITE_JPEG_QUALITY, 85])


def _names(run: ClipRun) -> dict[str, str]:
    """Rule -> the model that served it: ``name@version (backend precision)``, and what confirmed it where
    a zoomed pass did (``, confirmed at 960 px by yolov8n-coco-far@1.0.0``)."""
    plan = run.models.plan(run.stream)
    out = {}
    for rule, mid in sorted(plan.rules.items()):
        m = run.models.models[mid]
        out[rule] = f"{m.info.name}@{m.info.version} ({m.kind} {m.precision})"
        if isinstance(m.backend, ZoomBackend):
            out[rule] += f", confirmed at {m.backend.zoomed.imgsz} px by {m.backend.zoomed_by}"
    return out
