"""Response documentation shared by the routes (so the OpenAPI names every status they answer)."""

from __future__ import annotations

from typing import Any

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
