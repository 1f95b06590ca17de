"""``/cases``: list with filters and pages, one case, its evidence, its history and re-checks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import func, select

from api.deps import CaseReader, DeskDep, EvidenceStoreDep, SessionDep
from api.errors import CaseNotFoundError, EvidenceGoneError, EvidenceNotFoundError
from api.models import Case, CaseEvent, RecheckRequest
from api.routes.common import AUTH_ERRORS, NOT_FOUND
from api.schemas import (
    CaseEventPublic,
    CaseEventsPublic,
    CaseFilters,
    CasePublic,
    CasesPublic,
    RecheckPublic,
)
from api.services.auth import Principal
from api.services.cases import check_visible
from api.services.queries import case_conditions
from api.services.retention_budget import pruned_note

router = APIRouter(prefix="/cases", tags=["cases"], responses=AUTH_ERRORS)

MAX_CASE_ID = 2**31 - 1
CaseId = Annotated[int, Path(ge=1, le=MAX_CASE_ID, description="case id")]
EventId = Annotated[int, Path(ge=1, le=MAX_CASE_ID, description="event id")]
_JPEG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}},
    **NOT_FOUND,
    410: {"description": "the image was deleted by retention to keep the evidence store under its budget"},
}


@router.get("", response_model=CasesPublic)
def list_cases(
    session: SessionDep, desk: DeskDep, reader: CaseReader, filters: Annotated[CaseFilters, Query()]
) -> CasesPublic:
    """Cases, newest first (by first_seen, then id), one page at a time. A field unit sees its own."""
    now = desk.clock()
    conditions = case_conditions(filters, reader, now)
    count, exact = count_cases(session, conditions, desk.settings.cases_count_limit)
    rows = session.scalars(
        select(Case)
        .where(*conditions)
        .order_by(Case.first_seen.desc(), Case.id)
        .offset((filters.page - 1) * filters.page_size)
        .limit(filters.page_size)
    ).all()
    return CasesPublic(data=[CasePublic.of(row, now) for row in rows], count=count, count_exact=exact)


def count_cases(session: SessionDep, conditions: list[Any], limit: int) -> tuple[int, bool]:
    """Exact up to ``limit`` matches (0: no limit): the count then reads at most limit + 1 rows."""
    if limit <= 0:
        return session.scalar(select(func.count()).select_from(Case).where(*conditions)) or 0, True
    bounded = select(Case.id).where(*conditions).limit(limit + 1).subquery()
    seen = session.scalar(select(func.count()).select_from(bounded)) or 0
    return min(seen, limit), seen <= limit


def visible_case(session: SessionDep, case_id: int, reader: Principal) -> Case:
    case = session.get(Case, case_id)
    if case is None:
        raise CaseNotFoundError(case_id)
    check_visible(case, reader)
    return case


@router.get("/{case_id}", response_model=CasePublic, responses=NOT_FOUND)
def get_case(session: SessionDep, desk: DeskDep, reader: CaseReader, case_id: CaseId) -> CasePublic:
    return CasePublic.of(visible_case(session, case_id, reader), desk.clock())


def _jpeg(session: SessionDep, store: EvidenceStoreDep, case_id: int, digest: str) -> Response:
    try:
        content = store.read(digest)
    except EvidenceNotFoundError:
        note = pruned_note(session, [case_id], digest)
        if note is None:
            raise
        raise EvidenceGoneError(f"case {case_id}: {note}") from None
    return Response(
        content=content,
        media_type="image/jpeg",
        headers={
            "ETag": f'"{digest}"',
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/{case_id}/evidence", response_class=Response, responses=_JPEG)
def get_case_evidence(
    session: SessionDep,
    store: EvidenceStoreDep,
    reader: CaseReader,
    case_id: CaseId,
    which: Annotated[
        Literal["before", "after"], Query(description="before: what opened the case; after: what closed it")
    ] = "before",
) -> Response:
    """The case's evidence JPEG. The file is found by the sha256 stored on the case, never by input."""
    case = visible_case(session, case_id, reader)
    digest = case.evidence_sha256 if which == "before" else case.after_evidence_sha256
    if digest is None:
        raise EvidenceNotFoundError(
            f"case {case_id} has no {'' if which == 'before' else 'after-'}evidence image"
        )
    return _jpeg(session, store, case_id, digest)


@router.get("/{case_id}/events", response_model=CaseEventsPublic, responses=NOT_FOUND)
def list_events(session: SessionDep, reader: CaseReader, case_id: CaseId) -> CaseEventsPublic:
    """The case's append-only history, oldest first: detector events and every lifecycle change."""
    visible_case(session, case_id, reader)
    rows = session.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)).all()
    return CaseEventsPublic(data=[CaseEventPublic.model_validate(r) for r in rows], count=len(rows))


@router.get("/{case_id}/events/{event_id}/evidence", response_class=Response, responses=_JPEG)
def get_event_evidence(
    session: SessionDep, store: EvidenceStoreDep, reader: CaseReader, case_id: CaseId, event_id: EventId
) -> Response:
    """The image attached to one event (a rectification photo, a re-check frame)."""
    visible_case(session, case_id, reader)
    event = session.get(CaseEvent, event_id)
    if event is None or event.case_id != case_id or event.evidence_sha256 is None:
        raise EvidenceNotFoundError(f"case {case_id} has no event {event_id} with an image")
    return _jpeg(session, store, case_id, event.evidence_sha256)


@router.get("/{case_id}/rechecks", response_model=list[RecheckPublic], responses=NOT_FOUND)
def list_rechecks(session: SessionDep, reader: CaseReader, case_id: CaseId) -> list[RecheckPublic]:
    """The camera re-checks asked for this case, oldest first, with their answers."""
    visible_case(session, case_id, reader)
    rows = session.scalars(
        select(RecheckRequest).where(RecheckRequest.case_id == case_id).order_by(RecheckRequest.id)
    ).all()
    return [RecheckPublic.model_validate(r) for r in rows]
