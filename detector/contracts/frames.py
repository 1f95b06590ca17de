"""The sidecar of a collected frame: :class:`FrameRecord`, schema version 1, the one format the detector
(``detector/collect`` writes it, ``citywatch collect sync`` adds the desk's verdict) and ``training``
(``citywatch collect export|import``, ``citywatch dataset build``) read and write.

A collection is a folder: ``<dir>/<stream_id>/<YYYY-MM-DD>/<frame_id>.jpg`` (the clean frame, no drawing,
JPEG quality 95) and ``<frame_id>.json`` beside it. ``frame_id`` is ``<stream_id>-<UTC
yyyymmddTHHMMSSfff>-<reason>``: unique and sortable (a second frame of the same instant and reason gets
``-2``, ``-3`` ...). Boxes are pixels of the stored JPEG. ``review`` is the desk's verdict pulled by
``citywatch collect sync`` (with the case's own label and box, so a reader knows which prediction the
verdict is about); ``labels`` are human labels after an import (``[]``: labelled, nothing there).
Pydantic only: nothing of the pipeline, so ``training`` and the API may import it (``lint-imports``).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from detector.contracts.errors import DetectorError

SCHEMA_VERSION: Literal[1] = 1
JPEG_QUALITY = 95

Reason = Literal["near_threshold", "uniform", "case", "disagreement", "rejected", "corrected", "confirmed"]
Verdict = Literal["rejected", "confirmed", "corrected"]
#: reasons a frame is kept for by the detector (the others come from a desk verdict)
KEEP_REASONS: tuple[Reason, ...] = ("near_threshold", "uniform", "case", "disagreement")
VERDICTS: tuple[Verdict, ...] = ("rejected", "corrected", "confirmed")
XYXY = tuple[float, float, float, float]


class CollectError(DetectorError):
    """A collection file cannot be read or written; the message names the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Strict):
    name: str
    version: str
    sha256: str | None = None


class Prediction(_Strict):
    """One model detection on the stored frame, by its rule label."""

    label: str
    xyxy: XYXY
    score: float = Field(ge=0.0, le=1.0)
    model: str = Field(description="The loaded model that found it, e.g. citywatch-synth@1.2.0.")


class Review(_Strict):
    """The desk's verdict on the case opened on this frame."""

    verdict: Verdict
    case_id: int
    reason: str | None = None
    label: str | None = Field(default=None, description="corrected: the label the desk gave.")
    xyxy: XYXY | None = Field(default=None, description="corrected: the desk's box, pixels.")
    by: str | None = None
    at: str | None = None
    case_label: str | None = Field(default=None, description="The case's own label (the detection judged).")
    case_xyxy: XYXY | None = Field(
        default=None, description="The case's own box, pixels of this frame (the API's bbox x width, height)."
    )


class Label(_Strict):
    label: str
    xyxy: XYXY


class FrameRecord(_Strict):
    """The ``<frame_id>.json`` sidecar of one collected frame."""

    version: Literal[1] = SCHEMA_VERSION
    id: str = Field(min_length=1)
    stream: str = Field(min_length=1)
    captured_at: AwareDatetime
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    reasons: list[Reason] = Field(min_length=1)
    model: ModelRef | None = None
    predictions: list[Prediction] = Field(default_factory=list)
    violation_id: str | None = None
    review: Review | None = None
    labels: list[Label] | None = None
    labelled_by: str | None = None

    @field_validator("reasons")
    @classmethod
    def _unique(cls, value: list[Reason]) -> list[Reason]:
        return list(dict.fromkeys(value))

    @field_serializer("captured_at")
    def _iso(self, value: datetime) -> str:
        return iso_ms(value)

    @property
    def pinned(self) -> bool:
        """Reviewed or labelled: kept over budget pressure until ``reviewed_max_age_days``."""
        return self.review is not None or self.labels is not None

    @property
    def ts(self) -> float:
        return self.captured_at.timestamp()

    def with_review(self, review: Review) -> FrameRecord:
        """This record with ``review`` and its verdict (only the latest one) among the reasons."""
        reasons = [r for r in self.reasons if r not in VERDICTS] + [review.verdict]
        return self.model_copy(update={"review": review, "reasons": reasons})


def iso_ms(value: datetime | float) -> str:
    """``2026-06-01T02:00:00.000Z``."""
    dt = datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else value.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def utc_ms(ts: float) -> datetime:
    """Epoch seconds as an aware UTC datetime, cut to the millisecond (as ``frame_id`` and the sidecar)."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def frame_id(stream: str, ts: float, reason: str, n: int = 1) -> str:
    """``cam-01-20260601T020000123-uniform`` (``-2`` ... for the n-th of one instant and reason)."""
    dt = datetime.fromtimestamp(ts, UTC)
    stamp = dt.strftime("%Y%m%dT%H%M%S") + f"{dt.microsecond // 1000:03d}"
    return f"{stream}-{stamp}-{reason}" + (f"-{n}" if n > 1 else "")


def frame_dir(root: Path, stream: str, ts: float) -> Path:
    return root / stream / datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def read_record(path: Path) -> FrameRecord:
    """The sidecar at ``path``; :class:`CollectError` naming the file when it is unreadable."""
    try:
        return FrameRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as err:
        raise CollectError(f"{path}: not a readable collection sidecar: {err}") from err


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: Path, record: FrameRecord) -> None:
    body = json.dumps(record.model_dump(mode="json"), ensure_ascii=False, indent=1)
    write_atomic(path, body.encode("utf-8") + b"\n")


def sidecars(root: Path) -> list[Path]:
    """Every ``<stream>/<day>/<frame_id>.json`` under ``root``, sorted (oldest first per stream)."""
    return sorted(p for p in root.glob("*/*/*.json") if not p.name.startswith("."))
