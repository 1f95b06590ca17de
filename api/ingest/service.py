"""``ingest_event``: one MQTT message in, one durable outcome out.

Idempotent upsert keyed on ``violation_id``: ``INSERT ... ON CONFLICT DO NOTHING`` and then the
row ``SELECT ... FOR UPDATE`` (PostgreSQL; SQLite takes the write lock up front with
``BEGIN IMMEDIATE``), so concurrent consumers never make two cases. ``seq`` orders the events
of one violation: a newer seq sets the state, an older one is recorded in the history but never
overwrites it, a seen seq is a duplicate and changes nothing. The first event to arrive makes
the case, whichever it is. Anything that cannot become a case becomes a ``DeadLetter``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from api.core.db import SQLITE_BEGIN_OPTION
from api.core.evidence import EvidenceStore
from api.core.logs import about
from api.errors import IngestError, IngestUnavailableError, InvalidEventError
from api.ingest.validation import DEFAULT_MAX_PAYLOAD_BYTES, ViolationEvent, parse_event
from api.models import (
    DEAD_LETTER_PAYLOAD_LIMIT,
    Case,
    CaseEvent,
    CaseStatus,
    DeadLetter,
    ViolationState,
    utcnow,
)
from api.services.dedup import apply_dedup
from api.services.routing import RoutingTable

log = logging.getLogger(__name__)

DEFAULT_TOPIC_PREFIX = "citywatch/v1"
_CONFLICT_RETRIES = 3
_MAX_REASON = 2000
_MAX_TOPIC = 512
DETECTOR_ROLE = "detector"


class IngestOutcome(enum.StrEnum):
    created = "created"
    updated = "updated"
    stale = "stale"  # older seq than the case's: recorded in the history, state kept
    duplicate = "duplicate"  # this (violation_id, seq) was seen before: nothing changed
    dead_letter = "dead_letter"


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: IngestOutcome
    case_id: int | None = None
    violation_id: str | None = None
    seq: int | None = None
    reason: str | None = None
    dead_letter_id: int | None = None


def _is_transient(exc: SQLAlchemyError) -> bool:
    if isinstance(exc, OperationalError | DisconnectionError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _clean_text(text: str, limit: int) -> str:
    return text[:limit].replace("\x00", "\ufffd")


def _db_message(exc: SQLAlchemyError) -> str:
    detail = exc.orig if isinstance(exc, DBAPIError) else exc
    return _clean_text(" ".join(str(detail).split()), 300)


def dead_letter_row(topic: str, payload: bytes, reason: str) -> DeadLetter:
    """A refused message as a row: its first 64 KiB as text, its full size, the reason."""
    kept = payload[:DEAD_LETTER_PAYLOAD_LIMIT].decode("utf-8", errors="replace")
    return DeadLetter(
        topic=_clean_text(topic, _MAX_TOPIC),
        reason=_clean_text(reason, _MAX_REASON),
        payload=_clean_text(kept, DEAD_LETTER_PAYLOAD_LIMIT),
        payload_size=len(payload),
    )


def record_dead_letter(session: Session, topic: str, payload: bytes, reason: str) -> int:
    """Store a refused message with its reason (:func:`dead_letter_row`); returns the row id."""
    row = dead_letter_row(topic, payload, reason)
    try:
        with session.begin():
            session.add(row)
            session.flush()
            row_id = row.id
    except SQLAlchemyError as exc:
        raise IngestUnavailableError(f"cannot write the dead letter: {exc}") from exc
    log.warning("dead letter %d on %s: %s", row_id, row.topic, row.reason)
    return row_id


def _evidence_digest(event: ViolationEvent, store: EvidenceStore) -> str | None:
    """Store the event's JPEG; return the digest to record on the case, or None."""
    if event.evidence_jpeg is not None:
        try:
            return store.put(event.evidence_jpeg)
        except OSError as exc:
            raise IngestUnavailableError(f"evidence store {store.root} refused a write: {exc}") from exc
    if event.evidence_sha256 is not None and store.exists(event.evidence_sha256):
        return event.evidence_sha256  # same image as an earlier event, already stored
    return None


def _case_values(event: ViolationEvent, evidence: str | None) -> dict[str, Any]:
    cleared = event.event == "cleared"
    return {
        "violation_id": event.violation_id,
        "rule": event.rule,
        "label": event.label,
        "stream": event.stream,
        "zone": event.zone,
        "bbox": event.bbox,
        "score_median": event.score_median,
        "score_top": event.score_top,
        "first_seen": event.first_seen,
        "last_seen": event.last_seen,
        "cleared_at": event.last_seen if cleared else None,
        "violation_state": (ViolationState.cleared if cleared else ViolationState.open).value,
        "status": CaseStatus.candidate.value,
        "lat": event.lat,
        "lon": event.lon,
        "address": event.address,
        "grid": event.grid,
        "road": event.road,
        "model_name": event.model_name,
        "model_version": event.model_version,
        "model_sha256": event.model_sha256,
        "evidence_sha256": evidence,
        "evidence_captured_at": event.evidence_captured_at if evidence else None,
        "last_seq": event.seq,
        "event_count": 1,
    }


def _apply_newer(case: Case, event: ViolationEvent, evidence: str | None) -> None:
    values = _case_values(event, evidence)
    for key in ("rule", "label", "stream", "zone", "bbox", "score_median", "score_top", "last_seen"):
        setattr(case, key, values[key])
    for key in ("violation_state", "cleared_at", "model_name", "model_version", "last_seq"):
        setattr(case, key, values[key])
    # Optional details: a newer event that leaves one out does not erase it.
    for key in ("lat", "lon", "address", "grid", "road", "model_sha256"):
        if values[key] is not None:
            setattr(case, key, values[key])
    case.first_seen = min(case.first_seen, event.first_seen)
    if evidence is not None:
        case.evidence_sha256 = evidence
        case.evidence_captured_at = event.evidence_captured_at


def _history(
    case_id: int, event: ViolationEvent, status: str, *, created: bool, note: str | None
) -> CaseEvent:
    return CaseEvent(
        case_id=case_id,
        kind=event.event,
        actor=f"detector:{event.stream}",
        role=DETECTOR_ROLE,
        from_status=None if created else status,
        to_status=status,
        note=note,
        seq=event.seq,
        payload_sha256=event.payload_sha256,
    )


_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _insert_stmt(session: Session, values: dict[str, Any]) -> Any:
    """``INSERT ... ON CONFLICT (violation_id) DO NOTHING RETURNING id``."""
    dialect = session.get_bind().dialect.name
    insert = _INSERTS.get(dialect)
    if insert is None:
        raise IngestError(f"ingest supports SQLite and PostgreSQL, not {dialect}")
    stmt = insert(Case).values(**values).on_conflict_do_nothing(index_elements=[Case.violation_id])
    return stmt.returning(Case.id)


@contextlib.contextmanager
def write_transaction(session: Session) -> Iterator[None]:
    """A write transaction (``BEGIN IMMEDIATE`` on SQLite) that commits on exit, or, when the
    session already has one open (a batch, ``api.ingest.batch``), that one, left to its owner."""
    if session.in_transaction():
        yield
        return
    with session.begin():
        session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        yield


def _upsert(
    session: Session, event: ViolationEvent, evidence: str | None, routing: RoutingTable | None
) -> IngestResult:
    def result(outcome: IngestOutcome, case_id: int) -> IngestResult:
        return IngestResult(outcome, case_id=case_id, violation_id=event.violation_id, seq=event.seq)

    with write_transaction(session):
        new_id = session.execute(_insert_stmt(session, _case_values(event, evidence))).scalar_one_or_none()
        if new_id is not None:
            note = None
            if event.event != "opened" or event.seq != 0:
                note = f"case made by a {event.event!r} event (seq {event.seq}); earlier events not seen yet"
            session.add(_history(new_id, event, CaseStatus.candidate.value, created=True, note=note))
            if routing is not None:
                created = session.get(Case, new_id)
                if created is not None:
                    apply_dedup(session, routing, created, utcnow())
            return result(IngestOutcome.created, new_id)

        case = session.execute(
            select(Case).where(Case.violation_id == event.violation_id).with_for_update()
        ).scalar_one()
        seen = session.scalar(
            select(CaseEvent.id).where(CaseEvent.case_id == case.id, CaseEvent.seq == event.seq)
        )
        return apply_to_case(session, case, event, evidence, seen=seen is not None)


def stream_conflict(case: Case, event: ViolationEvent) -> str | None:
    """Why ``event`` may not touch ``case``: a violation id is bound to the stream of the event that
    made its case, so an event from another stream (another camera's worker, a forged message)
    can never overwrite that case. ``None``: same stream."""
    if case.stream == event.stream:
        return None
    return (
        f"violation_id {event.violation_id} is bound to stream {case.stream!r} (case {case.id}); "
        f"an event from stream {event.stream!r} may not change it"
    )


def apply_to_case(
    session: Session,
    case: Case,
    event: ViolationEvent,
    evidence: str | None,
    *,
    seen: bool,
    add_history: Callable[[CaseEvent], object] | None = None,
) -> IngestResult:
    """Apply an event to its existing (locked) case; ``seen``: a history row has this seq.

    The history row goes to ``add_history`` (default ``session.add``). An event from another
    stream than the case's changes nothing: a ``dead_letter`` result with the reason (no row yet:
    the caller, who holds the message, records it)."""
    add = session.add if add_history is None else add_history
    conflict = stream_conflict(case, event)
    if conflict is not None:
        return IngestResult(
            IngestOutcome.dead_letter, violation_id=event.violation_id, seq=event.seq, reason=conflict
        )

    def result(outcome: IngestOutcome) -> IngestResult:
        return IngestResult(outcome, case_id=case.id, violation_id=event.violation_id, seq=event.seq)

    if seen or event.seq == case.last_seq:
        return result(IngestOutcome.duplicate)
    case.event_count += 1
    if event.seq > case.last_seq:
        note = "violation cleared" if event.event == "cleared" else None
        _apply_newer(case, event, evidence)
        add(_history(case.id, event, case.status, created=False, note=note))
        return result(IngestOutcome.updated)
    note = f"arrived late (seq {event.seq} < last seq {case.last_seq}); state kept"
    case.first_seen = min(case.first_seen, event.first_seen)
    if case.evidence_sha256 is None and evidence is not None:
        case.evidence_sha256 = evidence
        case.evidence_captured_at = event.evidence_captured_at
        note += "; evidence filled in"
    add(_history(case.id, event, case.status, created=False, note=note))
    return result(IngestOutcome.stale)


def ingest_event(
    session: Session,
    topic: str,
    payload: bytes,
    evidence_store: EvidenceStore,
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    routing: RoutingTable | None = None,
) -> IngestResult:
    """Process one message and commit its outcome before returning.

    With ``routing``, a new case is checked for duplicates (``api.services.dedup``) in the same
    transaction: merged into an open case of the same rule nearby, or linked as a recurrence.

    ``session`` must have no transaction open: this function runs its own. Whatever is wrong
    with the message ends in a dead letter; the function raises ``IngestUnavailableError`` when
    the database or the evidence disk cannot be reached (retry the same message later), and
    ``IngestError`` only for misuse (an open transaction, an unsupported database).
    """
    if session.in_transaction():
        raise IngestError("ingest_event needs a session without an open transaction")
    try:
        event = parse_event(topic, payload, topic_prefix=topic_prefix, max_payload_bytes=max_payload_bytes)
        evidence = _evidence_digest(event, evidence_store)
    except InvalidEventError as exc:
        dl_id = record_dead_letter(session, topic, payload, exc.reason)
        return IngestResult(IngestOutcome.dead_letter, reason=exc.reason, dead_letter_id=dl_id)

    for attempt in range(1, _CONFLICT_RETRIES + 1):
        try:
            result = _upsert(session, event, evidence, routing)
        except IntegrityError as exc:
            session.rollback()
            if attempt == _CONFLICT_RETRIES:
                reason = f"database refused the event after {attempt} tries: {_db_message(exc)}"
                break
            log.info(
                "conflict on %s seq %d, retrying: %s", event.violation_id, event.seq, exc.orig,
                extra=about(event.stream, event.violation_id),
            )  # fmt: skip
            continue
        except SQLAlchemyError as exc:
            session.rollback()
            if _is_transient(exc):
                raise IngestUnavailableError(f"database unavailable: {exc}") from exc
            reason = f"database refused the event: {type(exc).__name__}: {_db_message(exc)}"
            break
        if result.outcome is not IngestOutcome.dead_letter:
            if result.outcome in (IngestOutcome.created, IngestOutcome.updated):
                log.info(
                    "case %s %s: %s %s on %s zone %s (seq %d)",
                    result.case_id, result.outcome.value, event.event, event.rule, event.stream, event.zone,
                    event.seq, extra=about(event.stream, event.violation_id, result.case_id),
                )  # fmt: skip
            return result
        reason = result.reason or "refused by the ingest"  # e.g. bound to another stream: unchanged
        break
    dl_id = record_dead_letter(session, topic, payload, reason)
    return IngestResult(
        IngestOutcome.dead_letter,
        violation_id=event.violation_id,
        seq=event.seq,
        reason=reason,
        dead_letter_id=dl_id,
    )
