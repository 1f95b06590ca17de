"""Open311 GeoReport v2 at ``/open311/v2`` (JSON and XML), so civic tools can read and file cases.

Reads need no credential (the public role); ``POST requests`` needs an ``api_key`` (form field,
or the ``X-API-Key`` header) of a role that may file reports. Errors are Open311's
``[{"code": n, "description": "..."}]`` (400 bad input, 403 bad key, 404 not found), in the
requested format. ``extensions=true`` adds ``extended_attributes`` and ``notes``; ``page`` and
``page_size`` page the request list (newest first).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.core.ingress import charge_key
from api.core.text import json_safe
from api.deps import DeskDep, OptionalPrincipal, PublicUser, SessionDep
from api.errors import (
    AuthenticationError,
    EvidenceFullError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnsupportedMediaError,
)
from api.models import Case, CaseEvent, CaseSource, Rule
from api.routes.limits import REPORTERS, form_limits
from api.schemas import Line, Text
from api.services.auth import STAFF_READERS, Principal
from api.services.cases import Report, check_photo, file_report
from api.services.open311 import SERVICES, is_visible, service_list, to_request, to_xml, visible_condition

Fmt = Annotated[Literal["json", "xml"], Path(description="response format")]
DEFAULT_DAYS = 90
MAX_PAGE = 1000


class Open311Error(BaseModel):
    code: int
    description: str


def _fmt(request: Request) -> str:
    return "xml" if request.url.path.endswith(".xml") else "json"


def render(fmt: str, root: str, item: str, rows: list[dict[str, Any]], status: int = 200) -> Response:
    if fmt == "xml":
        return Response(to_xml(root, item, rows), status_code=status, media_type="application/xml")
    return Response(_json(rows), status_code=status, media_type="application/json")


def _json(rows: list[dict[str, Any]] | dict[str, Any]) -> bytes:
    return json.dumps(json_safe(rows), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error(fmt: str, status: int, description: str) -> Response:
    return render(fmt, "errors", "error", [{"code": status, "description": description[:500]}], status)


def ingress_error(path: str, status: int, description: str) -> Response:
    """A refusal of the ingress guard (413, 415, 429, 507...) as an Open311 error; a missing or
    unknown credential is Open311's 403."""
    return error("xml" if path.endswith(".xml") else "json", 403 if status == 401 else status, description)


class Open311Route(APIRoute):
    """Every failure of an Open311 route answers in Open311's error format and status codes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            fmt = _fmt(request)
            try:
                return await original(request)
            except RequestValidationError as exc:
                parts = [
                    f"{'.'.join(str(x) for x in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()
                ]
                return error(fmt, 400, "; ".join(parts))
            except (AuthenticationError, ForbiddenError) as exc:
                return error(fmt, 403, str(exc))
            except NotFoundError as exc:
                return error(fmt, 404, str(exc))
            except PayloadTooLargeError as exc:
                return error(fmt, 413, str(exc))
            except UnsupportedMediaError as exc:
                return error(fmt, 415, str(exc))
            except EvidenceFullError as exc:
                return error(fmt, 507, str(exc))
            except RateLimitedError as exc:
                response = error(fmt, 429, str(exc))
                response.headers["Retry-After"] = str(exc.retry_after_s)
                return response
            except StarletteHTTPException as exc:  # e.g. a body FastAPI cannot parse
                code = exc.status_code if exc.status_code in (400, 403, 404) else 400
                return error(fmt, code, str(exc.detail))

        return handler


def _doc(model: Any) -> dict[int | str, dict[str, Any]]:
    xml = {"application/xml": {"schema": {"type": "string"}}}
    errors = {"model": list[Open311Error], "content": xml}
    return {200: {"model": model, "content": xml}, 400: errors, 403: errors, 404: errors}


router = APIRouter(prefix="/open311/v2", tags=["open311"], route_class=Open311Route)


class ServicePublic(BaseModel):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: str
    keywords: str
    group: str


class RequestPublic(BaseModel):
    service_request_id: str
    status: str
    status_notes: str | None
    service_name: str
    service_code: str
    description: str
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: str | None
    updated_datetime: str | None
    expected_datetime: str | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None
    extended_attributes: dict[str, Any] | None = None
    notes: list[dict[str, Any]] | None = None


class CreatedPublic(BaseModel):
    service_request_id: str
    service_notice: str | None
    account_id: str | None


@router.get("/services.{fmt}", response_class=Response, responses=_doc(list[ServicePublic]))
def services(fmt: Fmt, jurisdiction_id: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """The four violations, as Open311 services."""
    return render(fmt, "services", "service", service_list())


@router.get("/services/{service_code}.{fmt}", response_class=Response, responses=_doc(dict[str, Any]))
def service_definition(
    service_code: Annotated[str, Path(max_length=64)],
    fmt: Fmt,
    jurisdiction_id: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The service's definition: none of the four has extra attributes (``metadata`` is false)."""
    if service_code not in SERVICES:
        raise NotFoundError(f"service_code {service_code!r} not found; see services.{fmt}")
    definition = {"service_code": service_code, "attributes": []}
    if fmt == "xml":
        return Response(to_xml("service_definition", None, [definition]), media_type="application/xml")
    return Response(_json(definition), media_type="application/json")


def _media_base(request: Request, desk: DeskDep, user: Principal) -> str | None:
    if user.role not in STAFF_READERS:
        return None
    return (desk.settings.public_base_url or str(request.base_url)).rstrip("/")


def _render_cases(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: Principal,
    fmt: str,
    cases: list[Case],
    extensions: bool,
) -> Response:
    events: dict[int, list[CaseEvent]] = {}
    if extensions and cases:
        for e in session.scalars(
            select(CaseEvent).where(CaseEvent.case_id.in_([c.id for c in cases])).order_by(CaseEvent.id)
        ):
            events.setdefault(e.case_id, []).append(e)
    base, now, units = _media_base(request, desk, user), desk.clock(), desk.routing.units
    rows = [
        to_request(
            c,
            unit_name=units[c.unit].name if c.unit in units else None,
            media_base=base if user.may_see(c.unit) else None,  # a field unit: its own cases only
            extensions=extensions,
            events=events.get(c.id),
            now=now,
        )
        for c in cases
    ]
    return render(fmt, "service_requests", "request", rows)


@router.get("/requests.{fmt}", response_class=Response, responses=_doc(list[RequestPublic]))
def list_requests(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: PublicUser,
    fmt: Fmt,
    service_request_id: Annotated[str | None, Query(max_length=2000, pattern=r"^[0-9, ]*$")] = None,
    service_code: Annotated[str | None, Query(max_length=500)] = None,
    start_date: Annotated[datetime | None, Query()] = None,
    end_date: Annotated[datetime | None, Query()] = None,
    status: Annotated[str | None, Query(pattern=r"^(open|closed)(,(open|closed))*$")] = None,
    extensions: Annotated[bool, Query(description="add extended_attributes and notes")] = False,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
    jurisdiction_id: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Requests newest first; by default those of the last 90 days. Listing ids overrides the rest."""
    conditions: list[Any] = [visible_condition()]
    if service_request_id:
        ids = [int(p) for p in service_request_id.replace(" ", "").split(",") if p and len(p) < 10]
        conditions.append(Case.id.in_(ids))
    else:
        if service_code:
            conditions.append(Case.rule.in_([c.strip() for c in service_code.split(",")]))
        end = (end_date.replace(tzinfo=end_date.tzinfo or UTC)) if end_date else None
        start = (start_date.replace(tzinfo=start_date.tzinfo or UTC)) if start_date else None
        if start is None and end is None:
            start = desk.clock() - timedelta(days=DEFAULT_DAYS)
        if start is not None:
            conditions.append(Case.first_seen >= start)
        if end is not None:
            conditions.append(Case.first_seen <= end)
        if status and set(status.split(",")) != {"open", "closed"}:
            closed = Case.status.in_(("closed", "rejected", "merged"))
            conditions.append(closed if status == "closed" else ~closed)
    cases = session.scalars(
        select(Case)
        .where(*conditions)
        .order_by(Case.first_seen.desc(), Case.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return _render_cases(request, session, desk, user, fmt, list(cases), extensions)


@router.get(
    "/requests/{service_request_id}.{fmt}", response_class=Response, responses=_doc(list[RequestPublic])
)
def get_request(
    request: Request,
    session: SessionDep,
    desk: DeskDep,
    user: PublicUser,
    service_request_id: Annotated[str, Path(max_length=20)],
    fmt: Fmt,
    extensions: bool = False,
    jurisdiction_id: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    case = (
        session.get(Case, int(service_request_id))
        if service_request_id.isdigit() and len(service_request_id) < 10
        else None
    )
    if case is None or not is_visible(case):
        raise NotFoundError(f"service_request_id {service_request_id!r} not found")
    return _render_cases(request, session, desk, user, fmt, [case], extensions)


@router.get("/tokens/{token}.{fmt}", response_class=Response, responses=_doc(list[dict[str, Any]]))
def get_token(token: Annotated[str, Path(max_length=200)], fmt: Fmt) -> Response:
    """Requests are filed at once (the POST answers with the id), so no token is ever pending."""
    raise NotFoundError(f"token {token!r} not found: this server answers POST requests with the id at once")


@router.post(
    "/requests.{fmt}",
    response_class=Response,
    status_code=201,
    responses={
        **_doc(list[CreatedPublic]),
        201: {"model": list[CreatedPublic], "content": {"application/xml": {"schema": {"type": "string"}}}},
        **{code: _doc(None)[400] for code in (413, 415, 429, 507)},  # the ingress guard's refusals
    },
    form_limits=form_limits(files=1, fields=20),
)
def post_request(
    session: SessionDep,
    desk: DeskDep,
    principal: OptionalPrincipal,
    request: Request,
    fmt: Fmt,
    service_code: Annotated[str, Form(max_length=64)],
    api_key: Annotated[str | None, Form(max_length=256)] = None,
    lat: Annotated[float | None, Form(ge=-90, le=90)] = None,
    long: Annotated[float | None, Form(ge=-180, le=180)] = None,
    address_string: Annotated[Line | None, Form(max_length=500)] = None,
    address_id: Annotated[Line | None, Form(max_length=200)] = None,
    description: Annotated[Text | None, Form(max_length=4000)] = None,
    media_url: Annotated[Line | None, Form(max_length=2000)] = None,
    email: Annotated[Line | None, Form(max_length=200)] = None,
    first_name: Annotated[Line | None, Form(max_length=100)] = None,
    last_name: Annotated[Line | None, Form(max_length=100)] = None,
    phone: Annotated[Line | None, Form(max_length=50)] = None,
    device_id: Annotated[Line | None, Form(max_length=200)] = None,
    account_id: Annotated[Line | None, Form(max_length=200)] = None,
    jurisdiction_id: Annotated[Line | None, Form(max_length=200)] = None,
    media: Annotated[UploadFile | None, File(description="extension: the photo itself (JPEG)")] = None,
) -> Response:
    """File a request; it becomes a citizen report (a candidate case) on the same lifecycle."""
    if api_key:
        principal = request.app.state.auth.principal_for_key(api_key)
        if principal is None:
            raise ForbiddenError("api_key not valid")
    if principal is None:
        raise ForbiddenError("api_key is required to file a request")
    if principal.role not in REPORTERS:
        raise ForbiddenError(f"the api_key's role {principal.role.value!r} may not file requests")
    if api_key:  # a key in the form: the ingress guard could not charge it before the body
        size = int(request.headers.get("content-length") or 0) or None
        charge_key(request.app.state.limiter, request.app.state.report_quotas, principal.name, size)
    if service_code not in SERVICES:
        raise NotFoundError(f"service_code {service_code!r} not found")
    if (lat is None) != (long is None):
        return error(fmt, 400, "lat and long must be given together")
    if lat is None and not address_string and not address_id:
        return error(fmt, 400, "a location is required: lat and long, address_string or address_id")
    photo = None
    if media is not None:
        photo = media.file.read(desk.settings.report_max_photo_bytes + 1)
        check_photo(photo, desk.settings.report_max_photo_bytes)
    who = " ".join(x for x in (first_name, last_name, email, phone) if x) or None
    text = (description or "").strip() or SERVICES[service_code]["service_name"]
    if media_url:
        text += f"\n(media: {media_url})"
    report = Report(
        rule=Rule(service_code),
        lat=lat,
        lon=long,
        description=text,
        photo=photo,
        source=CaseSource.citizen,
        address=address_string or address_id,
        reporter=who,
    )
    case = file_report(session, desk, report, principal)
    notice = "thank you; a duplicate of an open request was merged into it" if case.merged_into_id else None
    created = [{"service_request_id": str(case.id), "service_notice": notice, "account_id": account_id}]
    return render(fmt, "service_requests", "request", created, status=201)
