"""Camera re-check (反馈核查), the asking side: a durable outbox of MQTT commands.

``create_request`` writes a ``RecheckRequest`` row in the caller's transaction (so a disposed
case and its re-check commit together); ``RecheckSender`` publishes pending rows on
``<prefix>/commands/recheck/{stream}`` (QoS 1), marks them sent on PUBACK, re-sends unanswered
ones every ``recheck_retry_s`` and expires them after ``recheck_timeout_s`` — a person verifies
then. Answers are handled in ``api.services.recheck_answers``. Contract: ``detector.contracts.recheck``
(detector/contracts/README.md).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.core.db import SQLITE_BEGIN_OPTION
from api.errors import ConflictError
from api.models import Case, CaseEvent, RecheckRequest, RecheckStatus
from api.services.auth import SYSTEM
from detector.contracts.recheck import build_command

log = logging.getLogger(__name__)

_OPEN = (RecheckStatus.pending.value, RecheckStatus.sent.value)
_BATCH = 50

Publish = Callable[[str, bytes], bool]
"""Publish one QoS 1 message; True once the broker acknowledged it."""


def new_request_id() -> str:
    return "rc-" + secrets.token_hex(12)


def create_request(
    session: Session, settings: Settings, case: Case, purpose: str, now: datetime
) -> RecheckRequest:
    """Queue a re-check of ``case``'s view; earlier open requests of the case are superseded."""
    if not case.stream:
        raise ConflictError(f"case {case.id} has no camera (source {case.source}); a person verifies it")
    for old in session.scalars(
        select(RecheckRequest).where(RecheckRequest.case_id == case.id, RecheckRequest.status.in_(_OPEN))
    ):
        old.status = RecheckStatus.superseded.value
    request_id = new_request_id()
    payload = build_command(
        prefix=settings.mqtt_topic_prefix,
        request_id=request_id,
        case_id=case.id,
        violation_id=case.violation_id,
        purpose=purpose,
        stream=case.stream,
        zone=case.zone,
        bbox=case.bbox,
        rule=case.rule,
        label=case.label,
        requested_at=now,
    )
    row = RecheckRequest(
        request_id=request_id,
        case_id=case.id,
        purpose=purpose,
        stream=case.stream,
        payload=payload,
        status=RecheckStatus.pending.value,
        attempts=0,
        created_at=now,
    )
    session.add(row)
    return row


def expire_overdue(session: Session, settings: Settings, now: datetime) -> int:
    """Expire requests older than the timeout; note it on each case. Returns how many expired."""
    cutoff = now - timedelta(seconds=settings.recheck_timeout_s)
    rows = session.scalars(
        select(RecheckRequest)
        .where(RecheckRequest.status.in_(_OPEN), RecheckRequest.created_at < cutoff)
        .limit(_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.status = RecheckStatus.expired.value
        case = session.get(Case, row.case_id)
        status = case.status if case is not None else None
        session.add(
            CaseEvent(
                case_id=row.case_id,
                kind="recheck_expired",
                actor=SYSTEM.actor,
                role=SYSTEM.role.value,
                from_status=status,
                to_status=status,
                at=now,
                note=f"no answer from the camera within {settings.recheck_timeout_s:.0f} s; "
                "a person verifies",
                data={"request_id": row.request_id},
            )
        )
    session.flush()  # the sessions do not autoflush: the sender's next query must see these
    return len(rows)


def due_for_sending(session: Session, settings: Settings, now: datetime) -> list[RecheckRequest]:
    resend_before = now - timedelta(seconds=settings.recheck_retry_s)
    return list(
        session.scalars(
            select(RecheckRequest)
            .where(
                or_(
                    RecheckRequest.status == RecheckStatus.pending.value,
                    (RecheckRequest.status == RecheckStatus.sent.value)
                    & (RecheckRequest.sent_at < resend_before),
                )
            )
            .order_by(RecheckRequest.id)
            .limit(_BATCH)
            .with_for_update(skip_locked=True)  # several API workers: each row goes out from one
        )
    )


class RecheckSender:
    """A thread that drains the outbox through ``publish``; ``wake()`` makes it look at once."""

    def __init__(
        self,
        settings: Settings,
        session_factory: Callable[[], Session],
        publish: Publish,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._publish = publish
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.last_error: str | None = None

    def run_once(self) -> int:
        """Expire, then publish what is due; returns the number of commands acknowledged."""
        now = self._clock()
        sent = 0
        with self._sessions() as session:
            open_rows = session.scalar(
                select(RecheckRequest.id).where(RecheckRequest.status.in_(_OPEN)).limit(1)
            )
        if open_rows is None:
            return 0  # the common case: no write transaction (SQLite: no write lock) at all
        with self._sessions() as session, session.begin():
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            expire_overdue(session, self._settings, now)
            for row in due_for_sending(session, self._settings, now):
                topic = self._settings.recheck_command_topic(row.stream)
                body = json.dumps(row.payload, separators=(",", ":"), ensure_ascii=False).encode()
                if not self._publish(topic, body):
                    break  # broker away: try again on the next round
                row.status = RecheckStatus.sent.value
                row.sent_at = now
                row.attempts += 1
                sent += 1
        self.sent += sent
        return sent

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError as exc:
                self.last_error = str(exc)[:300]
                log.warning("re-check outbox: database unavailable: %s", exc)
            self._wake.wait(self._settings.recheck_poll_s)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="citywatch-recheck", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
