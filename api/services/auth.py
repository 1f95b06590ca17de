"""Credentials and roles (api/AUTH.md).

A credential is an API key (``X-API-Key`` header, or ``api_key`` in an Open311 POST) or an OAuth2
bearer token that ``POST /auth/token`` issues for an API key (client credentials or password
grant). Either one resolves to a ``Principal``: a name, a role and, for field units, the unit.
Keys are compared by their sha256 in constant time; the key file may hold only digests.
Tokens are HS256 JWTs signed with ``token_secret`` (stdlib ``hmac``; no extra dependency).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from api.core.config import Settings, describe
from api.errors import AuthenticationError, ConfigError

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    admin = "admin"
    reviewer = "reviewer"
    dispatcher = "dispatcher"
    field_unit = "field_unit"
    detector = "detector"  # service account: ingest and re-check answers only
    public = "public"  # Open311 reads and citizen reports
    system = "system"  # the API itself (dedup, re-check requests); never a credential's role


STAFF_READERS = frozenset({Role.admin, Role.reviewer, Role.dispatcher, Role.field_unit})
"""Roles that may read ``/cases``; a field unit only its own unit's cases."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    unit: str | None = None
    via: str = "api_key"  # api_key | token | anonymous

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.name}"

    def may_see(self, case_unit: str | None) -> bool:
        if self.via == "anonymous-read":
            return True  # CITYWATCH_ANONYMOUS_READ=true
        if self.role is Role.field_unit:
            return case_unit is not None and case_unit == self.unit
        return self.role in STAFF_READERS


ANONYMOUS = Principal(name="anonymous", role=Role.public, via="anonymous")
ANONYMOUS_READER = Principal(name="anonymous", role=Role.public, via="anonymous-read")
"""A caller without a credential where anonymous reads of /cases are allowed (CITYWATCH_ANONYMOUS_READ)."""
SYSTEM = Principal(name="citywatch", role=Role.system, via="internal")


class ApiKeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role
    unit: str | None = Field(default=None, min_length=1, max_length=64)
    key: str | None = Field(default=None, min_length=16, max_length=256)
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _check(self) -> ApiKeyEntry:
        if self.role is Role.system:
            raise ValueError("role 'system' is the API's own; give a key another role")
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key and key_sha256")
        if (self.role is Role.field_unit) != (self.unit is not None):
            raise ValueError("a field_unit key needs its unit, and only field_unit keys have one")
        return self

    @property
    def digest(self) -> str:
        return self.key_sha256 or hashlib.sha256((self.key or "").encode()).hexdigest()


DEV_UNIT = "hgc-squad"
DEV_KEYS: tuple[ApiKeyEntry, ...] = tuple(
    ApiKeyEntry(name=f"dev-{name}", role=role, unit=unit, key=f"citywatch-dev-{name}-key")
    for name, role, unit in (
        ("admin", Role.admin, None),
        ("reviewer", Role.reviewer, None),
        ("dispatcher", Role.dispatcher, None),
        ("unit", Role.field_unit, DEV_UNIT),
        ("detector", Role.detector, None),
        ("public", Role.public, None),
    )
)
"""The documented development keys, used only in dev mode (and printed then)."""

NO_KEYS_MESSAGE = (
    "no API keys configured: set CITYWATCH_API_KEYS (a JSON list) or CITYWATCH_API_KEYS_FILE (a YAML "
    "file) as api/AUTH.md shows; to try the API on this machine with the documented dev keys, set "
    "CITYWATCH_DEV_MODE=true (or run `citywatch api --dev`), which listens on loopback only"
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Resolves API keys and bearer tokens; built once per app from the settings."""

    def __init__(
        self,
        entries: list[ApiKeyEntry],
        *,
        dev_mode: bool,
        anonymous_read: bool,
        secret: bytes,
        token_ttl_s: int,
    ) -> None:
        names = [e.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"API key names must be unique; repeated: {', '.join(dupes)}")
        self.entries = entries
        self.dev_mode = dev_mode
        self.anonymous_read = anonymous_read
        self._by_digest = {e.digest: e for e in entries}
        self._by_name = {e.name: e for e in entries}
        self._secret = secret
        self.token_ttl_s = token_ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        raw: list[Any] = []
        if settings.api_keys is not None:
            raw.extend(settings.api_keys)
        if settings.api_keys_file is not None:
            raw.extend(_read_key_file(settings.api_keys_file))
        configured = settings.api_keys is not None or settings.api_keys_file is not None
        dev_mode = settings.dev_mode
        if dev_mode and configured:
            raise ConfigError(
                "CITYWATCH_DEV_MODE is on and API keys are configured too: dev mode accepts only the "
                "documented dev keys, so unset CITYWATCH_DEV_MODE (or the keys) to say which is meant"
            )
        if not dev_mode and not configured:
            raise ConfigError(NO_KEYS_MESSAGE)
        entries = list(DEV_KEYS) if dev_mode else [_entry(i, r) for i, r in enumerate(raw, 1)]
        if not entries:
            raise ConfigError(f"the API key configuration lists no key. {NO_KEYS_MESSAGE}")
        anonymous = settings.anonymous_read
        secret_text = settings.token_secret.get_secret_value() if settings.token_secret else None
        secret = secret_text.encode() if secret_text else secrets.token_bytes(32)
        return cls(
            entries,
            dev_mode=dev_mode,
            anonymous_read=anonymous,
            secret=secret,
            token_ttl_s=settings.token_ttl_s,
        )

    def announce(self) -> None:
        if self.dev_mode:
            lines = "\n".join(
                f"    {e.role.value:<11} {e.key}" + (f"  (unit {e.unit})" if e.unit else "")
                for e in self.entries
            )
            log.warning(
                "DEV MODE (CITYWATCH_DEV_MODE): the documented dev keys are in force (send one as "
                "X-API-Key), for loopback clients only; anonymous reads of /cases %s:\n%s",
                "allowed" if self.anonymous_read else "refused",
                lines,
            )
        else:
            log.info("auth: %d API keys", len(self.entries))
        if self.anonymous_read:
            log.warning("CITYWATCH_ANONYMOUS_READ: /cases and its evidence may be read without a credential")

    def resolve(self, api_key: str | None, token: str | None) -> Principal | None:
        """The caller of a request (an ``X-API-Key`` first, else a bearer token), None without a
        credential; a credential the API does not know raises ``AuthenticationError``."""
        if api_key:
            principal = self.principal_for_key(api_key)
            if principal is None:
                raise AuthenticationError("unknown API key")
            return principal
        if token:
            principal = self.principal_for_token(token)
            if principal is None:
                raise AuthenticationError(
                    "invalid or expired bearer token; get a new one from POST /auth/token"
                )
            return principal
        return None

    def principal_for_key(self, key: str) -> Principal | None:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        for known, entry in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return Principal(entry.name, entry.role, entry.unit, via="api_key")
        return None

    # -- OAuth2 bearer tokens (HS256 JWT) --------------------------------------------------------
    def issue_token(self, principal: Principal, now: float | None = None) -> tuple[str, int]:
        issued = int(time.time() if now is None else now)
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        claims = {
            "sub": principal.name,
            "role": principal.role.value,
            "unit": principal.unit,
            "iat": issued,
            "exp": issued + self.token_ttl_s,
        }
        body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64url(signature)}", self.token_ttl_s

    def principal_for_token(self, token: str, now: float | None = None) -> Principal | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, body, signature = parts
        expected = hmac.new(self._secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_b64url_decode(signature), expected):
                return None
            claims = json.loads(_b64url_decode(body))
        except (ValueError, TypeError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            return None
        if claims["exp"] <= (time.time() if now is None else now):
            return None
        entry = self._by_name.get(str(claims.get("sub")))
        if entry is None or entry.role.value != claims.get("role"):
            return None  # the key was removed or changed role since the token was issued
        return Principal(entry.name, entry.role, entry.unit, via="token")


def _entry(number: int, raw: Any) -> ApiKeyEntry:
    try:
        return ApiKeyEntry.model_validate(raw)
    except ValidationError as exc:
        name = raw.get("name") if isinstance(raw, dict) else None
        which = f"API key entry {number}" + (f" ({name!r})" if isinstance(name, str) else "")
        # the values are left out of the message: they may be keys
        raise ConfigError(f"API key configuration is invalid: {which}: {describe(exc)}") from None


def _read_key_file(path: Path) -> list[Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"CITYWATCH_API_KEYS_FILE {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"CITYWATCH_API_KEYS_FILE {path} is not valid YAML: {exc}") from exc
    keys = data.get("api_keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise ConfigError(f"CITYWATCH_API_KEYS_FILE {path} needs a top-level `api_keys:` list")
    return keys
