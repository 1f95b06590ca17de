"""What ``GET /live`` sends the console: ``case`` events found by polling ``updated_at`` (so every
API worker sees every change, whoever made it) and ``stream`` events published in this process.

``publish_stream(state)`` is the hook for the stream states the API learns from the detector (the
retained ``{prefix}/streams/+/state`` messages): it may be called from any thread (a paho network
thread included) and hands a copy of ``state`` to every open ``/live`` connection of this process.
A connection that does not keep up loses its oldest stream events, never blocks the caller.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, false, func, select
from sqlalchemy.orm import Session

from api.models import Case
from api.services.auth import Principal, Role

QUEUE_MAX = 256
"""Stream events one connection may have waiting; past it the oldest are dropped."""
OVERLAP = timedelta(seconds=5)
"""How far back each poll looks again: a change committed a moment late (another worker, a long
transaction) still comes, and one already sent (same case, same ``updated_at``) does not come twice."""
POLL_LIMIT = 200
"""Most case events one poll sends; the rest come with the next poll."""


def _offer(queue: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
    """Runs on the connection's event loop: enqueue, dropping the oldest when full."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


@dataclass
class LiveHub:
    """The ``/live`` connections of this process that want stream events."""

    _queues: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of the stream events published while the block runs (call it on the event loop)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        with self._lock:
            self._queues[id(queue)] = (asyncio.get_running_loop(), queue)
        try:
            yield queue
        finally:
            with self._lock:
                self._queues.pop(id(queue), None)

    def publish(self, state: Mapping[str, Any]) -> int:
        """Hand ``state`` to every subscriber; returns how many there were."""
        item = dict(state)
        with self._lock:
            targets = list(self._queues.values())
        for loop, queue in targets:
            try:
                loop.call_soon_threadsafe(_offer, queue, dict(item))
            except RuntimeError:  # that connection's loop has closed: it is going away
                continue
        return len(targets)


HUB = LiveHub()


def publish_stream(state: Mapping[str, Any], hub: LiveHub = HUB) -> int:
    """Send one stream's state (``id``, ``state``, sample rate, lag... as JSON-able values) to the
    open ``/live`` connections as a ``stream`` event. Thread-safe; returns the number of listeners."""
    return hub.publish(state)


@dataclass
class CaseCursor:
    """Where one connection is: the newest ``updated_at`` seen and what it sent near it."""

    at: datetime | None = None
    sent: dict[int, datetime] = field(default_factory=dict)


def _visible(principal: Principal) -> list[ColumnElement[bool]]:
    if principal.role is Role.field_unit and principal.via != "anonymous-read":
        return [Case.unit == principal.unit if principal.unit else false()]
    return []


def case_payload(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "rule": row.rule,
        "stream": row.stream,
        "unit": row.unit,
        "source": row.source,
        "updated_at": row.updated_at.isoformat(),
    }


def poll_cases(session: Session, principal: Principal, cursor: CaseCursor) -> list[dict[str, Any]]:
    """The cases ``principal`` may see that changed since ``cursor`` (oldest change first); moves it."""
    query = select(Case.id, Case.status, Case.rule, Case.stream, Case.unit, Case.source, Case.updated_at)
    conditions = _visible(principal)
    if cursor.at is not None:
        conditions.append(Case.updated_at >= cursor.at - OVERLAP)
    rows = session.execute(
        query.where(*conditions).order_by(Case.updated_at, Case.id).limit(POLL_LIMIT + len(cursor.sent))
    ).all()
    fresh = [r for r in rows if cursor.sent.get(r.id) != r.updated_at][:POLL_LIMIT]
    for row in fresh:
        cursor.sent[row.id] = row.updated_at
        cursor.at = row.updated_at if cursor.at is None else max(cursor.at, row.updated_at)
    if cursor.at is not None:
        floor = cursor.at - OVERLAP
        cursor.sent = {k: v for k, v in cursor.sent.items() if v >= floor}
    return [case_payload(r) for r in fresh]


def start_cursor(session: Session, principal: Principal, since: datetime | None) -> CaseCursor:
    """From ``since`` (a reconnecting client's Last-Event-ID), else from now: the newest change
    there is, and the changes just before it marked as sent."""
    if since is not None:
        return CaseCursor(at=since)
    newest = session.scalar(select(func.max(Case.updated_at)).where(*_visible(principal)))
    cursor = CaseCursor(at=newest)
    if newest is not None:
        poll_cases(session, principal, cursor)
    return cursor


def sse(event: str, data: Mapping[str, Any], event_id: str | None = None) -> str:
    """One server-sent event."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
