"""Database models (SQLAlchemy 2.0, typed).

``Case`` is one violation (one ``violation_id``) or one citizen report; ``CaseEvent`` is its
append-only history (every lifecycle change: actor, role, from, to, time, note, evidence);
``RecheckRequest`` is the durable outbox of camera re-checks; ``DeadLetter`` keeps every message
the ingest could not turn into a case, with the reason.
Times are stored in UTC and always come back timezone-aware.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024
"""Bytes of a dead-lettered payload that are kept (``payload_size`` has the full size)."""


class CaseStatus(enum.StrEnum):
    """Lifecycle states of DESIGN.md; the ingest only ever creates ``candidate`` cases."""

    candidate = "candidate"
    registered = "registered"
    dispatched = "dispatched"
    in_progress = "in_progress"
    disposed = "disposed"
    verifying = "verifying"
    closed = "closed"
    rejected = "rejected"
    merged = "merged"


ENDED_STATUSES = frozenset({CaseStatus.closed, CaseStatus.rejected, CaseStatus.merged})
OPEN_STATUSES = frozenset(
    {
        CaseStatus.registered,
        CaseStatus.dispatched,
        CaseStatus.in_progress,
        CaseStatus.disposed,
        CaseStatus.verifying,
    }
)
"""Confirmed and not ended: the cases a new duplicate is merged into."""


class CaseSource(enum.StrEnum):
    camera = "camera"
    drone = "drone"
    citizen = "citizen"  # 随手拍
    hotline = "hotline"  # 12319


class RejectReason(enum.StrEnum):
    false_positive = "false_positive"
    out_of_scope = "out_of_scope"
    self_resolved = "self_resolved"


class ViolationState(enum.StrEnum):
    open = "open"
    cleared = "cleared"


class Rule(enum.StrEnum):
    illegal_parking = "illegal_parking"
    street_vending = "street_vending"
    illegal_structure = "illegal_structure"
    unclean_road = "unclean_road"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (no native zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; attach a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


AWAITING_PREDICATE = "status IN ('dispatched', 'in_progress') AND on_hold = false"
LATE_PREDICATE = "disposed_late = true"

RULE_LABELS = {
    Rule.illegal_parking: "vehicle",
    Rule.street_vending: "vendor",
    Rule.illegal_structure: "structure",
    Rule.unclean_road: "litter",
}


class Case(Base):
    """Camera cases come from the ingest; citizen reports have no stream, zone, box, score or model."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    violation_id: Mapped[str] = mapped_column(String(32), unique=True)
    rule: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(32))
    stream: Mapped[str | None] = mapped_column(String(64))
    zone: Mapped[str | None] = mapped_column(String(64))
    bbox: Mapped[list[float] | None] = mapped_column(JSON)
    score_median: Mapped[float | None] = mapped_column(Float)
    score_top: Mapped[float | None] = mapped_column(Float)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    cleared_at: Mapped[datetime | None]
    violation_state: Mapped[str] = mapped_column(String(16), default=ViolationState.open.value)
    status: Mapped[str] = mapped_column(String(32), default=CaseStatus.candidate.value)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(500))
    grid: Mapped[str | None] = mapped_column(String(64))
    road: Mapped[str | None] = mapped_column(String(128))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    evidence_captured_at: Mapped[datetime | None]
    last_seq: Mapped[int] = mapped_column(Integer)
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # -- case desk (revision 0002) ---------------------------------------------------------
    source: Mapped[str] = mapped_column(String(16), default=CaseSource.camera.value, server_default="camera")
    description: Mapped[str | None] = mapped_column(Text)
    reporter: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(16))
    street: Mapped[str | None] = mapped_column(String(64))
    deadline_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    disposed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    rework_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    postpone_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    return_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    on_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    disposed_late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    resolution: Mapped[str | None] = mapped_column(String(32))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    recurrence_of_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))
    after_evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    # -- the data team's loop (revision 0003): the desk's judgement of a detection ---------------
    corrected_label: Mapped[str | None] = mapped_column(String(32))
    corrected_bbox: Mapped[list[float] | None] = mapped_column(JSON)  # pixels of the evidence frame
    corrected_at: Mapped[datetime | None]
    corrected_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None]  # the latest register, reject or correct
    reviewed_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        # GET /cases orders by first_seen desc; each filter it takes has an index that ends in
        # first_seen (the page) and answers its count from the index alone (bench/cases_query.py)
        Index("ix_cases_first_seen_id", "first_seen", "id"),
        Index("ix_cases_status_first_seen_id", "status", "first_seen", "id"),
        Index("ix_cases_rule_status_first_seen", "rule", "status", "first_seen"),
        Index("ix_cases_stream_first_seen", "stream", "first_seen"),
        Index("ix_cases_grid_first_seen", "grid", "first_seen"),
        Index("ix_cases_unit_status_first_seen", "unit", "status", "first_seen"),
        Index("ix_cases_street_first_seen", "street", "first_seen"),
        Index("ix_cases_source_status_first_seen", "source", "status", "first_seen"),
        # GET /reviews pages by (reviewed_at, id)
        Index("ix_cases_reviewed_at_id", "reviewed_at", "id"),
        # overdue (awaiting disposal past the deadline) and disposed_late: small partial indexes
        Index(
            "ix_cases_awaiting_deadline",
            "deadline_at",
            "unit",
            postgresql_where=text(AWAITING_PREDICATE),
            sqlite_where=text(AWAITING_PREDICATE),
        ),
        Index(
            "ix_cases_disposed_late",
            "status",
            "first_seen",
            postgresql_where=text(LATE_PREDICATE),
            sqlite_where=text("disposed_late = 1"),
        ),
    )


class CaseEvent(Base):
    """One line of a case's history; rows are only ever inserted.

    Detector events carry their ``seq`` and (case_id, seq) is unique, so a redelivered event is
    recorded once; lifecycle events have no seq, and may carry an evidence image (sha256) and
    ``data`` (unit, deadline, reason, re-check request...).
    """

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
    seq: Mapped[int | None] = mapped_column(Integer)
    payload_sha256: Mapped[str | None] = mapped_column(String(64))
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("case_id", "seq", name="uq_case_events_case_id_seq"),
        Index("ix_case_events_kind_at", "kind", "at"),
    )


class RecheckStatus(enum.StrEnum):
    pending = "pending"  # not yet handed to the broker
    sent = "sent"  # PUBACKed; waiting for the detector (re-sent every recheck_retry_s)
    answered = "answered"
    expired = "expired"  # no answer within recheck_timeout_s: a person verifies
    superseded = "superseded"  # the case moved on before the answer came


class RecheckRequest(Base):
    """One camera re-check (反馈核查): the outbox row of the MQTT command and, later, its answer."""

    __tablename__ = "recheck_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # verify (disposed case) | triage (candidate)
    stream: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=RecheckStatus.pending.value, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    result: Mapped[str | None] = mapped_column(String(16))
    detector: Mapped[str | None] = mapped_column(String(128))
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    checked_at: Mapped[datetime | None]


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(512))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    payload_size: Mapped[int] = mapped_column(Integer)
