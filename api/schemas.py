"""REST shapes (layered as in the FastAPI full-stack template)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from api.models import CaseStatus, Rule

MAX_PAGE_SIZE = 500
_ZONE_NOTE = "(ISO 8601; UTC when no zone is given)"


class CaseBase(BaseModel):
    violation_id: str
    rule: str
    label: str
    stream: str
    zone: str
    bbox: list[float] = Field(description="normalised xyxy in the frame")
    score_median: float
    score_top: float
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
    model_name: str
    model_version: str
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

    @computed_field  # type: ignore[prop-decorator]
    @property
    def evidence_url(self) -> str | None:
        return f"/cases/{self.id}/evidence" if self.evidence_sha256 else None


class CasesPublic(BaseModel):
    data: list[CasePublic]
    count: int = Field(description="number of cases matching the filters, over all pages")


class ErrorPublic(BaseModel):
    detail: str


class HealthPublic(BaseModel):
    status: str = Field(description="ok | degraded (ingest enabled but not connected) | error (database)")
    db: dict[str, Any]
    ingest: dict[str, Any]


class CaseFilters(BaseModel):
    """Query parameters of ``GET /cases``; an unknown parameter is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    status: CaseStatus | None = Field(default=None, description="lifecycle state")
    rule: Rule | None = Field(default=None, description="violation rule")
    stream: str | None = Field(default=None, min_length=1, max_length=64)
    grid: str | None = Field(default=None, min_length=1, max_length=64)
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
