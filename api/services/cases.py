"""Case desk operations: one transaction each, the case row locked for its length.

``perform`` runs one lifecycle action and its follow-ups: disposing of a camera case queues a
camera re-check and moves the case to ``verifying`` (the system's event); ``recheck`` queues one
on demand. ``file_report`` makes a citizen report (随手拍 / 12319) a candidate case.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.db import SQLITE_BEGIN_OPTION
from api.core.evidence import JPEG_MAGIC
from api.core.text import clean_text
from api.errors import CaseNotFoundError, ForbiddenError, PayloadTooLargeError, UnsupportedMediaError
from api.models import RULE_LABELS, Case, CaseEvent, CaseSource, CaseStatus, Rule, ViolationState
from api.services.auth import SYSTEM, Principal, Role
from api.services.dedup import apply_dedup
from api.services.lifecycle import Action, Desk, Params, apply
from api.services.recheck import create_request

_HTML = re.compile(r"<[^>]*>")


def lock_case(session: Session, case_id: int) -> Case:
    """The case row, locked until the transaction ends (FOR UPDATE; SQLite: BEGIN IMMEDIATE)."""
    session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    case = session.execute(select(Case).where(Case.id == case_id).with_for_update()).scalar_one_or_none()
    if case is None:
        raise CaseNotFoundError(case_id)
    return case


def check_visible(case: Case, principal: Principal) -> None:
    if not principal.may_see(case.unit):
        if principal.role is Role.field_unit:
            raise ForbiddenError(f"case {case.id} is not held by unit {principal.unit!r}")
        raise ForbiddenError(f"role {principal.role.value!r} may not read cases")


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    events: list[CaseEvent]
    recheck_queued: bool


def _to_verifying(session: Session, desk: Desk, case: Case, request_id: str, note: str) -> CaseEvent:
    """The system moves a disposed case on to verification by the camera re-check ``request_id``."""
    params = Params(note=note, data={"request_id": request_id})
    return apply(session, desk, case, Action.verify, SYSTEM, params, system=True)


def perform(
    session: Session,
    desk: Desk,
    case_id: int,
    action: Action,
    principal: Principal,
    params: Params,
    *,
    photo: bytes | None = None,
) -> Outcome:
    """Run ``action``; a ``photo`` (a checked JPEG) goes into the evidence store only after the
    role, the unit and the status allowed it (below the upload floor: ``EvidenceFullError``)."""
    if photo is not None:
        params.evidence_sha256 = hashlib.sha256(photo).hexdigest()
    with session.begin():
        case = lock_case(session, case_id)
        events = [apply(session, desk, case, action, principal, params)]
        if photo is not None:
            desk.store.put(photo, upload=True)
        queued = False
        if action is Action.recheck:
            purpose = "triage" if case.status == CaseStatus.candidate else "verify"
            row = create_request(session, desk.settings, case, purpose, desk.clock())
            events[0].data = {**(events[0].data or {}), "request_id": row.request_id, "purpose": purpose}
            queued = True
            if case.status == CaseStatus.disposed:
                events.append(_to_verifying(session, desk, case, row.request_id, "camera re-check requested"))
        elif action is Action.dispose and case.stream and desk.settings.recheck_enabled:
            row = create_request(session, desk.settings, case, "verify", desk.clock())
            note = f"camera re-check {row.request_id} sent to stream {case.stream}"
            events.append(_to_verifying(session, desk, case, row.request_id, note))
            queued = True
        session.flush()
    return Outcome(case, events, queued)


@dataclass(frozen=True, slots=True)
class Report:
    rule: Rule
    lat: float | None
    lon: float | None
    description: str
    photo: bytes | None
    source: CaseSource = CaseSource.citizen
    address: str | None = None
    grid: str | None = None
    road: str | None = None
    reporter: str | None = None


def clean_description(text: str) -> str:
    """Plain text only (Open311: no HTML), control characters out (``clean_text``), at most 4000
    characters."""
    return clean_text(_HTML.sub("", text))[:4000]


def check_photo(photo: bytes, limit: int) -> None:
    if len(photo) > limit:
        raise PayloadTooLargeError(f"the photo is {len(photo)} bytes; the limit is {limit} bytes")
    if not photo.startswith(JPEG_MAGIC):
        raise UnsupportedMediaError("the photo must be a JPEG (image/jpeg): no FF D8 FF start of image")


def file_report(session: Session, desk: Desk, report: Report, principal: Principal) -> Case:
    digest = None
    if report.photo is not None:
        check_photo(report.photo, desk.settings.report_max_photo_bytes)
        digest = desk.store.put(report.photo, upload=True)
    now = desk.clock()
    with session.begin():
        session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        case = Case(
            violation_id="r-" + secrets.token_hex(12),
            rule=report.rule.value,
            label=RULE_LABELS[report.rule],
            first_seen=now,
            last_seen=now,
            violation_state=ViolationState.open.value,
            status=CaseStatus.candidate.value,
            lat=report.lat,
            lon=report.lon,
            address=report.address,
            grid=report.grid,
            road=report.road,
            evidence_sha256=digest,
            evidence_captured_at=now if digest else None,
            last_seq=0,
            event_count=1,
            created_at=now,
            updated_at=now,
            source=report.source.value,
            description=clean_description(report.description),
            reporter=report.reporter,
            street=desk.routing.street_for(report.grid),
        )
        session.add(case)
        session.flush()
        session.add(
            CaseEvent(
                case_id=case.id,
                kind="reported",
                actor=principal.actor,
                role=principal.role.value,
                from_status=None,
                to_status=case.status,
                at=now,
                evidence_sha256=digest,
                note=f"{report.source.value} report",
                data={"source": report.source.value},
            )
        )
        apply_dedup(session, desk.routing, case, now)
    return case
