"""Response documentation shared by the routes (so the OpenAPI names every status they answer)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.core.text import json_safe
from api.schemas import ConflictPublic, ErrorPublic

Responses = dict[int | str, dict[str, Any]]

AUTH_ERRORS: Responses = {
    401: {"model": ErrorPublic, "description": "no credential, or an unknown or expired one"},
    403: {"model": ErrorPublic, "description": "the caller's role or unit may not do this"},
}
NOT_FOUND: Responses = {404: {"model": ErrorPublic, "description": "no such case (or image)"}}
CONFLICT: Responses = {
    409: {
        "model": ConflictPublic,
        "description": "not allowed from the case's status; names the allowed actions",
    }
}
UNPROCESSABLE: Responses = {
    400: {"model": ErrorPublic, "description": "the body cannot be parsed (not JSON, broken multipart)"},
    422: {"description": "invalid input, or an impossible request (unknown unit...)"},
}
BODY_ERRORS: Responses = {  # answered by the ingress guard before the body is read (api/core/ingress.py)
    413: {"model": ErrorPublic, "description": "the body (or the photo) is over the route's size limit"},
    415: {"model": ErrorPublic, "description": "the body's Content-Type is not one the route takes"},
}
QUOTA_ERRORS: Responses = {
    429: {"model": ErrorPublic, "description": "over the quota of the key or the address; see Retry-After"},
}
UPLOAD_ERRORS: Responses = {
    507: {"model": ErrorPublic, "description": "the evidence store is at its upload floor; try later"},
}


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, with any lone surrogate the errors echo from the body made U+FFFD (a JSON
    body may carry ``"\\ud800"``; UTF-8 cannot encode it, and the answer would be a 500)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else [{"msg": str(exc)}]
    return JSONResponse(status_code=422, content={"detail": json_safe(jsonable_encoder(errors))})
