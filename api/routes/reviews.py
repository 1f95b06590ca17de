"""The data team's loop (api/AUTH.md): ``POST /cases/{id}/correct`` and ``GET /reviews``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentUser, DeskDep, SessionDep
from api.routes.cases import CaseId
from api.routes.common import AUTH_ERRORS, BODY_ERRORS, CONFLICT, NOT_FOUND, UNPROCESSABLE
from api.schemas import CaseEventPublic, CasePublic, TransitionPublic
from api.schemas_reviews import CorrectIn, ReviewQuery, ReviewsPublic
from api.services.reviews import correct, list_reviews

router = APIRouter(tags=["reviews"], responses={**AUTH_ERRORS, **UNPROCESSABLE})


@router.post(
    "/cases/{case_id}/correct",
    response_model=TransitionPublic,
    responses={**NOT_FOUND, **CONFLICT, **BODY_ERRORS},
)
def correct_case(
    session: SessionDep, desk: DeskDep, user: CurrentUser, case_id: CaseId, body: CorrectIn
) -> TransitionPublic:
    """Correct a camera (or drone) case's detection: the class (a rule label) and the box in pixels
    of the case's evidence frame, for the data team. The detector's label and box stay; the
    correction is stored beside them (``corrected_label``, ``corrected_bbox``, ``corrected_at``,
    ``corrected_by``) with a ``corrected`` event (old → new) in the history. Reviewer, dispatcher or
    admin; any status but a merged duplicate (409), never a citizen or hotline report (409: no
    detection); a box outside the evidence frame is a 422. The status does not change."""
    case, event = correct(session, desk, case_id, user, body)
    return TransitionPublic(
        case=CasePublic.of(case, desk.clock()),
        events=[CaseEventPublic.model_validate(event)],
        recheck_queued=False,
    )


@router.get("/reviews", response_model=ReviewsPublic)
def get_reviews(
    session: SessionDep, user: CurrentUser, query: Annotated[ReviewQuery, Query()]
) -> ReviewsPublic:
    """The camera and drone cases the desk has judged, oldest review first, by (reviewed_at, case
    id): ``rejected`` (with the reason), ``corrected`` (the desk's box and class), ``confirmed``
    (registered or later). Pass ``next_since`` back as ``since`` for the next page; a case judged
    again (a later reject or correction) comes again with its new verdict. Reviewer, dispatcher or
    admin."""
    return list_reviews(session, user, query)
