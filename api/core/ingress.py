"""``IngressGuard``: a pure ASGI middleware that decides about a request before its body is read.

For the route a request is for (its ``RoutePolicy``), in this order and before one byte of the
body is read: dev mode answers loopback clients only (403); a declared ``Content-Length`` over
the route's limit is a 413; a body of a type the route does not take is a 415; the client
address's quota (429 with ``Retry-After``); the credential in the headers, where the route needs
one (401 / 403 for a role that may not use the route); the credential's quota (429); an upload
that cannot fit above the evidence store's upload floor (507). Only then does the route see the
request, and the body's bytes are still counted as they stream (chunked bodies have no length):
past the limit the request ends in a 413 (over a byte quota, a 429), whatever the route was
doing with it. So an anonymous 50 MB upload is refused from its headers: nothing is spooled.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.evidence import EvidenceStore
from api.core.ratelimit import Charge, Quota, RateLimiter, client_subject
from api.errors import AuthenticationError, CityWatchAPIError, EvidenceFullError, RateLimitedError
from api.services.auth import Authenticator, Principal, Role

Renderer = Callable[[str, int, str], Response]
"""(request path, status, message) -> the error response in the route's own format."""


def json_error(_path: str, status: int, message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=status)


@dataclass(frozen=True, slots=True)
class Quotas:
    """A group of quotas (``reports``, ``token``): requests and bytes, per key and per address."""

    name: str
    per_key: Quota | None = None
    per_address: Quota | None = None
    bytes_per_key: Quota | None = None
    bytes_per_address: Quota | None = None

    def address_charges(self, subject: str, size: int | None) -> list[Charge]:
        charges = [Charge(f"{self.name}:address", subject, self.per_address)]
        if size:
            charges.append(Charge(f"{self.name}:address-bytes", subject, self.bytes_per_address, size))
        return charges

    def key_charges(self, name: str, size: int | None) -> list[Charge]:
        charges = [Charge(f"{self.name}:key", name, self.per_key)]
        if size:
            charges.append(Charge(f"{self.name}:key-bytes", name, self.bytes_per_key, size))
        return charges


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    action: str  # what the route does, for messages: "file reports"
    method: str
    path: str  # a regular expression for the whole path
    max_bytes: int
    media_types: frozenset[str] | None = None  # None: any type
    credential: bool = False  # a credential in the headers is needed before the body is read
    roles: frozenset[Role] | None = None  # and it must have one of these roles
    quotas: Quotas | None = None
    upload: bool = False  # the body carries a photo for the evidence store (upload floor)
    render: Renderer = json_error
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.path))

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and self.pattern.fullmatch(path) is not None


@dataclass(slots=True)
class _Refusal:
    status: int
    message: str
    retry_after: int | None = None


class _BodyRefusedError(CityWatchAPIError):
    """Raised from ``receive`` when the streamed body crosses a limit; the guard answers."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _content_length(headers: Headers) -> int | None:
    values = headers.getlist("content-length")
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        raise ValueError("Content-Length is not one whole number")
    return int(values[0])


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _credential(headers: Headers) -> tuple[str | None, str | None]:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return headers.get("x-api-key") or None, (token.strip() or None) if scheme.lower() == "bearer" else None


class IngressGuard:
    """See the module docstring. ``policies`` are tried in order; ``default`` covers the rest."""

    def __init__(
        self, app: ASGIApp, *, policies: Sequence[RoutePolicy], default: RoutePolicy, limiter: RateLimiter
    ) -> None:
        self.app = app
        self.policies = tuple(policies)
        self.default = default
        self.limiter = limiter

    def policy_for(self, method: str, path: str) -> RoutePolicy:
        return next((p for p in self.policies if p.matches(method, path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        policy = self.policy_for(scope["method"], path)
        headers = Headers(scope=scope)
        try:
            length = _content_length(headers)
            checked = self._check(scope, policy, headers, length)
        except ValueError as exc:
            checked = _Refusal(400, str(exc))
        if isinstance(checked, _Refusal):
            await self._answer(scope, receive, send, policy, checked)
            return
        await self._forward(scope, receive, send, policy, length, checked)

    def _check(
        self, scope: Scope, policy: RoutePolicy, headers: Headers, length: int | None
    ) -> _Refusal | Principal | None:
        """A refusal, or the caller (None: no credential in the headers)."""
        state = scope["app"].state
        auth: Authenticator | None = getattr(state, "auth", None)
        if auth is None:
            return _Refusal(503, "the API is starting; try again in a moment")
        client = scope.get("client")
        host = str(client[0]) if client else "local"
        if auth.dev_mode and client and not is_loopback(host):
            return _Refusal(
                403, "the API runs in dev mode (CITYWATCH_DEV_MODE): it answers loopback clients only"
            )
        where = f"{scope['method']} {scope['path']}"
        if length is not None and length > policy.max_bytes:
            return _Refusal(
                413, f"the body of {length} bytes is over the limit of {policy.max_bytes} for {where}"
            )
        has_body = bool(length) or (length is None and "transfer-encoding" in headers)
        media = _media_type(headers)
        if policy.media_types is not None and has_body and media not in policy.media_types:
            accepted = ", ".join(sorted(policy.media_types))
            return _Refusal(415, f"Content-Type {media or 'none'!r} is not taken by {where}; send {accepted}")
        if policy.quotas is not None:
            wait = self.limiter.take(policy.quotas.address_charges(client_subject(host), length))
            if wait:
                return _Refusal(429, f"too many requests to {where} from this address; retry later", wait)
        principal = self._principal(auth, headers, policy)
        if isinstance(principal, _Refusal):
            return principal
        if principal is not None and policy.quotas is not None:
            wait = self.limiter.take(policy.quotas.key_charges(principal.name, length))
            if wait:
                return _Refusal(429, f"the credential {principal.name!r} is over its quota for {where}", wait)
        store: EvidenceStore | None = getattr(state, "evidence_store", None)
        if policy.upload and store is not None and length and length > state.settings.form_overhead_bytes:
            try:
                store.check_room(length, upload=True)
            except EvidenceFullError as exc:
                return _Refusal(507, str(exc))
        return principal

    @staticmethod
    def _principal(auth: Authenticator, headers: Headers, policy: RoutePolicy) -> Principal | _Refusal | None:
        api_key, token = _credential(headers)
        try:
            principal = auth.resolve(api_key, token)
        except AuthenticationError as exc:
            return _Refusal(401, str(exc))
        if principal is None:
            if policy.credential:
                return _Refusal(401, "this needs a credential: an X-API-Key header or a bearer token")
            return None
        if policy.roles is not None and principal.role not in policy.roles:
            return _Refusal(403, f"role {principal.role.value!r} may not {policy.action}")
        return principal

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        policy: RoutePolicy,
        length: int | None,
        principal: Principal | None,
    ) -> None:
        received = 0
        refusal: _Refusal | None = None
        started = replaced = False
        subject = client_subject(str(scope["client"][0])) if scope.get("client") else "local"
        where = f"{scope['method']} {scope['path']}"

        async def guarded_receive() -> Message:
            nonlocal received, refusal
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = len(message.get("body", b""))
            received += chunk
            if received > policy.max_bytes:
                refusal = _Refusal(413, f"the body is over the limit of {policy.max_bytes} bytes for {where}")
                raise _BodyRefusedError
            if length is None and chunk and policy.quotas is not None:  # chunked: bytes as they come
                charges = policy.quotas.address_charges(subject, chunk)[1:]
                if principal is not None:
                    charges += policy.quotas.key_charges(principal.name, chunk)[1:]
                wait = self.limiter.take(charges)
                if wait:
                    refusal = _Refusal(429, f"over the upload quota for {where}; retry later", wait)
                    raise _BodyRefusedError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                if refusal is not None:  # the route answered after the body was refused: our answer wins
                    replaced = True
                    await self._answer(scope, receive, send, policy, refusal)
                    return
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
            if not started:
                await self._answer(scope, receive, send, policy, refusal)

    @staticmethod
    async def _answer(
        scope: Scope, receive: Receive, send: Send, policy: RoutePolicy, refusal: _Refusal
    ) -> None:
        response = policy.render(scope["path"], refusal.status, refusal.message)
        if refusal.retry_after is not None:
            response.headers["Retry-After"] = str(refusal.retry_after)
        if refusal.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def charge_key(limiter: RateLimiter, quotas: Quotas, name: str, size: int | None) -> None:
    """Charge a credential the route found in the body (Open311's ``api_key`` form field):
    raises ``RateLimitedError`` over its quota."""
    wait = limiter.take(quotas.key_charges(name, size))
    if wait:
        raise RateLimitedError(f"the credential {name!r} is over its quota; retry later", wait)
