"""The ``collect`` section of ``streams.yaml``: which frames the detector keeps for labelling.

Kept apart from ``detector.config.schema`` (which embeds it) so the schema file stays small. The detector
keeps a bounded, per-stream sample of clean frames (``detector.collect``): the frame of every opened case,
frames with a detection near a rule's threshold, frames two models disagree on, and a small uniform sample
per camera and hour. Off by default (``enabled: false``), so tests and try-outs never fill a disk; the
shipped ``streams.yaml`` turns it on with its budget written out. A stream's own ``collect: false`` keeps
nothing of that stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from detector.config.errors import ConfigProblem, Problem


class NearThresholdConfig(BaseModel):
    """Keep frames with a detection whose score lies just under (or just over) its rule's ``min_score``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false keeps no frame for being near a threshold.")
    below: float = Field(
        default=0.15,
        ge=0.0,
        le=1.0,
        description="A detection scoring in [min_score - below, min_score) of a rule that judges its label "
        "keeps the frame (what the rule just missed).",
    )
    above: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="... and one in [min_score, min_score + above) too (what the rule only just took).",
    )

    @model_validator(mode="before")
    @classmethod
    def _bool_shorthand(cls, data: Any) -> Any:
        """``near_threshold: false`` / ``true`` switch it with the default band."""
        return {"enabled": data} if isinstance(data, bool) else data


class CollectConfig(BaseModel):
    """Frames worth labelling, kept on disk within a budget (see ``detector.collect``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False, description="Keep frames for labelling; off unless the file turns it on."
    )
    dir: Path = Field(
        default=Path("var/collect"),
        description="The collection: <dir>/<stream>/<YYYY-MM-DD>/<frame_id>.jpg + .json sidecar.",
    )
    budget_mb: int = Field(
        default=2048,
        ge=1,
        le=10_000_000,
        description="Most MiB the collection may hold; over it the oldest unpinned frames are deleted first "
        "(reviewed or labelled frames are pinned until reviewed_max_age_days).",
    )
    max_age_days: float = Field(
        default=30.0, gt=0.0, le=3650.0, description="Unpinned frames older than this are deleted."
    )
    reviewed_max_age_days: float = Field(
        default=365.0,
        gt=0.0,
        le=36500.0,
        description="Reviewed (desk verdict) or labelled frames are kept this long, over budget pressure.",
    )
    per_stream_per_hour: int = Field(
        default=60,
        ge=0,
        le=100_000,
        description="Most frames kept per stream and hour of frame time, every reason but case frames "
        "(checked before any JPEG is encoded).",
    )
    uniform_per_hour: int = Field(
        default=2,
        ge=0,
        le=3600,
        description="A uniform sample: the hour is cut into this many equal slots and the first sample of "
        "each slot is kept (day and night, every camera); 0 keeps none.",
    )
    near_threshold: NearThresholdConfig = Field(
        default_factory=lambda: NearThresholdConfig(),
        description="Frames with a detection near a rule's min_score.",
    )
    case_frames: bool = Field(
        default=True,
        description="Keep the clean frame of every opened violation (its violation_id in the sidecar), so a "
        "desk verdict pulled by `citywatch collect sync` labels it.",
    )
    disagreement: bool = Field(
        default=True,
        description="With two models emitting one label on a stream: keep a frame where one sees the label "
        "at its rule's min_score and the other has no box there (IoU >= disagreement_iou) scoring at least "
        "min_score - near_threshold.below.",
    )
    disagreement_iou: float = Field(
        default=0.3, gt=0.0, le=1.0, description="IoU at which two models' boxes count as the same object."
    )
    queue: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Frames waiting for the writer thread; when it is full a sample is dropped and counted "
        "(the stream never waits for the disk).",
    )

    @model_validator(mode="after")
    def _check(self) -> CollectConfig:
        problems: list[Problem] = []
        if self.reviewed_max_age_days < self.max_age_days:
            problems.append(
                Problem(
                    ("reviewed_max_age_days",),
                    f"reviewed_max_age_days {self.reviewed_max_age_days:g} is shorter than max_age_days "
                    f"{self.max_age_days:g}: reviewed frames would go before unreviewed ones",
                    "make reviewed_max_age_days at least max_age_days",
                )
            )
        if self.uniform_per_hour > self.per_stream_per_hour:
            problems.append(
                Problem(
                    ("uniform_per_hour",),
                    f"uniform_per_hour {self.uniform_per_hour} is more than per_stream_per_hour "
                    f"{self.per_stream_per_hour}, the cap it counts against",
                    "lower uniform_per_hour or raise per_stream_per_hour",
                )
            )
        if problems:
            raise ConfigProblem(problems)
        return self

    def describe(self, streams_off: int = 0) -> str:
        """``collect: on (var/collect, 2048 MB, 30/365 days, 1 stream off)`` for ``config check``."""
        if not self.enabled:
            return "collect: off"
        off = f", {streams_off} stream{'' if streams_off == 1 else 's'} off" if streams_off else ""
        return (
            f"collect: on ({self.dir}, {self.budget_mb} MB, "
            f"{self.max_age_days:g}/{self.reviewed_max_age_days:g} days{off})"
        )
