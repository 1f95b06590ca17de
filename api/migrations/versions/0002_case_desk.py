"""case desk: lifecycle columns, citizen reports, event evidence, re-check outbox, query indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW_NULLABLE: dict[str, sa.types.TypeEngine[Any]] = {
    "stream": sa.String(length=64),
    "zone": sa.String(length=64),
    "bbox": sa.JSON(),
    "score_median": sa.Float(),
    "score_top": sa.Float(),
    "model_name": sa.String(length=128),
    "model_version": sa.String(length=64),
}
_COUNTERS = ("rework_count", "postpone_count", "return_count", "duplicate_count")
_INDEXES = {
    "ix_cases_status_first_seen_id": ["status", "first_seen", "id"],
    "ix_cases_rule_status_first_seen": ["rule", "status", "first_seen"],
    "ix_cases_stream_first_seen": ["stream", "first_seen"],
    "ix_cases_grid_first_seen": ["grid", "first_seen"],
    "ix_cases_unit_status_first_seen": ["unit", "status", "first_seen"],
    "ix_cases_street_first_seen": ["street", "first_seen"],
    "ix_cases_source_status_first_seen": ["source", "status", "first_seen"],
}
_REPLACED = {
    "ix_cases_status": "status",
    "ix_cases_rule": "rule",
    "ix_cases_stream": "stream",
    "ix_cases_grid": "grid",
}
"""Single-column indexes of 0001 that the composite ones above make redundant."""
AWAITING = "status IN ('dispatched', 'in_progress') AND on_hold = false"
LATE = {"postgresql": "disposed_late = true", "sqlite": "disposed_late = 1"}


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    with op.batch_alter_table("cases") as batch:
        for name, type_ in _NOW_NULLABLE.items():
            batch.alter_column(name, existing_type=type_, nullable=True)
        batch.add_column(sa.Column("source", sa.String(length=16), server_default="camera", nullable=False))
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reporter", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("unit", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("tier", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("street", sa.String(length=64), nullable=True))
        for name in ("deadline_at", "dispatched_at", "disposed_at", "closed_at"):
            batch.add_column(sa.Column(name, ts, nullable=True))
        for name in _COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch.add_column(sa.Column("on_hold", sa.Boolean(), server_default=sa.text("false"), nullable=False))
        batch.add_column(
            sa.Column("disposed_late", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch.add_column(sa.Column("resolution", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("merged_into_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("recurrence_of_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("after_evidence_sha256", sa.String(length=64), nullable=True))
        batch.create_foreign_key(
            op.f("fk_cases_merged_into_id_cases"), "cases", ["merged_into_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_foreign_key(
            op.f("fk_cases_recurrence_of_id_cases"),
            "cases",
            ["recurrence_of_id"],
            ["id"],
            ondelete="SET NULL",
        )
    for name in _REPLACED:
        op.drop_index(name, table_name="cases")
    for name, columns in _INDEXES.items():
        op.create_index(name, "cases", columns)
    dialect = op.get_bind().dialect.name
    where: dict[str, Any] = {f"{dialect}_where": sa.text(AWAITING)}
    op.create_index("ix_cases_awaiting_deadline", "cases", ["deadline_at", "unit"], **where)
    late: dict[str, Any] = {f"{dialect}_where": sa.text(LATE.get(dialect, LATE["postgresql"]))}
    op.create_index("ix_cases_disposed_late", "cases", ["status", "first_seen"], **late)

    with op.batch_alter_table("case_events") as batch:
        batch.add_column(sa.Column("evidence_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("data", sa.JSON(), nullable=True))
    op.create_index("ix_case_events_kind_at", "case_events", ["kind", "at"])

    op.create_table(
        "recheck_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("sent_at", ts, nullable=True),
        sa.Column("answered_at", ts, nullable=True),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("detector", sa.String(length=128), nullable=True),
        sa.Column("evidence_sha256", sa.String(length=64), nullable=True),
        sa.Column("checked_at", ts, nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_recheck_requests_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recheck_requests")),
        sa.UniqueConstraint("request_id", name=op.f("uq_recheck_requests_request_id")),
    )
    op.create_index(op.f("ix_recheck_requests_case_id"), "recheck_requests", ["case_id"])
    op.create_index(op.f("ix_recheck_requests_status"), "recheck_requests", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_recheck_requests_status"), table_name="recheck_requests")
    op.drop_index(op.f("ix_recheck_requests_case_id"), table_name="recheck_requests")
    op.drop_table("recheck_requests")
    op.drop_index("ix_case_events_kind_at", table_name="case_events")
    with op.batch_alter_table("case_events") as batch:
        batch.drop_column("data")
        batch.drop_column("evidence_sha256")
    op.drop_index("ix_cases_disposed_late", table_name="cases")
    op.drop_index("ix_cases_awaiting_deadline", table_name="cases")
    for name in _INDEXES:
        op.drop_index(name, table_name="cases")
    for name, column in _REPLACED.items():
        op.create_index(name, "cases", [column])
    # Citizen reports have no camera fields: they cannot survive the NOT NULLs of revision 0001.
    op.execute(sa.text("DELETE FROM cases WHERE stream IS NULL OR model_name IS NULL OR bbox IS NULL"))
    with op.batch_alter_table("cases") as batch:
        batch.drop_constraint(op.f("fk_cases_recurrence_of_id_cases"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_cases_merged_into_id_cases"), type_="foreignkey")
        for name in (
            "after_evidence_sha256",
            "recurrence_of_id",
            "merged_into_id",
            "resolution",
            "disposed_late",
            "on_hold",
            *_COUNTERS,
            "closed_at",
            "disposed_at",
            "dispatched_at",
            "deadline_at",
            "street",
            "tier",
            "unit",
            "reporter",
            "description",
            "source",
        ):
            batch.drop_column(name)
        for name, type_ in _NOW_NULLABLE.items():
            batch.alter_column(name, existing_type=type_, nullable=False)
