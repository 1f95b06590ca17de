"""The desk's judgements of detections, for the data team (api/AUTH.md, ``GET /reviews``).

``correct`` stores a reviewer's box and class on a camera or drone case (the detector's ``label``
and ``bbox`` stay) with a ``corrected`` event in its history; any status but a merged duplicate
(a rejected case's correction tells the data team what was really there). ``list_reviews`` pages
through the cases the desk has judged by (``reviewed_at``, id): register, reject and correct set
``reviewed_at`` (api/services/lifecycle.py for the first two).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.errors import ConflictError, ForbiddenError, InvalidRequestError
from api.models import OPEN_STATUSES, Case, CaseEvent, CaseSource, CaseStatus
from api.schemas_reviews import (
    CorrectIn,
    ReviewModelPublic,
    ReviewPublic,
    ReviewQuery,
    ReviewsPublic,
    Verdict,
    format_cursor,
)
from api.services.auth import Principal, Role
from api.services.cases import lock_case
from api.services.lifecycle import Desk

CORRECTORS = frozenset({Role.admin, Role.reviewer, Role.dispatcher})
"""Roles that may correct a detection (``POST /cases/{id}/correct``)."""
REVIEW_READERS = frozenset({Role.admin, Role.reviewer, Role.dispatcher})
"""Roles that may read ``GET /reviews``."""
MACHINE_SOURCES = (CaseSource.camera.value, CaseSource.drone.value)
CONFIRMED_STATUSES = frozenset({*OPEN_STATUSES, CaseStatus.closed})
"""Registered or later, not rejected or merged."""


def check_role(principal: Principal, roles: frozenset[Role], what: str) -> None:
    if principal.role not in roles:
        may = ", ".join(sorted(r.value for r in roles))
        raise ForbiddenError(f"role {principal.role.value!r} may not {what} (roles: {may})")


def verdict_of(status: str, corrected: bool) -> Verdict | None:
    """rejected > corrected > confirmed; None: not judged (a candidate without a correction, a
    merged duplicate)."""
    if status == CaseStatus.rejected:
        return "rejected"
    if status == CaseStatus.merged:
        return None
    if corrected:
        return "corrected"
    return "confirmed" if status in CONFIRMED_STATUSES else None


def _box(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _previous(case: Case, frame: tuple[int, int] | None) -> tuple[str, list[float] | None, str]:
    """The label and box being replaced, and the box's unit (px, or normalised without a frame)."""
    if case.corrected_label is not None:
        return case.corrected_label, case.corrected_bbox, "px"
    if case.bbox is None or frame is None:
        return case.label, case.bbox, "normalised"
    w, h = frame
    x1, y1, x2, y2 = case.bbox
    return case.label, [round(v, 1) for v in (x1 * w, y1 * h, x2 * w, y2 * h)], "px"


def _check_correctable(case: Case) -> None:
    if case.source not in MACHINE_SOURCES or case.bbox is None:
        raise ConflictError(
            f"case {case.id} is a {case.source} report: it has no detection (box and class) to correct; "
            "only camera and drone cases can be corrected"
        )
    if case.status == CaseStatus.merged:
        raise ConflictError(
            f"case {case.id} is a duplicate merged into case {case.merged_into_id}: correct that case instead"
        )


def correct(
    session: Session, desk: Desk, case_id: int, principal: Principal, body: CorrectIn
) -> tuple[Case, CaseEvent]:
    """Store the correction on the locked case and append its ``corrected`` event."""
    check_role(principal, CORRECTORS, "correct a detection")
    with session.begin():
        case = lock_case(session, case_id)
        _check_correctable(case)
        frame = desk.store.frame_size(case.evidence_sha256) if case.evidence_sha256 else None
        x2, y2 = body.bbox[2:]
        if frame is not None and (x2 > frame[0] or y2 > frame[1]):
            raise InvalidRequestError(
                f"bbox {_box(body.bbox)} is outside the case's evidence frame of {frame[0]}x{frame[1]} "
                "pixels (x2 <= width, y2 <= height)"
            )
        old_label, old_box, unit = _previous(case, frame)
        now = desk.clock()
        shown = _box(old_box) if old_box is not None else "none"
        event = CaseEvent(
            case_id=case.id,
            kind="corrected",
            actor=principal.actor,
            role=principal.role.value,
            from_status=case.status,
            to_status=case.status,
            at=now,
            note=f"label {old_label} → {body.label}; box {shown} {unit} → {_box(body.bbox)} px",
            data={
                "from": {"label": old_label, "bbox": old_box, "unit": unit},
                "to": {"label": body.label, "bbox": list(body.bbox), "unit": "px"},
                "frame": list(frame) if frame is not None else None,
            },
        )
        case.corrected_label, case.corrected_bbox = body.label, list(body.bbox)
        case.corrected_at, case.corrected_by = now, principal.actor
        case.reviewed_at, case.reviewed_by = now, principal.actor
        case.updated_at = now
        session.add(event)
        session.flush()
    return case, event


def _review(case: Case, verdict: Verdict, reviewed_at: datetime) -> ReviewPublic:
    return ReviewPublic(
        case_id=case.id,
        violation_id=case.violation_id,
        stream=case.stream,
        rule=case.rule,
        label=case.label,
        bbox=case.bbox,
        verdict=verdict,
        reason=case.resolution if verdict == "rejected" else None,
        corrected_label=case.corrected_label,
        corrected_bbox=case.corrected_bbox,
        model=ReviewModelPublic(name=case.model_name, version=case.model_version, sha256=case.model_sha256),
        reviewed_at=reviewed_at,
        reviewed_by=case.reviewed_by,
    )


def list_reviews(session: Session, principal: Principal, query: ReviewQuery) -> ReviewsPublic:
    """One page of judged camera and drone cases, by (reviewed_at, id) after ``query.since``."""
    check_role(principal, REVIEW_READERS, "read reviews")
    conditions = [
        Case.reviewed_at.is_not(None),
        Case.source.in_(MACHINE_SOURCES),
        Case.status != CaseStatus.merged.value,
        or_(Case.status != CaseStatus.candidate.value, Case.corrected_at.is_not(None)),
    ]
    cursor = query.cursor()
    if cursor is not None:
        at, after_id = cursor
        conditions += [Case.reviewed_at >= at, or_(Case.reviewed_at > at, Case.id > after_id)]
    rows = session.scalars(
        select(Case).where(*conditions).order_by(Case.reviewed_at, Case.id).limit(query.limit)
    ).all()
    items: list[ReviewPublic] = []
    next_since = query.since  # an empty page keeps the caller's place
    for case in rows:
        if case.reviewed_at is None:  # excluded by the query; narrows the type
            continue
        next_since = format_cursor(case.reviewed_at, case.id)
        verdict = verdict_of(case.status, case.corrected_at is not None)
        if verdict is not None:
            items.append(_review(case, verdict, case.reviewed_at))
    return ReviewsPublic(items=items, next_since=next_since)
