"""``/assessment``: the monthly assessment per unit, street office or grid (api/ASSESSMENT.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import CurrentUser, DeskDep, SessionDep
from api.errors import ForbiddenError
from api.routes.common import AUTH_ERRORS
from api.services.assessment import Row, compute, to_csv
from api.services.auth import Principal, Role

router = APIRouter(prefix="/assessment", tags=["assessment"], responses=AUTH_ERRORS)
Month = Annotated[
    str, Query(pattern=r"^(19[7-9]\d|2\d{3})-(0[1-9]|1[0-2])$", description="YYYY-MM, in the bureau's zone")
]
By = Annotated[
    Literal["unit", "street", "grid"], Query(description="group by responsible unit, street office or grid")
]
ASSESSORS = frozenset({Role.admin, Role.reviewer, Role.dispatcher, Role.field_unit})


class AssessmentRowPublic(BaseModel):
    rank: int | None
    key: str
    name: str
    score: float | None
    dispatched: int
    returned: int
    on_hold: int
    due: int
    disposed: int
    disposed_on_time: int
    overdue_pending: int
    to_close: int
    closed: int
    closed_on_time: int
    reworked: int
    postponed: int
    disposal_rate: float | None
    ontime_disposal_rate: float | None
    closure_rate: float | None
    ontime_closure_rate: float | None
    rework_rate: float | None
    postponement_rate: float | None
    overdue_pending_rate: float | None
    dispatch_accuracy: float | None


class AssessmentPublic(BaseModel):
    month: str
    by: str
    weights: dict[str, float] = Field(description="of the composite score")
    rows: list[AssessmentRowPublic]


def _rows(session: SessionDep, desk: DeskDep, user: Principal, month: str, by: str) -> list[Row]:
    if user.role not in ASSESSORS:
        raise ForbiddenError(f"role {user.role.value!r} may not read the assessment")
    return compute(session, desk.routing, month, by, desk.clock())  # type: ignore[arg-type]


@router.get("", response_model=AssessmentPublic)
def assessment(session: SessionDep, desk: DeskDep, user: CurrentUser, month: Month, by: By = "unit") -> Any:
    """Counts, rates, the weighted score and the ranking of one month (ties share a rank)."""
    rows = _rows(session, desk, user, month, by)
    return AssessmentPublic(
        month=month,
        by=by,
        weights=desk.routing.config.weights.model_dump(),
        rows=[AssessmentRowPublic.model_validate(r, from_attributes=True) for r in rows],
    )


@router.get("/csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def assessment_csv(
    session: SessionDep, desk: DeskDep, user: CurrentUser, month: Month, by: By = "unit"
) -> Response:
    """The same as CSV (UTF-8 with BOM, Chinese and English headers) for the monthly report."""
    body = to_csv(_rows(session, desk, user, month, by))
    filename = f"citywatch-assessment-{month}-{by}.csv"
    return Response(
        content=body.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
