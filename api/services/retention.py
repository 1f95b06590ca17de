"""Retention: photos of cases that ended long ago, and old dead letters, are deleted.

A case that ended (closed, rejected or merged) and has not changed for
``retention_photo_days`` is *expired*. The photos it refers to (its evidence, its after-image,
the images of its history and of its camera re-checks) are deleted from the evidence store,
except those that a case that is not expired still refers to: the store is content-addressed,
so one JPEG can belong to several cases (a duplicate merged into an open case, the same frame
twice). The case rows keep the sha256 (what the image was); ``/cases/{id}/evidence`` answers
404 afterwards. Dead letters received more than ``retention_dead_letter_days`` ago are deleted.
Then, with ``evidence_budget_mb`` set, images of ended cases go until the store is under the
budget, never an open case's (api/services/retention_budget.py; a pruned image answers 410).

``RetentionTask`` runs it every ``retention_interval_s`` inside the API; ``python -m api
retention [--dry-run]`` runs it once (for cron, with the periodic task off). Running twice, or in
several API workers at once, is harmless: each pass deletes what is still there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, not_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from api.core.config import Settings
from api.core.evidence import EvidenceStore
from api.models import ENDED_STATUSES, Case, CaseEvent, DeadLetter, RecheckRequest
from api.services.retention_budget import MB, Pruned, enforce_budget

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class RetentionReport:
    expired_cases: int = 0
    photos_removed: int = 0
    photos_kept: int = 0  # referred to by an expired case and by a live one too
    dead_letters_removed: int = 0
    # CITYWATCH_EVIDENCE_BUDGET_MB (api/services/retention_budget.py); zeros when there is none
    store_bytes: int = 0  # the evidence store before the budget pass
    budget_photos_removed: int = 0
    budget_bytes_removed: int = 0
    over_budget_bytes: int = 0  # left over the budget: images open cases use (never deleted)
    pruned: tuple[Pruned, ...] = field(default=(), repr=False)


def _expired(cutoff: datetime) -> Any:
    return and_(Case.status.in_([s.value for s in ENDED_STATUSES]), Case.updated_at < cutoff)


def _digests_of(session: Session, case_ids: list[int]) -> set[str]:
    found: set[str] = set()
    for ev, after in session.execute(
        select(Case.evidence_sha256, Case.after_evidence_sha256).where(Case.id.in_(case_ids))
    ):
        found.update(d for d in (ev, after) if d)
    for column, case_column in (
        (CaseEvent.evidence_sha256, CaseEvent.case_id),
        (RecheckRequest.evidence_sha256, RecheckRequest.case_id),
    ):
        found.update(
            d
            for d in session.scalars(select(column).where(case_column.in_(case_ids), column.is_not(None)))
            if d
        )
    return found


def _still_used(session: Session, digests: set[str], cutoff: datetime) -> set[str]:
    """The digests a case that is not expired refers to, anywhere."""
    live = not_(_expired(cutoff))
    wanted = list(digests)
    used: set[str] = set()
    for ev, after in session.execute(
        select(Case.evidence_sha256, Case.after_evidence_sha256).where(
            live, or_(Case.evidence_sha256.in_(wanted), Case.after_evidence_sha256.in_(wanted))
        )
    ):
        used.update(d for d in (ev, after) if d in digests)
    for column, case_column in (
        (CaseEvent.evidence_sha256, CaseEvent.case_id),
        (RecheckRequest.evidence_sha256, RecheckRequest.case_id),
    ):
        used.update(
            d
            for d in session.scalars(
                select(column).join(Case, Case.id == case_column).where(live, column.in_(wanted))
            )
            if d
        )
    return used


def _expired_case_batches(session: Session, cutoff: datetime) -> Iterable[list[int]]:
    last = 0
    while True:
        ids = list(
            session.scalars(
                select(Case.id).where(_expired(cutoff), Case.id > last).order_by(Case.id).limit(BATCH)
            )
        )
        if not ids:
            return
        yield ids
        last = ids[-1]


def remove_expired_photos(
    session: Session, store: EvidenceStore, cutoff: datetime, *, dry_run: bool = False
) -> RetentionReport:
    report = RetentionReport()
    for ids in _expired_case_batches(session, cutoff):
        report.expired_cases += len(ids)
        digests = _digests_of(session, ids)
        if not digests:
            continue
        keep = _still_used(session, digests, cutoff)  # asked again per batch: narrows any race
        report.photos_kept += len(keep)
        for digest in sorted(digests - keep):
            if dry_run:
                report.photos_removed += store.exists(digest)
            else:
                report.photos_removed += store.remove(digest)
        session.rollback()  # end the read transaction between batches
    return report


def remove_old_dead_letters(session: Session, cutoff: datetime, *, dry_run: bool = False) -> int:
    old = DeadLetter.received_at < cutoff
    if dry_run:
        return len(session.scalars(select(DeadLetter.id).where(old)).all())
    with session.begin():
        result = session.execute(delete(DeadLetter).where(old))
    return int(getattr(result, "rowcount", 0) or 0)


def run_retention(
    session_factory: sessionmaker[Session],
    store: EvidenceStore,
    settings: Settings,
    now: datetime,
    *,
    dry_run: bool = False,
) -> RetentionReport:
    report = RetentionReport()
    if settings.retention_photo_days > 0:
        with session_factory() as session:
            cutoff = now - timedelta(days=settings.retention_photo_days)
            report = remove_expired_photos(session, store, cutoff, dry_run=dry_run)
    if settings.retention_dead_letter_days > 0:
        with session_factory() as session:
            cutoff = now - timedelta(days=settings.retention_dead_letter_days)
            report.dead_letters_removed = remove_old_dead_letters(session, cutoff, dry_run=dry_run)
    if settings.evidence_budget_mb > 0:
        limit = settings.evidence_budget_mb * MB
        budget = enforce_budget(session_factory, store, limit, now, dry_run=dry_run)
        report.store_bytes, report.over_budget_bytes = budget.store_bytes, budget.over_budget_bytes
        report.budget_photos_removed, report.budget_bytes_removed = len(budget.pruned), budget.bytes_removed
        report.pruned = budget.pruned
    return report


class RetentionTask:
    """Runs ``run_retention`` shortly after start and then every ``retention_interval_s``."""

    FIRST_RUN_S = 60.0

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        store: EvidenceStore,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings, self.session_factory, self.store, self.clock = settings, session_factory, store, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: RetentionReport | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="citywatch-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        delay = min(self.FIRST_RUN_S, self.settings.retention_interval_s)
        while not self._stop.wait(delay):
            delay = self.settings.retention_interval_s
            try:
                self.last = run_retention(self.session_factory, self.store, self.settings, self.clock())
            except (SQLAlchemyError, OSError) as exc:
                log.warning("retention pass failed (next try in %.0f s): %s", delay, exc)
                continue
            if self.last.budget_photos_removed:
                log.info(
                    "retention: %d images of ended cases (%d bytes) removed to keep the evidence store "
                    "under its budget",
                    self.last.budget_photos_removed,
                    self.last.budget_bytes_removed,
                )
            if self.last.photos_removed or self.last.dead_letters_removed:
                log.info(
                    "retention: %d photos of %d expired cases removed (%d kept, still used); %d dead letters",
                    self.last.photos_removed,
                    self.last.expired_cases,
                    self.last.photos_kept,
                    self.last.dead_letters_removed,
                )
