"""Camera re-check, the answering side: one detector answer in, one durable outcome out.

A verify answer on a case in ``verifying``: absent closes it with the fresh frame as the
after-image, present sends it back to ``in_progress`` (rework +1). A triage answer on a
``candidate``: absent rejects it as self-resolved, present is noted. A repeated answer changes
nothing (duplicate); an answer to a superseded or expired request, or for a case that moved on,
is kept in the history without changing the case (stale). Anything malformed is dead-lettered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.core.db import SQLITE_BEGIN_OPTION
from api.core.text import clean_line
from api.errors import IngestUnavailableError, InvalidEventError
from api.ingest.service import IngestOutcome, IngestResult, record_dead_letter
from api.ingest.validation import decode_evidence, decode_payload
from api.models import Case, CaseEvent, CaseStatus, RecheckRequest, RecheckStatus, RejectReason
from api.services.auth import Principal, Role
from api.services.lifecycle import Action, Desk, Params, apply
from detector.contracts.recheck import RESULT_SCHEMA, result_validator
from detector.contracts.schemas import parse_datetime

MAX_RESULT_BYTES = 8 * 1024 * 1024


def parse_result(topic: str, payload: bytes, topic_prefix: str) -> dict[str, Any]:
    data = decode_payload(payload, MAX_RESULT_BYTES)
    if data.get("schema") != RESULT_SCHEMA:
        raise InvalidEventError(
            f"unsupported schema {str(data.get('schema'))[:80]!r}: expected {RESULT_SCHEMA!r}"
        )
    errors = sorted(result_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidEventError(
            "schema violation: " + "; ".join(f"{e.json_path}: {e.message[:200]}" for e in errors[:3])
        )
    head = f"{topic_prefix}/recheck-results/"
    stream = topic[len(head) :] if topic.startswith(head) else ""
    if not stream or "/" in stream:
        raise InvalidEventError(f"topic {topic[:120]!r} is not {head}<stream_id>")
    if "stream" in data and data["stream"] != stream:
        raise InvalidEventError(f"topic stream {stream!r} does not match payload stream {data['stream']!r}")
    data["_stream"] = stream
    data["detector"] = clean_line(data["detector"])  # lands in the history as the actor's name
    if not data["detector"]:
        raise InvalidEventError("$.detector: nothing left once control characters are removed")
    return data


def _transition(
    session: Session,
    desk: Desk,
    case: Case,
    row: RecheckRequest,
    data: dict[str, Any],
    digest: str,
    now: datetime,
) -> str:
    detector = Principal(name=str(data["detector"]), role=Role.detector, via="mqtt")
    absent = data["result"] == "absent"
    extra = {
        "request_id": row.request_id,
        "result": data["result"],
        "captured_at": data["evidence"]["captured_at"],
        "detector": data["detector"],
    }
    if row.purpose == "verify" and case.status == CaseStatus.verifying:
        if absent:
            note = "camera re-check: the object is gone"
            apply(
                session,
                desk,
                case,
                Action.close,
                detector,
                Params(note=note, evidence_sha256=digest, data=extra),
                system=True,
            )
        else:
            note = "camera re-check: the object is still there (返工)"
            apply(
                session,
                desk,
                case,
                Action.rework,
                detector,
                Params(note=note, evidence_sha256=digest, data=extra),
                system=True,
            )
        return "applied"
    if row.purpose == "triage" and case.status == CaseStatus.candidate and absent:
        params = Params(
            note="camera re-check before review: the object is gone",
            reason=RejectReason.self_resolved,
            evidence_sha256=digest,
            data=extra,
        )
        apply(session, desk, case, Action.reject, detector, params, system=True)
        return "applied"
    note = (
        "camera re-check before review: the object is still there"
        if row.purpose == "triage" and case.status == CaseStatus.candidate
        else f"re-check answer arrived with the case {case.status}; kept"
    )
    session.add(
        CaseEvent(
            case_id=case.id,
            kind="recheck_result",
            actor=detector.actor,
            role=detector.role.value,
            from_status=case.status,
            to_status=case.status,
            at=now,
            note=note,
            evidence_sha256=digest,
            data=extra,
        )
    )
    return "applied" if row.purpose == "triage" and case.status == CaseStatus.candidate else "stale"


def handle_result(session: Session, desk: Desk, topic: str, payload: bytes) -> IngestResult:
    """Process one answer and commit its outcome (``session`` must have no open transaction)."""
    prefix = desk.settings.mqtt_topic_prefix
    try:
        data = parse_result(topic, payload, prefix)
        jpeg, _ = decode_evidence(data["evidence"])
        parse_datetime(data["checked_at"])
        if jpeg is None:
            raise InvalidEventError("$.evidence.jpeg is required in a re-check answer")
    except InvalidEventError as exc:
        dl = record_dead_letter(session, topic, payload, exc.reason)
        return IngestResult(IngestOutcome.dead_letter, reason=exc.reason, dead_letter_id=dl)
    try:
        digest = desk.store.put(jpeg)
    except OSError as exc:
        raise IngestUnavailableError(f"evidence store refused a write: {exc}") from exc
    now = desk.clock()
    reason: str | None = None
    try:
        with session.begin():
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            row = session.scalars(
                select(RecheckRequest)
                .where(RecheckRequest.request_id == data["request_id"])
                .with_for_update()
            ).one_or_none()
            if row is None or row.case_id != data["case_id"] or row.stream != data["_stream"]:
                reason = (
                    f"no re-check {data['request_id']} for case {data['case_id']} on stream {data['_stream']}"
                )
            elif row.status == RecheckStatus.answered:
                return IngestResult(IngestOutcome.duplicate, case_id=row.case_id)
            else:
                case = session.execute(
                    select(Case).where(Case.id == row.case_id).with_for_update()
                ).scalar_one()
                was_open = row.status in (RecheckStatus.pending, RecheckStatus.sent)
                outcome = _transition(session, desk, case, row, data, digest, now) if was_open else "stale"
                if not was_open:
                    session.add(
                        CaseEvent(
                            case_id=case.id,
                            kind="recheck_result",
                            actor=f"detector:{data['detector']}",
                            role=Role.detector.value,
                            from_status=case.status,
                            to_status=case.status,
                            at=now,
                            note=f"late answer to a {row.status} re-check; case unchanged",
                            evidence_sha256=digest,
                            data={"request_id": row.request_id, "result": data["result"]},
                        )
                    )
                if was_open:
                    row.status = (
                        RecheckStatus.answered.value
                        if outcome == "applied"
                        else RecheckStatus.superseded.value
                    )
                row.answered_at = now
                row.result = data["result"]
                row.detector = str(data["detector"])[:128]
                row.evidence_sha256 = digest
                row.checked_at = parse_datetime(data["checked_at"])
                kind = IngestOutcome.updated if outcome == "applied" else IngestOutcome.stale
                return IngestResult(kind, case_id=case.id)
    except SQLAlchemyError as exc:
        session.rollback()
        raise IngestUnavailableError(f"database unavailable: {exc}") from exc
    dl = record_dead_letter(session, topic, payload, reason or "unknown re-check")
    return IngestResult(IngestOutcome.dead_letter, reason=reason, dead_letter_id=dl)
