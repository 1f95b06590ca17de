"""Request dependencies: ``SessionDep`` (one session per request), settings, stores, the desk
and the caller (``CurrentUser`` needs a credential; ``CaseReader`` may read /cases)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

from api.core.config import Settings
from api.core.evidence import EvidenceStore
from api.errors import AuthenticationError, ForbiddenError
from api.services.auth import ANONYMOUS, ANONYMOUS_READER, STAFF_READERS, Authenticator, Principal
from api.services.lifecycle import Desk

api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (api/AUTH.md)")
bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token", auto_error=False, description="username = key name, password = the API key"
)


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        yield session


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_evidence_store(request: Request) -> EvidenceStore:
    store: EvidenceStore = request.app.state.evidence_store
    return store


def get_desk(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


def optional_principal(
    request: Request,
    api_key: Annotated[str | None, Security(api_key_scheme)],
    token: Annotated[str | None, Security(bearer_scheme)],
) -> Principal | None:
    """The caller, or None without a credential; a credential the API does not know is a 401."""
    auth: Authenticator = request.app.state.auth
    return auth.resolve(api_key, token)


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


def current_user(principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise AuthenticationError("this needs a credential: an X-API-Key header or a bearer token")
    return principal


def public_user(principal: OptionalPrincipal) -> Principal:
    """Open311 reads: anyone; without a credential, the public role."""
    return principal if principal is not None else ANONYMOUS


def case_reader(request: Request, principal: OptionalPrincipal) -> Principal:
    if principal is None:
        auth: Authenticator = request.app.state.auth
        if auth.anonymous_read:
            return ANONYMOUS_READER
        raise AuthenticationError("reading cases needs a credential: an X-API-Key header or a bearer token")
    if principal.role not in STAFF_READERS:
        raise ForbiddenError(f"role {principal.role.value!r} may not read cases (Open311 is at /open311/v2)")
    return principal


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EvidenceStoreDep = Annotated[EvidenceStore, Depends(get_evidence_store)]
DeskDep = Annotated[Desk, Depends(get_desk)]
CurrentUser = Annotated[Principal, Depends(current_user)]
PublicUser = Annotated[Principal, Depends(public_user)]
CaseReader = Annotated[Principal, Depends(case_reader)]
