"""Fold a case's event log into its history: the status, the counters and every dispatch with its
deadline — what ``GET /cases/{id}`` shows and what the assessment counts, from the events alone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from detector.contracts.schemas import parse_datetime


class EventLike(Protocol):
    kind: str
    at: datetime
    from_status: str | None
    to_status: str | None
    data: dict[str, Any] | None


@dataclass
class Dispatch:
    at: datetime
    unit: str | None
    street: str | None
    deadline_at: datetime | None
    returned_at: datetime | None = None
    postponed: int = 0
    held: bool = False
    disposals: list[datetime] = field(default_factory=list)
    reworks: int = 0
    closed_at: datetime | None = None


@dataclass
class History:
    status: str | None = None
    unit: str | None = None
    deadline_at: datetime | None = None
    dispatched_at: datetime | None = None
    disposed_at: datetime | None = None
    closed_at: datetime | None = None
    rework_count: int = 0
    postpone_count: int = 0
    return_count: int = 0
    duplicate_count: int = 0
    on_hold: bool = False
    dispatches: list[Dispatch] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    @property
    def current(self) -> Dispatch | None:
        last = self.dispatches[-1] if self.dispatches else None
        return last if last is not None and last.returned_at is None else None


def _deadline(data: dict[str, Any]) -> datetime | None:
    text = data.get("deadline_at")
    return parse_datetime(text) if isinstance(text, str) else None


def fold(events: Iterable[EventLike], until: datetime | None = None) -> History:
    """Replay ``events`` (in the order they were written), those at or before ``until`` only."""
    h = History()
    for e in events:
        if until is not None and e.at > until:
            continue
        data = e.data or {}
        if e.to_status is not None and e.to_status != h.status:
            h.status = e.to_status
            h.statuses.append(e.to_status)
        d = h.current
        if e.kind == "dispatch":
            h.dispatches.append(Dispatch(e.at, data.get("unit"), data.get("street"), _deadline(data)))
            h.unit, h.deadline_at, h.dispatched_at, h.on_hold = data.get("unit"), _deadline(data), e.at, False
        elif e.kind == "return" and d is not None:
            d.returned_at = e.at
            h.return_count += 1
            h.unit = h.deadline_at = h.dispatched_at = None
        elif e.kind == "postpone":
            h.postpone_count += 1
            h.deadline_at = _deadline(data)
            if d is not None:
                d.postponed += 1
                d.deadline_at = h.deadline_at
        elif e.kind == "hold":
            h.on_hold = True
            if d is not None:
                d.held = True
        elif e.kind == "dispose":
            h.disposed_at = e.at
            if d is not None:
                d.disposals.append(e.at)
        elif e.kind == "rework":
            h.rework_count += 1
            if d is not None:
                d.reworks += 1
        elif e.kind == "close":
            h.closed_at = e.at
            if d is not None:
                d.closed_at = e.at
        elif e.kind == "duplicate":
            h.duplicate_count += 1
    return h
