"""Retention under a disk budget: ``CITYWATCH_EVIDENCE_BUDGET_MB`` (0: no budget).

When the evidence store holds more bytes than the budget, images of *ended* cases (closed,
rejected, merged) are deleted until it is under, in two rounds:

1. secondary images first — a case's after-image, the images of its history events (a disposal
   photo) and its camera re-check frames, unless the image is also some case's main evidence —
   cases that ended (last changed) longest ago first;
2. then the cases' own main evidence (the image that opened the case), oldest first.

The main evidence is the case's record (an appeal, an audit, training data) and goes last. An
image that any case that has not ended still refers to, anywhere, is never deleted: when only
such images are left over the budget, a warning is logged and the pass stops (the disk floors
of api/core/evidence.py keep the store from filling the disk). The store is content-addressed:
an image is counted once and recorded on every ended case that referred to it.

Every deletion is recorded first — an ``evidence_pruned`` event in each referring case's history
(``data``: sha256, bytes, budget_bytes) — and the file is deleted after, so the API answers
410 Gone with a clear message for a pruned image (``pruned_note``), never a 500. A dry run
plans the same deletions and records and deletes nothing (it counts the store as it is: what the
age pass before it would delete is not subtracted). Several API workers passing at once is
harmless: at worst one deletion is recorded twice. Files no case refers to are left alone (one may
belong to a case being written right now); they count towards the budget.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from api.core.evidence import EvidenceStore
from api.models import ENDED_STATUSES, Case, CaseEvent, RecheckRequest
from api.services.auth import SYSTEM

log = logging.getLogger(__name__)

PRUNED_KIND = "evidence_pruned"
BATCH = 500
MB = 1024 * 1024  # CITYWATCH_EVIDENCE_BUDGET_MB's unit
_ENDED = [s.value for s in ENDED_STATUSES]

# (image column, case id column, its table is cases)
_REFS: tuple[tuple[Any, Any, bool], ...] = (
    (Case.evidence_sha256, Case.id, True),
    (Case.after_evidence_sha256, Case.id, True),
    (CaseEvent.evidence_sha256, CaseEvent.case_id, False),
    (RecheckRequest.evidence_sha256, RecheckRequest.case_id, False),
)


@dataclass(frozen=True)
class Pruned:
    """One image the budget pass deleted (or, dry, would delete)."""

    sha256: str
    size: int
    case_ids: tuple[int, ...]
    main: bool  # the main evidence of a case (round 2), not a secondary image


@dataclass
class BudgetResult:
    store_bytes: int = 0  # before the pass
    bytes_removed: int = 0
    over_budget_bytes: int = 0  # still over after the pass: only images open cases use are left
    pruned: tuple[Pruned, ...] = ()


def _refs(session: Session, digests: Iterable[str], condition: Any) -> dict[str, set[int]]:
    """{digest: ids of the cases matching ``condition`` that refer to it, anywhere}."""
    found: dict[str, set[int]] = defaultdict(set)
    wanted = sorted(set(digests))
    for start in range(0, len(wanted), BATCH):
        chunk = wanted[start : start + BATCH]
        for column, case_column, on_cases in _REFS:
            stmt = select(column, case_column).where(column.in_(chunk))
            if not on_cases:
                stmt = stmt.join(Case, Case.id == case_column)
            for digest, case_id in session.execute(stmt.where(condition)):
                found[digest].add(case_id)
    return found


def _ended_batches(session: Session) -> Iterator[list[int]]:
    """Ids of ended cases, the one that last changed longest ago first, ``BATCH`` at a time."""
    after: tuple[datetime, int] | None = None
    while True:
        stmt = select(Case.id, Case.updated_at).where(Case.status.in_(_ENDED))
        if after is not None:
            at, last = after
            stmt = stmt.where(or_(Case.updated_at > at, and_(Case.updated_at == at, Case.id > last)))
        rows = session.execute(stmt.order_by(Case.updated_at, Case.id).limit(BATCH)).all()
        if not rows:
            return
        yield [r[0] for r in rows]
        after = (rows[-1][1], rows[-1][0])


def _images_of(session: Session, ids: list[int], *, main: bool) -> list[str]:
    """The images of these cases in the order of ``ids`` (main evidence, or the secondary ones)."""
    by_case: dict[int, list[str]] = defaultdict(list)
    refs = _REFS[:1] if main else _REFS[1:]
    for column, case_column, _on_cases in refs:
        for digest, case_id in session.execute(
            select(column, case_column).where(case_column.in_(ids), column.is_not(None))
        ):
            by_case[case_id].append(digest)
    ordered: dict[str, None] = {}
    for case_id in ids:
        ordered.update(dict.fromkeys(sorted(by_case.get(case_id, ()))))
    return list(ordered)


def _main_evidence(session: Session, digests: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(digests), BATCH):
        chunk = digests[start : start + BATCH]
        found.update(session.scalars(select(Case.evidence_sha256).where(Case.evidence_sha256.in_(chunk))))
    return found


def _record(session: Session, pruned: Pruned, budget: int, now: datetime) -> None:
    for case_id in pruned.case_ids:
        session.add(
            CaseEvent(
                case_id=case_id,
                kind=PRUNED_KIND,
                actor=SYSTEM.actor,
                role=SYSTEM.role.value,
                at=now,
                note=f"image {pruned.sha256} was deleted by retention to keep the evidence store under "
                f"its budget of {budget} bytes (CITYWATCH_EVIDENCE_BUDGET_MB); the case has ended",
                data={"sha256": pruned.sha256, "bytes": pruned.size, "budget_bytes": budget},
            )
        )
    session.commit()


def enforce_budget(
    session_factory: sessionmaker[Session],
    store: EvidenceStore,
    budget: int,
    now: datetime,
    *,
    dry_run: bool = False,
) -> BudgetResult:
    """Delete images of ended cases until the store holds at most ``budget`` bytes (module doc)."""
    usage = store.usage_bytes()
    result = BudgetResult(store_bytes=usage)
    if budget <= 0 or usage <= budget:
        return result
    pruned: list[Pruned] = []
    seen: set[str] = set()
    with session_factory() as session:
        for main in (False, True):
            for ids in _ended_batches(session):
                candidates = [d for d in _images_of(session, ids, main=main) if d not in seen]
                if not main:  # an image that is also some case's main evidence waits for round 2
                    mains = _main_evidence(session, candidates)
                    candidates = [d for d in candidates if d not in mains]
                seen.update(candidates)
                live = _refs(session, candidates, Case.status.not_in(_ENDED))
                doomed = [d for d in candidates if d not in live]
                owners = _refs(session, doomed, Case.status.in_(_ENDED))
                for digest in doomed:
                    size = store.size(digest)
                    if size <= 0:
                        continue
                    item = Pruned(digest, size, tuple(sorted(owners.get(digest, ()))), main)
                    if not dry_run:
                        _record(session, item, budget, now)  # first: a crash leaves a 410, not a 404
                        store.remove(digest)
                    pruned.append(item)
                    usage -= size
                    if usage <= budget:
                        break
                session.rollback()  # end the read transaction between batches
                if usage <= budget:
                    break
            if usage <= budget:
                break
    result.pruned = tuple(pruned)
    result.bytes_removed = sum(p.size for p in pruned)
    result.over_budget_bytes = max(0, usage - budget)
    if result.over_budget_bytes:
        log.warning(
            "evidence store is %d bytes over its budget of %d bytes after deleting %d images of ended cases: "
            "what is left belongs to open cases (never deleted) or to no case; raise "
            "CITYWATCH_EVIDENCE_BUDGET_MB or add disk (the disk floors still protect ingest)",
            result.over_budget_bytes,
            budget,
            len(pruned),
        )
    return result


def pruned_note(session: Session, case_ids: Iterable[int], digest: str) -> str | None:
    """The note of the budget pass's deletion of ``digest`` from one of these cases, if any."""
    for event in session.scalars(
        select(CaseEvent)
        .where(CaseEvent.case_id.in_(list(case_ids)), CaseEvent.kind == PRUNED_KIND)
        .order_by(CaseEvent.id)
    ):
        if (event.data or {}).get("sha256") == digest:
            return event.note or f"image {digest} was deleted by retention"
    return None
