"""``POST /reports``: citizen reports (随手拍) and 12319 hotline reports, with a photo."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile, status

from api.deps import CurrentUser, DeskDep, SessionDep
from api.errors import ForbiddenError
from api.models import CaseSource, Rule
from api.routes.common import AUTH_ERRORS, QUOTA_ERRORS, UNPROCESSABLE, UPLOAD_ERRORS
from api.routes.limits import REPORTERS, form_limits
from api.schemas import CasePublic, ErrorPublic, Line, Text
from api.services.cases import Report, file_report

router = APIRouter(tags=["reports"])


@router.post(
    "/reports",
    response_model=CasePublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        **AUTH_ERRORS,
        **UNPROCESSABLE,
        413: {"model": ErrorPublic, "description": "photo or body over the size limit"},
        415: {"model": ErrorPublic, "description": "photo not a JPEG, or the body not multipart/form-data"},
        **QUOTA_ERRORS,
        **UPLOAD_ERRORS,
    },
    form_limits=form_limits(files=1, fields=20),
)
def create_report(
    session: SessionDep,
    desk: DeskDep,
    user: CurrentUser,
    rule: Annotated[Rule, Form(description="what is wrong (the four violations)")],
    lat: Annotated[float, Form(ge=-90, le=90, description="WGS84")],
    lon: Annotated[float, Form(ge=-180, le=180, description="WGS84")],
    description: Annotated[
        Text,
        Form(min_length=1, max_length=4000, description="plain text; HTML and control characters removed"),
    ],
    photo: Annotated[UploadFile, File(description="JPEG, at most CITYWATCH_REPORT_MAX_PHOTO_BYTES")],
    source: Annotated[
        Literal["citizen", "hotline"], Form(description="随手拍 app or 12319 hotline")
    ] = "citizen",
    address: Annotated[Line | None, Form(max_length=500)] = None,
    grid: Annotated[Line | None, Form(min_length=1, max_length=64)] = None,
    road: Annotated[Line | None, Form(min_length=1, max_length=128)] = None,
    reporter: Annotated[Line | None, Form(max_length=200, description="contact; shown to staff only")] = None,
) -> CasePublic:
    """A report becomes a ``candidate`` case on the same lifecycle (duplicates merged as for cameras).
    Needs a credential: the public app's key (role public), or a reviewer / dispatcher taking a call."""
    if user.role not in REPORTERS:
        raise ForbiddenError(f"role {user.role.value!r} may not file reports")
    limit = desk.settings.report_max_photo_bytes
    data = photo.file.read(limit + 1)
    report = Report(
        rule=rule,
        lat=lat,
        lon=lon,
        description=description,
        photo=data,
        source=CaseSource(source),
        address=address,
        grid=grid,
        road=road,
        reporter=reporter,
    )
    return CasePublic.of(file_report(session, desk, report, user), desk.clock())
