"""The case API's own exceptions: one small hierarchy, messages a person can act on."""

from __future__ import annotations

import errno


class CityWatchAPIError(Exception):
    """Base of every error the case API raises on purpose."""


class ConfigError(CityWatchAPIError):
    """A setting is unusable (bad database URL, unwritable evidence directory...)."""


class MigrationError(CityWatchAPIError):
    """The database schema could not be brought to the current revision."""


class NotFoundError(CityWatchAPIError):
    """A requested resource does not exist; the REST layer answers 404."""


class CaseNotFoundError(NotFoundError):
    def __init__(self, case_id: int) -> None:
        super().__init__(f"case {case_id} not found")
        self.case_id = case_id


class EvidenceNotFoundError(NotFoundError):
    """The case has no evidence image, or its file is missing from the evidence store."""


class EvidenceGoneError(EvidenceNotFoundError):
    """The image was deleted by retention to keep the evidence store under its budget: 410 Gone."""


class InvalidDigestError(CityWatchAPIError):
    """A string that should be a lowercase hex sha256 is not one; nothing touches the filesystem."""


class IngestError(CityWatchAPIError):
    """Base of the ingest errors."""


class InvalidEventError(IngestError):
    """A message cannot become a case; ``reason`` ends up in the dead-letter table."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IngestUnavailableError(IngestError):
    """A transient failure (database or evidence store unreachable): retry the same message later."""


class AuthenticationError(CityWatchAPIError):
    """No credential, or one the API does not know; the REST layer answers 401."""


class ForbiddenError(CityWatchAPIError):
    """The caller's role (or unit) may not do this; the REST layer answers 403."""


class ConflictError(CityWatchAPIError):
    """The request does not fit the case's current state; the REST layer answers 409."""


class IllegalTransitionError(ConflictError):
    """An action the lifecycle does not allow from the case's status; names the allowed ones."""

    def __init__(self, action: str, status: str, allowed: list[str]) -> None:
        names = ", ".join(allowed) if allowed else "none (the case has ended)"
        super().__init__(f"cannot {action!r} a case in status {status!r}; allowed from {status!r}: {names}")
        self.action = action
        self.status = status
        self.allowed = allowed


class InvalidRequestError(CityWatchAPIError):
    """A well-formed request that asks for something impossible (unknown unit...); answers 422."""


class PayloadTooLargeError(CityWatchAPIError):
    """An upload over the size limit; answers 413."""


class UnsupportedMediaError(CityWatchAPIError):
    """An upload of a type the API does not take; answers 415."""


class RateLimitedError(CityWatchAPIError):
    """A caller (key or client address) is over its quota; answers 429 with ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EvidenceFullError(CityWatchAPIError, OSError):
    """The evidence store's free space is at its floor; answers 507 to an upload.

    An ``OSError`` (ENOSPC) as well, so the ingest treats it as the store refusing a write:
    the message is retried once there is room again, never lost."""

    def __init__(self, message: str) -> None:
        OSError.__init__(self, errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message
