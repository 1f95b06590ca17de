"""REST shapes of the data team's loop: ``POST /cases/{id}/correct`` and ``GET /reviews``.

The ``GET /reviews`` cursor: ``next_since`` is ``<reviewed_at, UTC ISO 8601 with microseconds>~<case
id>`` (``2026-03-02T01:00:00.000000Z~17``): passed back as ``since`` it continues after that case,
so cases judged at the same instant are never split between pages, repeated or skipped. ``since`` also
takes a plain ISO 8601 time (UTC when no zone is given): the reviews at or after it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas import MAX_PAGE_SIZE

DetectionLabel = Literal["vehicle", "vendor", "litter", "structure"]
"""The rule labels (``api.models.RULE_LABELS``): the classes a correction may give."""
Verdict = Literal["rejected", "corrected", "confirmed"]
MAX_CURSOR_ID = 2**31 - 1
MAX_PIXEL = 100_000

Pixel = Annotated[float, Field(strict=True, ge=0, le=MAX_PIXEL, allow_inf_nan=False)]


def format_cursor(at: datetime, case_id: int) -> str:
    """The ``next_since`` of a page that ends with ``case_id`` reviewed at ``at``."""
    return f"{at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}~{case_id}"


def parse_since(text: str) -> tuple[datetime, int]:
    """``since`` as (time, case id): reviews after that pair. A plain time is (time, 0), i.e. at or
    after it (case ids start at 1). Raises ``ValueError`` naming the two accepted forms."""
    when, sep, tail = text.strip().rpartition("~") if "~" in text else (text.strip(), "", "")
    try:
        if sep and not (tail.isascii() and tail.isdigit() and int(tail) <= MAX_CURSOR_ID):
            raise ValueError(f"case id {tail!r}")
        at = datetime.fromisoformat(when)
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(
            f"since {text[:80]!r} is neither an ISO 8601 time (2026-03-02T01:00:00Z) nor a next_since "
            f"cursor (TIME~CASE_ID): {exc}"
        ) from None
    return at, int(tail) if sep else 0


class CorrectIn(BaseModel):
    """The detection as the desk sees it: its class and its box on the case's evidence frame."""

    model_config = ConfigDict(extra="forbid")

    label: DetectionLabel = Field(description="the rule label of what is really there")
    bbox: list[Pixel] = Field(
        min_length=4,
        max_length=4,
        description="[x1, y1, x2, y2] in pixels of the case's evidence frame (x1 < x2, y1 < y2, "
        "within the frame when the API holds its image)",
    )

    @model_validator(mode="after")
    def _check_box(self) -> CorrectIn:
        x1, y1, x2, y2 = self.bbox
        if not x1 < x2:
            raise ValueError(f"bbox must have x1 < x2 (pixels [x1, y1, x2, y2]); got x1={x1}, x2={x2}")
        if not y1 < y2:
            raise ValueError(f"bbox must have y1 < y2 (pixels [x1, y1, x2, y2]); got y1={y1}, y2={y2}")
        return self


class ReviewQuery(BaseModel):
    """Query parameters of ``GET /reviews``; an unknown parameter is a 422."""

    model_config = ConfigDict(extra="forbid")

    since: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="the previous page's next_since (TIME~CASE_ID), or an ISO 8601 time (UTC when no "
        "zone is given): reviews at or after it; none: from the first",
    )
    limit: int = Field(default=100, ge=1, le=MAX_PAGE_SIZE, description="items per page")

    @field_validator("since")
    @classmethod
    def _check_since(cls, value: str | None) -> str | None:
        if value is not None:
            parse_since(value)
        return value

    def cursor(self) -> tuple[datetime, int] | None:
        return parse_since(self.since) if self.since is not None else None


class ReviewModelPublic(BaseModel):
    name: str | None
    version: str | None
    sha256: str | None


class ReviewPublic(BaseModel):
    case_id: int
    violation_id: str
    stream: str | None
    rule: str
    label: str = Field(description="the detector's label")
    bbox: list[float] | None = Field(description="the detector's box: normalised xyxy in the frame")
    verdict: Verdict = Field(
        description="rejected (the case was rejected; see reason), else corrected (the desk corrected "
        "the box or class), else confirmed (registered or later)"
    )
    reason: str | None = Field(
        description="why it was rejected: false_positive | out_of_scope | self_resolved"
    )
    corrected_label: str | None
    corrected_bbox: list[float] | None = Field(description="xyxy in pixels of the evidence frame")
    model: ReviewModelPublic = Field(description="the model whose detection opened the case")
    reviewed_at: datetime = Field(description="the latest register, reject or correct")
    reviewed_by: str | None = Field(description="who took that decision (role:name)")


class ReviewsPublic(BaseModel):
    items: list[ReviewPublic] = Field(description="oldest review first, by (reviewed_at, case_id)")
    next_since: str | None = Field(
        description="pass back as since for the next page: the last item's (reviewed_at~case_id); "
        "when the page is empty, the since given as it was given (null without one). A case judged "
        "again comes again."
    )
