"""``/streams``: the detector's streams as the console shows them, their snapshots, their zones.

- ``GET /streams`` (staff): every stream the streams file (``CITYWATCH_STREAMS_FILE``) names or a
  detector reported, with its latest state (live / stalled / failed and why, sample rate, lag, last
  seen), when its latest snapshot arrived and its zones from the file.
- ``GET /streams/{id}/snapshot`` (staff): the stream's latest snapshot JPEG (404 before the first).
- ``PUT /streams/{id}/zones`` (admin): replace the stream's ``zones:`` in the streams file. The body is
  the zones list as in streams.yaml; zones ``citywatch config check`` would refuse are a 422 with its
  messages, key paths and hints; the file is rewritten keeping its comments and order. 409 when the
  file is not set or not writable, 404 when it has no such stream. The detector applies the edit
  itself (it reloads the file when it changes). ``?dry_run=true`` only judges (the zone editor's
  "check" button; the file need not be writable).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from api.deps import CurrentUser
from api.errors import ForbiddenError, NotFoundError
from api.ingest.streams import StreamBoard
from api.routes.common import AUTH_ERRORS, BODY_ERRORS, UNPROCESSABLE, Responses
from api.schemas import ConflictPublic, ErrorPublic
from api.schemas_streams import StreamPublic, StreamsPublic, StreamStatePublic, ZonesInvalidPublic
from api.services.auth import STAFF_READERS, Principal
from api.services.streams_file import (
    ZONE_EDITORS,
    StreamEntry,
    StreamsFile,
    StreamsFileError,
    ZonesInvalidError,
)

router = APIRouter(prefix="/streams", tags=["streams"], responses=AUTH_ERRORS)

StreamId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="stream id")]
_JPEG: Responses = {
    200: {"content": {"image/jpeg": {}}},
    404: {"model": ErrorPublic, "description": "no such stream, or no snapshot of it yet"},
}
_PUT: Responses = {
    400: UNPROCESSABLE[400],  # the body is no JSON
    404: {"model": ErrorPublic, "description": "the streams file has no such stream"},
    409: {"model": ConflictPublic, "description": "the streams file is unset, unreadable or not writable"},
    422: {"model": ZonesInvalidPublic, "description": "zones `citywatch config check` would refuse"},
    **BODY_ERRORS,
}
JSON_TYPE = "application/json"
_ZONES_BODY: dict[str, Any] = {
    "type": "array",
    "description": "the stream's zones as in streams.yaml: [{id, name?, polygon: [[x, y], ...], "
    "rules: [...], params?: {rule: {parameter: value}}}]",
    "items": {"type": "object"},
}


def _board(request: Request) -> StreamBoard:
    board: StreamBoard = request.app.state.streams
    return board


def _file(request: Request) -> StreamsFile:
    streams_file: StreamsFile = request.app.state.streams_file
    return streams_file


def _staff(user: Principal) -> None:
    if user.role not in STAFF_READERS:
        raise ForbiddenError(f"role {user.role.value!r} may not read the streams")


def _public(
    stream_id: str, entry: StreamEntry | None, state: dict[str, Any] | None, board: StreamBoard
) -> StreamPublic:
    snapshot = board.snapshot(stream_id)
    return StreamPublic(
        id=stream_id,
        name=entry.name if entry else None,
        in_file=entry is not None,
        enabled=entry.enabled if entry else None,
        state=StreamStatePublic.model_validate(state) if state else None,
        snapshot_at=snapshot.received_at if snapshot else None,
        zones=entry.zones if entry else None,
    )


@router.get("", response_model=StreamsPublic)
def list_streams(request: Request, user: CurrentUser) -> StreamsPublic:
    """Every stream of the streams file, in its order, then those only a detector reported (by id)."""
    _staff(user)
    board, streams_file = _board(request), _file(request)
    file_error: str | None = None
    try:
        entries = streams_file.streams()
    except StreamsFileError as exc:
        entries, file_error = [], str(exc)
    states = board.states()
    data = [_public(e.id, e, states.get(e.id), board) for e in entries]
    known = {e.id for e in entries}
    data += [_public(sid, None, states[sid], board) for sid in sorted(states) if sid not in known]
    reason = streams_file.read_only_reason()
    return StreamsPublic(
        data=data,
        count=len(data),
        zones_editable=reason is None and file_error is None,
        zones_read_only_reason=reason or file_error,
        file_error=file_error,
    )


@router.get("/{stream_id}/snapshot", response_class=Response, responses=_JPEG)
def get_snapshot(request: Request, user: CurrentUser, stream_id: StreamId) -> Response:
    """The stream's latest snapshot (a JPEG at most 640 px wide, as the detector published it)."""
    _staff(user)
    snapshot = _board(request).snapshot(stream_id)
    if snapshot is None:
        raise NotFoundError(f"no snapshot of stream {stream_id!r} yet")
    if request.headers.get("if-none-match") == snapshot.etag:
        return Response(status_code=304, headers={"ETag": snapshot.etag})
    return Response(
        content=snapshot.jpeg,
        media_type="image/jpeg",
        headers={
            "ETag": snapshot.etag,
            "Cache-Control": "private, no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.put(
    "/{stream_id}/zones",
    response_model=StreamPublic,
    responses=_PUT,
    openapi_extra={"requestBody": {"required": True, "content": {JSON_TYPE: {"schema": _ZONES_BODY}}}},
)
def put_zones(
    request: Request,
    user: CurrentUser,
    stream_id: StreamId,
    zones: Annotated[Any, Body()],
    dry_run: Annotated[bool, Query(description="judge the zones only; nothing is written")] = False,
) -> StreamPublic | JSONResponse:
    """Replace the stream's zones in the streams file (admin). Judged as `citywatch config check`
    judges them; written back keeping the file's comments, key order and indentation, atomically.
    With ``dry_run`` the zones are only judged (any staff role; the file need not be writable)."""
    if user.role not in (STAFF_READERS if dry_run else ZONE_EDITORS):
        raise ForbiddenError(f"role {user.role.value!r} may not edit zones (admin only)")
    board = _board(request)
    try:
        entry = _file(request).replace_zones(stream_id, zones, dry_run=dry_run)
    except ZonesInvalidError as exc:
        return JSONResponse(status_code=422, content={"detail": exc.detail()})
    return _public(stream_id, entry, board.states().get(stream_id), board)
