"""What each route takes before its body is read (``api.core.ingress.IngressGuard``): size,
content types, the credential and role needed up front, its quotas, the upload floor.

- ``POST /reports``: photo limit + form overhead, multipart; a reporter's credential; report quotas.
- ``POST /open311/v2/requests.*``: photo limit + form overhead, multipart or urlencoded; report
  quotas (the key may be in the form: then the route charges it).
- ``POST /cases/{id}/dispose``: photo limit + form overhead, multipart or urlencoded; an admin or
  field unit credential.
- ``POST /auth/token``: 16 KiB, urlencoded or multipart; the token quota per address.
- ``POST /recheck-results/{stream}``: the ingest payload limit, JSON; a detector or admin credential.
- ``POST /cases/{id}/correct``: ``json_max_bytes``, JSON; a reviewer, dispatcher or admin credential.
- ``POST /cases/{id}/{action}``: ``json_max_bytes``, JSON; a credential.
- ``GET /reviews``: ``json_max_bytes``; a reviewer, dispatcher or admin credential.
- ``GET /metrics``: ``json_max_bytes``; a credential, if any, of staff (the route refuses an anonymous
  caller that is not on loopback).
- ``GET /live``: ``json_max_bytes``; a staff credential (admin, reviewer, dispatcher, field unit).
- ``GET /models``: ``json_max_bytes``; a reviewer, dispatcher or admin credential.
- ``GET /cases/{id}/actions``: ``json_max_bytes``; the route checks the reader (anonymous reads).
- ``GET /console/...``: ``json_max_bytes``; no credential (static files, no data).
- ``GET /streams``, ``GET /streams/{id}/snapshot``: ``json_max_bytes``; a staff credential.
- ``PUT /streams/{id}/zones``: ``json_max_bytes``, JSON; a staff credential (the route: an admin's, or
  any staff's with ``?dry_run=true``, which only judges the zones).
- anything else: ``json_max_bytes``, any type.

The form routes also take one file at most (``FORM_LIMITS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from api.core.config import Settings
from api.core.ingress import Quotas, RoutePolicy
from api.services.auth import STAFF_READERS, Role
from api.services.reviews import CORRECTORS, REVIEW_READERS

FORM = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
MULTIPART = frozenset({"multipart/form-data"})
JSON = frozenset({"application/json"})
TOKEN_MAX_BYTES = 16 * 1024
TEXT_PART_MAX_BYTES = 32 * 1024  # a 4,000-character description in any UTF-8 fits

REPORTERS = frozenset({Role.public, Role.reviewer, Role.dispatcher, Role.admin})
DISPOSERS = frozenset({Role.admin, Role.field_unit})
RECHECK_ANSWERERS = frozenset({Role.detector, Role.admin})


def form_limits(files: int, fields: int) -> Any:
    """FastAPI's ``form_limits`` of a route: ``files`` files, ``fields`` text fields at most."""
    return {"max_files": files, "max_fields": fields, "max_part_size": TEXT_PART_MAX_BYTES}


def report_quotas(settings: Settings) -> Quotas:
    return Quotas(
        "reports",
        per_key=settings.quota("rate_reports_per_key"),
        per_address=settings.quota("rate_reports_per_address"),
        bytes_per_key=settings.quota("rate_report_bytes_per_key"),
        bytes_per_address=settings.quota("rate_report_bytes_per_address"),
    )


def build_policies(
    settings: Settings, *, open311_error: Callable[[str, int, str], Response]
) -> tuple[list[RoutePolicy], RoutePolicy]:
    """The route policies and the default one, from the settings."""
    upload = settings.upload_max_bytes
    reports = report_quotas(settings)
    token = Quotas("token", per_address=settings.quota("rate_token_per_address"))
    policies = [
        RoutePolicy(
            "file reports",
            "POST",
            r"/reports",
            upload,
            MULTIPART,
            credential=True,
            roles=REPORTERS,
            quotas=reports,
            upload=True,
        ),
        RoutePolicy(
            "file requests",
            "POST",
            r"/open311/v2/requests\.(json|xml)",
            upload,
            FORM,
            roles=REPORTERS,
            quotas=reports,
            upload=True,
            render=open311_error,
        ),
        RoutePolicy(
            "dispose of cases",
            "POST",
            r"/cases/[^/]+/dispose",
            upload,
            FORM,
            credential=True,
            roles=DISPOSERS,
            upload=True,
        ),
        RoutePolicy("get tokens", "POST", r"/auth/token", TOKEN_MAX_BYTES, FORM, quotas=token),
        RoutePolicy(
            "answer camera re-checks",
            "POST",
            r"/recheck-results/[^/]+",
            settings.ingest_max_payload_bytes,
            JSON,
            credential=True,
            roles=RECHECK_ANSWERERS,
        ),
        RoutePolicy(
            "correct detections",
            "POST",
            r"/cases/[^/]+/correct",
            settings.json_max_bytes,
            JSON,
            credential=True,
            roles=CORRECTORS,
        ),
        RoutePolicy(
            "act on cases", "POST", r"/cases/[^/]+/[^/]+", settings.json_max_bytes, JSON, credential=True
        ),
        RoutePolicy(
            "read reviews", "GET", r"/reviews", settings.json_max_bytes, credential=True, roles=REVIEW_READERS
        ),
        RoutePolicy(
            "follow live events",
            "GET",
            r"/live",
            settings.json_max_bytes,
            credential=True,
            roles=STAFF_READERS,
        ),
        RoutePolicy(
            "read the models",
            "GET",
            r"/models",
            settings.json_max_bytes,
            credential=True,
            roles=REVIEW_READERS,
        ),
        RoutePolicy("read a case's actions", "GET", r"/cases/[^/]+/actions", settings.json_max_bytes),
        RoutePolicy("open the console", "GET", r"/console(/.*)?", settings.json_max_bytes),
    ]
    policies.append(
        RoutePolicy("read the metrics", "GET", r"/metrics", settings.json_max_bytes, roles=STAFF_READERS)
    )
    policies += [  # the console's stream pages (api/routes/streams.py)
        RoutePolicy(
            "read the streams",
            "GET",
            r"/streams(/[^/]+/snapshot)?",
            settings.json_max_bytes,
            credential=True,
            roles=STAFF_READERS,
        ),
        RoutePolicy(
            "edit zones",
            "PUT",
            r"/streams/[^/]+/zones",
            settings.json_max_bytes,
            JSON,
            credential=True,
            roles=STAFF_READERS,  # saving: admin only (the route); judging (?dry_run=true): any staff
        ),
    ]
    default = RoutePolicy("send this", "*", r".*", settings.json_max_bytes)
    return policies, default
