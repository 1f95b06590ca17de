"""``ingest_batch``: many MQTT messages, one transaction — the same outcomes as ``ingest_event``
one by one, at a fraction of the cost.

The consumer hands over the messages it holds unacknowledged (up to the MQTT receive window) in
arrival order. Each is parsed; a refused one becomes a dead-letter row in the batch. Evidence
JPEGs are written and made durable with two file-system syncs per batch (``store_evidence``).
Then one write transaction applies the events and commits; only then does the consumer ack:

- the first event of each violation not yet in the database is inserted with the others in one
  ``INSERT ... ON CONFLICT (violation_id) DO NOTHING`` executemany, and their history rows in one
  more; the routing table's duplicate check then runs on each new case, in arrival order,
  skipping those that ``api.ingest.dedup_filter`` shows cannot have a duplicate (it sees the other
  cases as they were when the batch began);
- every other event (a violation already known, or seen earlier in the batch, or one a concurrent
  worker inserted meanwhile) is applied to its case by the same code as in ``ingest_event``
  (``apply_to_case``), in arrival order, with the cases locked and their history seqs read in one
  query each: per violation the events apply in the order they came, a duplicate is a duplicate.

A batch the database refuses for a reason that is not transient returns ``None``: the consumer
then ingests its messages one at a time, so one bad message cannot take the others with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.core.db import SQLITE_BEGIN_OPTION
from api.core.evidence import EvidenceStore
from api.errors import IngestError, IngestUnavailableError, InvalidEventError
from api.ingest.dedup_filter import DedupFilter
from api.ingest.service import (
    _INSERTS,
    IngestOutcome,
    IngestResult,
    _case_values,
    _history,
    _is_transient,
    _upsert,
    apply_to_case,
    dead_letter_row,
)
from api.ingest.validation import DEFAULT_MAX_PAYLOAD_BYTES, ViolationEvent, parse_event
from api.models import Case, CaseEvent, CaseStatus, DeadLetter, utcnow
from api.services.dedup import apply_dedup
from api.services.routing import RoutingTable

Valid = tuple[int, ViolationEvent, str | None]  # (index in the batch, event, evidence digest)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes


def _load_syncfs() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name, use_errno=True).syncfs if name else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    syncfs: Callable[[int], int] = fn
    return syncfs


_SYNCFS = _load_syncfs()


def sync_filesystem(path: Path) -> None:
    """Make everything written on ``path``'s file system durable: ``syncfs(2)``, else ``sync``."""
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


_IO_THREADS = 8
_io_pool: ThreadPoolExecutor | None = None
_io_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads for the file creations of a batch: each waits on the file system's journal, and
    several wait together (one after another they cost up to ~1 ms each on a busy disk)."""
    global _io_pool
    with _io_pool_lock:
        if _io_pool is None:
            _io_pool = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="citywatch-evidence")
        return _io_pool


def _write_temp(target: Path, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".incoming-{uuid.uuid4().hex}.tmp"
    with tmp.open("xb") as fh:
        fh.write(data)
    return tmp


def store_evidence(store: EvidenceStore, jpegs: Sequence[bytes]) -> list[str]:
    """Store JPEGs durably; returns their sha256 digests.

    Each new JPEG is written to a temporary file (several at once); one ``syncfs`` makes them all
    durable, they are renamed into place, and a second ``syncfs`` makes the names durable: two syncs per batch
    where ``EvidenceStore.put`` costs an fsync (~3 ms here) per JPEG. A crash before the names
    are synced leaves no file under its final name half-written."""
    digests = [hashlib.sha256(data).hexdigest() for data in jpegs]
    todo: dict[Path, bytes] = {}
    for digest, data in zip(digests, jpegs, strict=True):
        target = store.path_for(digest)
        if target not in todo and not target.is_file():
            todo[target] = data
    if not todo:
        return digests
    try:  # below the evidence store's ingest floor the batch waits (is retried), nothing is lost
        store.check_room(sum(len(data) for data in todo.values()), upload=False)
    except OSError as exc:
        raise IngestUnavailableError(f"evidence store {store.root} refused a write: {exc}") from exc
    pool = _pool()
    written = [(pool.submit(_write_temp, target, data), target) for target, data in todo.items()]
    try:
        temps = [(future.result(), target) for future, target in written]
        sync_filesystem(store.root)  # the bytes, before any final name points at them
        for _done in pool.map(os.replace, *zip(*temps, strict=True)):
            pass
        sync_filesystem(store.root)  # the names
    except OSError as exc:
        for future, target in written:
            if future.done() and future.exception() is None and not target.is_file():
                future.result().unlink(missing_ok=True)
        raise IngestUnavailableError(f"evidence store {store.root} refused a write: {exc}") from exc
    return digests


def _parse_all(
    messages: Sequence[Message], topic_prefix: str, max_payload_bytes: int
) -> list[ViolationEvent | InvalidEventError]:
    parsed: list[ViolationEvent | InvalidEventError] = []
    for m in messages:
        try:
            parsed.append(
                parse_event(
                    m.topic, m.payload, topic_prefix=topic_prefix, max_payload_bytes=max_payload_bytes
                )
            )
        except InvalidEventError as exc:
            parsed.append(exc)
    return parsed


def _evidence_for(
    parsed: Sequence[ViolationEvent | InvalidEventError], store: EvidenceStore
) -> list[str | None]:
    """Per message, the evidence digest to record (as ``ingest_event`` decides it)."""
    jpegs = [p.evidence_jpeg for p in parsed if isinstance(p, ViolationEvent) and p.evidence_jpeg is not None]
    stored = iter(store_evidence(store, jpegs))
    out: list[str | None] = []
    for p in parsed:
        if not isinstance(p, ViolationEvent):
            out.append(None)
        elif p.evidence_jpeg is not None:
            out.append(next(stored))
        elif p.evidence_sha256 is not None and store.exists(p.evidence_sha256):
            out.append(p.evidence_sha256)
        else:
            out.append(None)
    return out


def _created_note(event: ViolationEvent) -> str | None:
    if event.event != "opened" or event.seq != 0:
        return f"case made by a {event.event!r} event (seq {event.seq}); earlier events not seen yet"
    return None


def _insert_rows(session: Session, rows: Sequence[CaseEvent]) -> None:
    """INSERT history rows in one executemany (no RETURNING: nobody needs their ids here).

    Columns no row sets are left out, so their defaults apply as in an ORM flush."""
    if not rows:
        return
    table = CaseEvent.__table__
    keys = [c.key for c in table.columns if any(getattr(r, c.key) is not None for r in rows)]
    session.connection().execute(insert(CaseEvent), [{k: getattr(r, k) for k in keys} for r in rows])


@dataclass(frozen=True, slots=True)
class _NewCase:
    """A case just inserted, as the duplicate pre-filter reads it (no ORM load)."""

    id: int
    rule: str
    stream: str | None
    lat: float | None
    lon: float | None
    first_seen: datetime
    last_seen: datetime

    @classmethod
    def of(cls, case_id: int, e: ViolationEvent) -> _NewCase:
        return cls(case_id, e.rule, e.stream, e.lat, e.lon, e.first_seen, e.last_seen)


def _bulk_create(
    session: Session, valid: Sequence[Valid], routing: RoutingTable | None
) -> dict[int, IngestResult]:
    """Insert the first event of every violation new to the database; results by batch index."""
    wanted = sorted({event.violation_id for _i, event, _d in valid})
    known = set(session.scalars(select(Case.violation_id).where(Case.violation_id.in_(wanted))))
    fresh: list[Valid] = []
    for item in valid:
        if item[1].violation_id not in known:
            known.add(item[1].violation_id)
            fresh.append(item)
    if not fresh:
        return {}
    dialect = session.get_bind().dialect.name
    stmt = _INSERTS[dialect](Case.__table__).on_conflict_do_nothing(index_elements=["violation_id"])
    # executemany without RETURNING: psycopg pipelines one prepared statement (~4x faster than a
    # multi-row INSERT ... RETURNING here); the ids are read back right after
    session.connection().execute(stmt, [_case_values(event, digest) for _i, event, digest in fresh])
    mine = select(Case.id, Case.violation_id).where(
        Case.violation_id.in_([e.violation_id for _i, e, _d in fresh])
    )
    if dialect == "postgresql":  # only the rows this transaction inserted, not a concurrent worker's
        mine = mine.where(text("cases.xmin = pg_current_xact_id()::xid"))
    # (SQLite: BEGIN IMMEDIATE holds the only write lock since the check above: every row is ours)
    made = {str(vid): int(case_id) for case_id, vid in session.execute(mine)}
    out: dict[int, IngestResult] = {}
    status = CaseStatus.candidate.value
    history: list[CaseEvent] = []
    for index, event, _d in fresh:
        case_id = made.get(event.violation_id)
        if case_id is not None:  # else a concurrent worker made it: the upsert path handles it
            history.append(_history(case_id, event, status, created=True, note=_created_note(event)))
            out[index] = IngestResult(
                IngestOutcome.created, case_id=case_id, violation_id=event.violation_id, seq=event.seq
            )
    _insert_rows(session, history)
    if routing is not None and out:
        events = {index: event for index, event, _d in fresh}
        news = [_NewCase.of(r.case_id, events[i]) for i, r in sorted(out.items()) if r.case_id is not None]
        candidates = DedupFilter.build(session, routing, news)
        now = utcnow()
        for new in news:  # in arrival order, as one by one; the Case is loaded only when needed
            if candidates is None or candidates.may_match(new):
                case = session.get(Case, new.id)
                if case is not None:
                    apply_dedup(session, routing, case, now)
    return out


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch parsed and its evidence stored: what ``commit_batch`` needs."""

    messages: Sequence[Message]
    parsed: Sequence[ViolationEvent | InvalidEventError]
    evidence: Sequence[str | None]


def prepare_batch(
    messages: Sequence[Message],
    evidence_store: EvidenceStore,
    *,
    topic_prefix: str,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Prepared:
    """Parse every message and store the evidence JPEGs durably (no database work: the consumer
    prepares the next batch while the previous one commits). Raises ``IngestUnavailableError``
    when the evidence disk refuses a write."""
    parsed = _parse_all(messages, topic_prefix, max_payload_bytes)
    return Prepared(messages, parsed, _evidence_for(parsed, evidence_store))


def _bulk_apply(session: Session, valid: Sequence[Valid]) -> dict[int, IngestResult]:
    """Apply every other event to its (now existing) case, in arrival order: the cases locked in
    one query (in id order, as every worker does), the history seqs read in one more."""
    if not valid:
        return {}
    wanted = sorted({event.violation_id for _i, event, _d in valid})
    locked = session.scalars(
        select(Case).where(Case.violation_id.in_(wanted)).order_by(Case.id).with_for_update()
    ).all()
    cases = {c.violation_id: c for c in locked}
    seen_rows = session.execute(
        select(CaseEvent.case_id, CaseEvent.seq).where(
            CaseEvent.case_id.in_([c.id for c in locked]), CaseEvent.seq.is_not(None)
        )
    ).all()
    seen = {(int(case_id), int(seq)) for case_id, seq in seen_rows if seq is not None}
    out: dict[int, IngestResult] = {}
    history: list[CaseEvent] = []
    for index, event, digest in valid:
        case = cases.get(event.violation_id)
        if case is None:  # cannot happen (made above or before); the upsert path copes anyway
            continue
        known = (case.id, event.seq) in seen
        out[index] = apply_to_case(session, case, event, digest, seen=known, add_history=history.append)
        if out[index].outcome is not IngestOutcome.dead_letter:  # another stream's event: not seen
            seen.add((case.id, event.seq))
    _insert_rows(session, history)
    return out


def ingest_batch(
    session: Session,
    messages: Sequence[Message],
    evidence_store: EvidenceStore,
    *,
    topic_prefix: str,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    routing: RoutingTable | None = None,
) -> list[IngestResult] | None:
    """Ingest ``messages`` in one transaction: :func:`prepare_batch` then :func:`commit_batch`."""
    prepared = prepare_batch(
        messages, evidence_store, topic_prefix=topic_prefix, max_payload_bytes=max_payload_bytes
    )
    return commit_batch(session, prepared, routing=routing)


def commit_batch(
    session: Session, prepared: Prepared, *, routing: RoutingTable | None = None
) -> list[IngestResult] | None:
    """Apply a prepared batch in one transaction; one result per message, in order.

    Raises ``IngestUnavailableError`` when the database cannot be reached (nothing was committed:
    retry the batch), returns ``None`` when the database refused the batch for another reason
    (nothing was committed: ingest the messages one by one).
    """
    if session.in_transaction():
        raise IngestError("commit_batch needs a session without an open transaction")
    messages, parsed, evidence = prepared.messages, prepared.parsed, prepared.evidence
    results: list[IngestResult] = []
    letters: list[tuple[int, DeadLetter]] = []
    try:
        with session.begin():
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            pairs = enumerate(zip(parsed, evidence, strict=True))
            valid = [(i, e, d) for i, (e, d) in pairs if isinstance(e, ViolationEvent)]
            created = _bulk_create(session, valid, routing)
            created |= _bulk_apply(session, [v for v in valid if v[0] not in created])
            for index, (message, item) in enumerate(zip(messages, parsed, strict=True)):
                if isinstance(item, InvalidEventError):
                    result = IngestResult(IngestOutcome.dead_letter, reason=item.reason)
                elif index in created:
                    result = created[index]
                else:
                    result = _upsert(session, item, evidence[index], routing)
                results.append(result)
                if result.outcome is IngestOutcome.dead_letter:  # refused (e.g. another stream's id)
                    row = dead_letter_row(message.topic, message.payload, result.reason or "refused")
                    session.add(row)
                    letters.append((index, row))
            session.flush()
            for index, row in letters:
                results[index] = replace(results[index], dead_letter_id=row.id)
    except SQLAlchemyError as exc:
        session.rollback()
        if _is_transient(exc):
            raise IngestUnavailableError(f"database unavailable: {exc}") from exc
        log.warning("database refused a batch of %d (%s); ingesting one by one", len(messages), exc)
        return None
    for _index, row in letters:
        log.warning("dead letter %d on %s: %s", row.id, row.topic, row.reason)
    return results
