"""The WHERE clause of ``GET /cases``: the filters, the caller's visibility, and ``overdue``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, false, func, not_, true

from api.models import Case
from api.schemas import AWAITING_DISPOSAL, CaseFilters
from api.services.auth import Principal, Role


def overdue_condition(now: datetime) -> Any:
    """SQL twin of ``api.schemas.is_overdue``; matches the partial index ix_cases_awaiting_deadline."""
    return and_(Case.status.in_(AWAITING_DISPOSAL), Case.on_hold == false(), Case.deadline_at < now)


def case_conditions(filters: CaseFilters, principal: Principal, now: datetime) -> list[Any]:
    conditions: list[Any] = []
    if principal.role is Role.field_unit and principal.via != "anonymous-read":
        conditions.append(Case.unit == principal.unit if principal.unit else false())
    if filters.status is not None:
        conditions.append(Case.status == filters.status.value)
    if filters.rule is not None:
        conditions.append(Case.rule == filters.rule.value)
    if filters.stream is not None:
        conditions.append(Case.stream == filters.stream)
    if filters.grid is not None:
        conditions.append(Case.grid == filters.grid)
    if filters.unit is not None:
        conditions.append(Case.unit == filters.unit)
    if filters.street is not None:
        conditions.append(Case.street == filters.street)
    if filters.source is not None:
        conditions.append(Case.source == filters.source.value)
    if filters.overdue is not None:
        overdue = overdue_condition(now)
        conditions.append(overdue if filters.overdue else not_(func.coalesce(overdue, false())))
    if filters.disposed_late is not None:
        conditions.append(Case.disposed_late == (true() if filters.disposed_late else false()))
    if filters.since is not None:
        conditions.append(Case.first_seen >= filters.since)
    if filters.until is not None:
        conditions.append(Case.first_seen < filters.until)
    return conditions
