"""REST shapes (layered as in the FastAPI full-stack template)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from api.core.text import line_input, text_input
from api.models import CaseSource, CaseStatus, RejectReason, Rule

MAX_PAGE_SIZE = 500
_ZONE_NOTE = "(ISO 8601; UTC when no zone is given)"
Text = Annotated[str, BeforeValidator(text_input)]
"""Multi-line free text (a note): control characters stripped, NFC, trimmed (api/core/text.py)."""
Line = Annotated[str, BeforeValidator(line_input)]
"""Single-line free text (a name, an address): as ``Text``, and line breaks and tabs become a space."""


class CaseBase(BaseModel):
    violation_id: str
    rule: str
    label: str
    stream: str | None = Field(description="camera stream; null for citizen reports")
    zone: str | None
    bbox: list[float] | None = Field(description="normalised xyxy in the frame; null for citizen reports")
    score_median: float | None
    score_top: float | None
    first_seen: datetime
    last_seen: datetime
    cleared_at: datetime | None = None
    violation_state: str = Field(description="open | cleared (what the detector last said)")
    status: str = Field(description="lifecycle state; the ingest creates 'candidate' cases")
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    grid: str | None = None
    road: str | None = None
    model_name: str | None
    model_version: str | None
    model_sha256: str | None = None


class CasePublic(CaseBase):
    model_config = ConfigDict(from_attributes=True)

    id: int
    evidence_sha256: str | None = None
    evidence_captured_at: datetime | None = None
    last_seq: int
    event_count: int
    created_at: datetime
    updated_at: datetime
    source: str = Field(description="camera | drone | citizen (随手拍) | hotline (12319)")
    description: str | None = None
    unit: str | None = Field(default=None, description="responsible unit (职责清单), set on dispatch")
    tier: str | None = Field(default=None, description="district | street | grid | road")
    street: str | None = Field(default=None, description="street office")
    deadline_at: datetime | None = Field(
        default=None, description="dispatch + working hours (+ postponements)"
    )
    dispatched_at: datetime | None = None
    disposed_at: datetime | None = None
    closed_at: datetime | None = None
    rework_count: int = 0
    postpone_count: int = 0
    return_count: int = 0
    duplicate_count: int = 0
    on_hold: bool = Field(default=False, description="挂账: set aside, not counted as due")
    resolution: str | None = Field(
        default=None, description="verified | duplicate | false_positive | out_of_scope | self_resolved"
    )
    merged_into_id: int | None = None
    recurrence_of_id: int | None = None
    after_evidence_sha256: str | None = Field(default=None, description="the re-check frame that closed it")
    corrected_label: str | None = Field(
        default=None, description="the desk's class (POST /cases/{id}/correct)"
    )
    corrected_bbox: list[float] | None = Field(
        default=None, description="the desk's box: xyxy in pixels of the evidence frame"
    )
    corrected_at: datetime | None = None
    corrected_by: str | None = None
    reviewed_at: datetime | None = Field(default=None, description="the latest register, reject or correct")
    reviewed_by: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def evidence_url(self) -> str | None:
        return f"/cases/{self.id}/evidence" if self.evidence_sha256 else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def after_evidence_url(self) -> str | None:
        return f"/cases/{self.id}/evidence?which=after" if self.after_evidence_sha256 else None

    disposed_late: bool = Field(default=False, description="the last disposal came after the deadline")
    overdue: bool = Field(default=False, description="超期: awaiting disposal past the deadline, not on hold")

    @model_validator(mode="after")
    def _compute_overdue(self, info: ValidationInfo) -> CasePublic:
        """``overdue`` as of ``context["now"]`` (the API's clock), else now."""
        now = (info.context or {}).get("now") or datetime.now(UTC)
        self.overdue = is_overdue(self.status, self.deadline_at, self.on_hold, now)
        return self

    @classmethod
    def of(cls, case: Any, now: datetime) -> CasePublic:
        return cls.model_validate(case, context={"now": now})


class CasesPublic(BaseModel):
    data: list[CasePublic]
    count: int = Field(
        description="number of cases matching the filters, over all pages; when more match than "
        "CITYWATCH_CASES_COUNT_LIMIT (10,000), that limit, with count_exact false"
    )
    count_exact: bool = Field(default=True, description="false: at least `count` cases match")


class ErrorPublic(BaseModel):
    detail: str


class ConflictPublic(BaseModel):
    detail: str
    action: str | None = None
    status: str | None = None
    allowed: list[str] = Field(default_factory=list, description="actions legal from the case's status")


AWAITING_DISPOSAL = (CaseStatus.dispatched.value, CaseStatus.in_progress.value)


def is_overdue(status: str, deadline: datetime | None, on_hold: bool, now: datetime) -> bool:
    """超期: awaiting disposal (dispatched / in progress), not on hold, past the deadline."""
    return status in AWAITING_DISPOSAL and deadline is not None and not on_hold and now > deadline


class HealthPublic(BaseModel):
    status: str = Field(description="ok | degraded (ingest enabled but not connected) | error (database)")
    db: dict[str, Any]
    ingest: dict[str, Any]


class AlivePublic(BaseModel):
    status: Literal["alive"] = Field(description="the process answers")


class ReadyPublic(BaseModel):
    ready: bool = Field(description="the database answers and, with MQTT ingest on, the broker is connected")
    reasons: list[str] = Field(description="why not ready (empty when ready)")


class CaseFilters(BaseModel):
    """Query parameters of ``GET /cases``; an unknown parameter is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    status: CaseStatus | None = Field(default=None, description="lifecycle state")
    rule: Rule | None = Field(default=None, description="violation rule")
    stream: str | None = Field(default=None, min_length=1, max_length=64)
    grid: str | None = Field(default=None, min_length=1, max_length=64)
    unit: str | None = Field(default=None, min_length=1, max_length=64, description="responsible unit")
    street: str | None = Field(default=None, min_length=1, max_length=64, description="street office")
    source: CaseSource | None = Field(default=None, description="camera | drone | citizen | hotline")
    overdue: bool | None = Field(
        default=None,
        description="only cases awaiting disposal past their deadline (true), or only the others",
    )
    disposed_late: bool | None = Field(default=None, description="only cases disposed after the deadline")
    since: datetime | None = Field(
        default=None, description="first_seen >= since (ISO 8601; UTC when no zone given)"
    )
    until: datetime | None = Field(
        default=None, description="first_seen < until (ISO 8601; UTC when no zone given)"
    )
    page: int = Field(default=1, ge=1, le=1_000_000)
    page_size: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE)

    @field_validator("since", "until")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _check_window(self) -> CaseFilters:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be later than since")
        return self


class CaseEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    case_id: int
    kind: str
    actor: str
    role: str
    from_status: str | None
    to_status: str | None
    at: datetime
    note: str | None
    seq: int | None
    evidence_sha256: str | None = None
    data: dict[str, Any] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def evidence_url(self) -> str | None:
        return f"/cases/{self.case_id}/events/{self.id}/evidence" if self.evidence_sha256 else None


class CaseEventsPublic(BaseModel):
    data: list[CaseEventPublic]
    count: int


class TransitionPublic(BaseModel):
    case: CasePublic
    events: list[CaseEventPublic] = Field(description="the events this request appended, in order")
    recheck_queued: bool = Field(description="a camera re-check command was queued")


_NOTE = Field(default=None, max_length=2000, description="free text for the history")


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text | None = _NOTE


class RequiredNoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text = Field(min_length=1, max_length=2000)


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: RejectReason
    note: Text | None = _NOTE


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: int = Field(ge=1, le=2**31 - 1, description="the open case this one duplicates")
    note: Text | None = _NOTE


class DispatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: Line | None = Field(default=None, min_length=1, max_length=64, description="default: the route's")
    note: Text | None = _NOTE


class PostponeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hours: float = Field(gt=0, le=2000, description="working hours added to the deadline")
    note: Text = Field(min_length=1, max_length=2000)


class RecheckPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    request_id: str
    case_id: int
    purpose: str
    stream: str
    status: str
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    answered_at: datetime | None
    result: str | None
    detector: str | None
    evidence_sha256: str | None
    checked_at: datetime | None


class RecheckAnswerPublic(BaseModel):
    outcome: str = Field(description="updated (applied) | duplicate | stale | dead_letter")
    case_id: int | None = None
    reason: str | None = None


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class PrincipalPublic(BaseModel):
    name: str
    role: str
    unit: str | None
    via: str
