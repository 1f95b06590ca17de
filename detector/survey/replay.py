"""A detector spec that replays known boxes per frame: the survey's geometry without a model.

The file is JSON ``{"frames": [{"index": i, "boxes": [{"cls": "structure", "box": [x1, y1, x2, y2]}]}]}``
(the ``truth.json`` of ``training.synth.flight``, or boxes hand-labelled on a real flight). Used to check
geo-referencing, de-duplication and change detection against known positions. Picklable: Ray actors
build it like a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.contracts.detections import Detections
from detector.survey.errors import SurveyInputError
from detector.survey.observe import FrameDetector, Image
from detector.survey.plan import PlannedFrame

CLASSES = ("vehicle", "stall", "litter", "structure")


@dataclass(frozen=True)
class BoxReplaySpec:
    path: str
    conf: float = 0.9

    def build(self) -> FrameDetector:
        try:
            frames = json.loads(Path(self.path).read_text(encoding="utf-8"))["frames"]
            by_index = {int(f["index"]): f["boxes"] for f in frames}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SurveyInputError(f"{self.path}: not a box file with frames[].index/boxes ({exc})") from exc
        names = list(CLASSES) + sorted({b["cls"] for bs in by_index.values() for b in bs} - set(CLASSES))

        def detect(image: Image, frame: PlannedFrame) -> Detections:
            boxes = by_index.get(frame.index, [])
            if not boxes:
                return Detections.empty()
            return Detections.from_arrays(
                [b["box"] for b in boxes],
                [self.conf] * len(boxes),
                [names.index(b["cls"]) for b in boxes],
                names,
            )

        return detect

    def describe(self) -> dict[str, Any]:
        return {"model": "box-replay", "version": "0", "sha256": None, "boxes": Path(self.path).name}
