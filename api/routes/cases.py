"""``/cases``: list with filters and pages, one case, its evidence JPEG."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import func, select

from api.deps import EvidenceStoreDep, SessionDep
from api.errors import CaseNotFoundError, EvidenceNotFoundError
from api.models import Case
from api.schemas import CaseFilters, CasePublic, CasesPublic, ErrorPublic

router = APIRouter(prefix="/cases", tags=["cases"])

MAX_CASE_ID = 2**31 - 1
CaseId = Annotated[int, Path(ge=1, le=MAX_CASE_ID, description="case id")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorPublic}}


@router.get("", response_model=CasesPublic)
def list_cases(session: SessionDep, filters: Annotated[CaseFilters, Query()]) -> CasesPublic:
    """Cases, newest first (by first_seen, then id), one page at a time."""
    conditions: list[Any] = []
    if filters.status is not None:
        conditions.append(Case.status == filters.status.value)
    if filters.rule is not None:
        conditions.append(Case.rule == filters.rule.value)
    if filters.stream is not None:
        conditions.append(Case.stream == filters.stream)
    if filters.grid is not None:
        conditions.append(Case.grid == filters.grid)
    if filters.since is not None:
        conditions.append(Case.first_seen >= filters.since)
    if filters.until is not None:
        conditions.append(Case.first_seen < filters.until)
    count = session.scalar(select(func.count()).select_from(Case).where(*conditions)) or 0
    rows = session.scalars(
        select(Case)
        .where(*conditions)
        .order_by(Case.first_seen.desc(), Case.id)
        .offset((filters.page - 1) * filters.page_size)
        .limit(filters.page_size)
    ).all()
    return CasesPublic(data=[CasePublic.model_validate(row) for row in rows], count=count)


@router.get("/{case_id}", response_model=CasePublic, responses=_NOT_FOUND)
def get_case(session: SessionDep, case_id: CaseId) -> CasePublic:
    case = session.get(Case, case_id)
    if case is None:
        raise CaseNotFoundError(case_id)
    return CasePublic.model_validate(case)


@router.get(
    "/{case_id}/evidence",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **_NOT_FOUND},
)
def get_case_evidence(session: SessionDep, store: EvidenceStoreDep, case_id: CaseId) -> Response:
    """The case's evidence JPEG. The file is found by the sha256 stored on the case, never by input."""
    case = session.get(Case, case_id)
    if case is None:
        raise CaseNotFoundError(case_id)
    if case.evidence_sha256 is None:
        raise EvidenceNotFoundError(f"case {case_id} has no evidence image")
    data = store.read(case.evidence_sha256)
    return Response(
        content=data,
        media_type="image/jpeg",
        headers={
            "ETag": f'"{case.evidence_sha256}"',
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )
