"""case reviews: the desk's correction of a detection and the time of its latest judgement

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

``corrected_label`` / ``corrected_bbox`` (pixels of the evidence frame) / ``corrected_at`` /
``corrected_by`` hold a reviewer's correction (the detector's ``label`` and ``bbox`` stay);
``reviewed_at`` / ``reviewed_by`` the latest register, reject or correct, what ``GET /reviews``
pages by (index ``ix_cases_reviewed_at_id``). Existing cases get ``reviewed_at`` / ``reviewed_by``
from their latest ``register`` or ``reject`` event.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("corrected_label", "corrected_bbox", "corrected_at", "corrected_by", "reviewed_at", "reviewed_by")
_LATEST_JUDGEMENT = (
    "SELECT e.{column} FROM case_events e WHERE e.case_id = cases.id AND e.kind IN ('register', 'reject') "
    "ORDER BY e.at DESC, e.id DESC LIMIT 1"
)
BACKFILL = (
    f"UPDATE cases SET reviewed_at = ({_LATEST_JUDGEMENT.format(column='at')}), "
    f"reviewed_by = ({_LATEST_JUDGEMENT.format(column='actor')}) "
    "WHERE EXISTS (SELECT 1 FROM case_events e WHERE e.case_id = cases.id "
    "AND e.kind IN ('register', 'reject'))"
)
"""Plain SQL that SQLite and PostgreSQL both run (correlated subqueries, no UPDATE ... FROM)."""


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("corrected_label", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("corrected_bbox", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("corrected_at", ts, nullable=True))
        batch.add_column(sa.Column("corrected_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("reviewed_at", ts, nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.String(length=128), nullable=True))
    op.execute(sa.text(BACKFILL))
    op.create_index("ix_cases_reviewed_at_id", "cases", ["reviewed_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_cases_reviewed_at_id", table_name="cases")
    with op.batch_alter_table("cases") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
