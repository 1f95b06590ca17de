"""``/auth``: OAuth2 bearer tokens for API keys, and who the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from api.deps import CurrentUser
from api.routes.common import AUTH_ERRORS, BODY_ERRORS, QUOTA_ERRORS
from api.routes.limits import form_limits
from api.schemas import PrincipalPublic, TokenPublic
from api.services.auth import Authenticator

router = APIRouter(prefix="/auth", tags=["auth"])


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@router.post(
    "/token",
    response_model=TokenPublic,
    responses={
        400: {"description": "OAuth2 error (RFC 6749 §5.2)"},
        401: {"description": "invalid_client"},
        **BODY_ERRORS,
        **QUOTA_ERRORS,
    },
    form_limits=form_limits(files=0, fields=10),
)
def issue_token(
    request: Request,
    grant_type: Annotated[str, Form(max_length=64)],
    username: Annotated[str | None, Form(max_length=256)] = None,
    password: Annotated[str | None, Form(max_length=256)] = None,
    client_id: Annotated[str | None, Form(max_length=256)] = None,
    client_secret: Annotated[str | None, Form(max_length=256)] = None,
) -> TokenPublic | JSONResponse:
    """Trade an API key for a bearer token: ``grant_type=client_credentials`` with the key as
    ``client_secret``, or ``grant_type=password`` with the key as ``password`` (the docs' Authorize
    button). The name (``client_id`` / ``username``), when given, must be the key's name."""
    auth: Authenticator = request.app.state.auth
    if grant_type == "client_credentials":
        name, secret = client_id, client_secret
    elif grant_type == "password":
        name, secret = username, password
    else:
        return _oauth_error("unsupported_grant_type", "use client_credentials or password")
    if not secret:
        return _oauth_error("invalid_request", "the API key goes in client_secret (or password)")
    principal = auth.principal_for_key(secret)
    if principal is None or (name and name != principal.name):
        return _oauth_error("invalid_client", "unknown API key, or a name that is not the key's", 401)
    token, ttl = auth.issue_token(principal)
    return TokenPublic(access_token=token, expires_in=ttl)


@router.get("/me", response_model=PrincipalPublic, responses=AUTH_ERRORS)
def who_am_i(user: CurrentUser) -> PrincipalPublic:
    return PrincipalPublic(name=user.name, role=user.role.value, unit=user.unit, via=user.via)
