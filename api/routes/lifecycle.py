"""``POST /cases/{id}/<action>``: the lifecycle, one endpoint per action (DESIGN.md, api/AUTH.md).

Every action needs a credential whose role may take it (403 otherwise); a field unit acts on
its own cases only (403); an action the case's status does not allow is a 409 that names the
allowed ones. Each success appends events to the case's history and returns them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, File, Form, Request, UploadFile

from api.deps import CurrentUser, DeskDep, SessionDep
from api.routes.cases import CaseId
from api.routes.common import AUTH_ERRORS, BODY_ERRORS, CONFLICT, NOT_FOUND, UNPROCESSABLE, UPLOAD_ERRORS
from api.routes.limits import form_limits
from api.schemas import (
    CaseEventPublic,
    CasePublic,
    DispatchIn,
    MergeIn,
    NoteIn,
    PostponeIn,
    RejectIn,
    RequiredNoteIn,
    Text,
    TransitionPublic,
)
from api.services.auth import Principal
from api.services.cases import check_photo, perform
from api.services.lifecycle import Action, Desk, Params

router = APIRouter(
    prefix="/cases",
    tags=["lifecycle"],
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT, **UNPROCESSABLE, **BODY_ERRORS},
)
OptionalNote = Annotated[NoteIn | None, Body()]


def _run(
    request: Request,
    session: SessionDep,
    desk: Desk,
    user: Principal,
    case_id: int,
    action: Action,
    params: Params,
    photo: bytes | None = None,
) -> TransitionPublic:
    outcome = perform(session, desk, case_id, action, user, params, photo=photo)
    sender = getattr(request.app.state, "recheck_sender", None)
    if outcome.recheck_queued and sender is not None:
        sender.wake()
    return TransitionPublic(
        case=CasePublic.of(outcome.case, desk.clock()),
        events=[CaseEventPublic.model_validate(e) for e in outcome.events],
        recheck_queued=outcome.recheck_queued,
    )


def _note(body: NoteIn | RequiredNoteIn | None) -> Params:
    return Params(note=body.note if body is not None else None)


@router.post("/{case_id}/register", response_model=TransitionPublic)
def register(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: OptionalNote = None,
) -> TransitionPublic:
    """立案: a reviewer confirms a candidate (candidate → registered)."""
    return _run(request, session, desk, user, case_id, Action.register, _note(body))


@router.post("/{case_id}/reject", response_model=TransitionPublic)
def reject(
    request: Request, session: SessionDep, desk: DeskDep, user: CurrentUser, case_id: CaseId, body: RejectIn
) -> TransitionPublic:
    """Dismiss a candidate or registered case: false positive, out of scope or self-resolved."""
    return _run(
        request, session, desk, user, case_id, Action.reject, Params(note=body.note, reason=body.reason)
    )


@router.post("/{case_id}/merge", response_model=TransitionPublic)
def merge(
    request: Request, session: SessionDep, desk: DeskDep, user: CurrentUser, case_id: CaseId, body: MergeIn
) -> TransitionPublic:
    """Merge a duplicate into an open case (→ merged)."""
    return _run(request, session, desk, user, case_id, Action.merge, Params(note=body.note, into=body.into))


@router.post("/{case_id}/dispatch", response_model=TransitionPublic)
def dispatch(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: Annotated[DispatchIn | None, Body()] = None,
) -> TransitionPublic:
    """派遣: to the routed unit (职责清单) or the one named; the deadline counts working hours."""
    params = Params(note=body.note, unit=body.unit) if body is not None else Params()
    return _run(request, session, desk, user, case_id, Action.dispatch, params)


@router.post("/{case_id}/return", response_model=TransitionPublic)
def return_case(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: RequiredNoteIn,
) -> TransitionPublic:
    """退回: the field unit sends a case that is not its own back to the dispatcher."""
    return _run(request, session, desk, user, case_id, Action.return_, _note(body))


@router.post("/{case_id}/accept", response_model=TransitionPublic)
def accept(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: OptionalNote = None,
) -> TransitionPublic:
    """The field unit takes the case on (dispatched → in_progress)."""
    return _run(request, session, desk, user, case_id, Action.accept, _note(body))


@router.post("/{case_id}/postpone", response_model=TransitionPublic)
def postpone(
    request: Request, session: SessionDep, desk: DeskDep, user: CurrentUser, case_id: CaseId, body: PostponeIn
) -> TransitionPublic:
    """延期: the dispatcher grants more working hours (the status stays)."""
    return _run(
        request, session, desk, user, case_id, Action.postpone, Params(note=body.note, hours=body.hours)
    )


@router.post("/{case_id}/hold", response_model=TransitionPublic)
def hold(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: RequiredNoteIn,
) -> TransitionPublic:
    """挂账: set a case aside that cannot be disposed now; it no longer counts as due."""
    return _run(request, session, desk, user, case_id, Action.hold, _note(body))


@router.post(
    "/{case_id}/dispose",
    response_model=TransitionPublic,
    responses=UPLOAD_ERRORS,
    form_limits=form_limits(files=1, fields=5),
)
def dispose(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    note: Annotated[Text | None, Form(max_length=2000)] = None,
    photo: Annotated[UploadFile | None, File(description="rectification photo (JPEG)")] = None,
) -> TransitionPublic:
    """处置: the field unit reports the rectification. A camera case goes on to a camera re-check
    (→ verifying); a citizen report waits for a person to verify. The photo is stored only once
    the caller's role, unit and the case's status allow the action."""
    params = Params(note=note)
    data = None
    if photo is not None:
        limit = desk.settings.report_max_photo_bytes
        data = photo.file.read(limit + 1)
        check_photo(data, limit)
    return _run(request, session, desk, user, case_id, Action.dispose, params, data)


@router.post("/{case_id}/verify", response_model=TransitionPublic)
def verify(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: OptionalNote = None,
) -> TransitionPublic:
    """核查: a person starts verifying a disposed case (disposed → verifying)."""
    return _run(request, session, desk, user, case_id, Action.verify, _note(body))


@router.post("/{case_id}/close", response_model=TransitionPublic)
def close(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: OptionalNote = None,
) -> TransitionPublic:
    """结案: the rectification is verified (disposed or verifying → closed)."""
    return _run(request, session, desk, user, case_id, Action.close, _note(body))


@router.post("/{case_id}/rework", response_model=TransitionPublic)
def rework(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: RequiredNoteIn,
) -> TransitionPublic:
    """返工: the rectification did not hold (→ in_progress, rework +1)."""
    return _run(request, session, desk, user, case_id, Action.rework, _note(body))


@router.post("/{case_id}/recheck", response_model=TransitionPublic)
def recheck(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: OptionalNote = None,
) -> TransitionPublic:
    """Ask the camera to look again: a candidate (gone → rejected as self-resolved) or a disposed /
    verifying case (gone → closed, still there → rework). 409 for a case without a camera."""
    return _run(request, session, desk, user, case_id, Action.recheck, _note(body))


@router.post("/{case_id}/comment", response_model=TransitionPublic)
def comment(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    case_id: CaseId,
    body: RequiredNoteIn,
) -> TransitionPublic:
    """A note in the history (a field unit asking for a postponement, a phone call...)."""
    return _run(request, session, desk, user, case_id, Action.comment, _note(body))
