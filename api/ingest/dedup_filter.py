"""Which new cases of a batch can have a duplicate at all: a pre-filter for ``apply_dedup``.

``api.services.dedup.apply_dedup`` runs two queries per new case (~2-4 ms on PostgreSQL), which
caps a batch at a few hundred events a second. This module reads, once per batch, the cases that
could be a duplicate target of any of the batch's new cases (same rules, open, or closed within
the recurrence period) and indexes them by (rule, stream) and by (rule, lat/lon cell). A new case
with no target passing ``apply_dedup``'s own SQL pre-filter (rule, status, time window, same
stream or inside the lat/lon box) needs no call: ``apply_dedup`` would find nothing and change
nothing. Every other new case still goes through ``apply_dedup``, so the outcome is the same.

The filter keeps to the safe side: cells are at least as wide as the widest box, the time checks
are those of the SQL; when more than ``MAX_CANDIDATES`` cases qualify it gives up and every new
case is checked (``None``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api.models import OPEN_STATUSES, Case, CaseStatus
from api.services.routing import RoutingTable

MAX_CANDIDATES: Final = 20_000
_DEG_M: Final = 111_320.0
_OPEN: Final = frozenset(s.value for s in OPEN_STATUSES)
_CLOSED: Final = CaseStatus.closed.value

Cell = tuple[str, int, int]


class NewCase(Protocol):
    """What the filter reads of a new case (a ``Case``, or the batch's own lighter record)."""

    @property
    def id(self) -> int: ...
    @property
    def rule(self) -> str: ...
    @property
    def stream(self) -> str | None: ...
    @property
    def lat(self) -> float | None: ...
    @property
    def lon(self) -> float | None: ...
    @property
    def first_seen(self) -> datetime: ...
    @property
    def last_seen(self) -> datetime: ...


def _half_width_deg(radius_m: float, lat: float) -> float:
    """The larger half-width (lon) of ``apply_dedup``'s box at ``lat``, with a margin."""
    dlat = radius_m / _DEG_M + 1e-9
    return 1.01 * dlat / max(0.01, math.cos(math.radians(min(abs(lat), 89.9))))


class DedupFilter:
    """Built once per batch; :meth:`may_match` is ``False`` only when ``apply_dedup`` would do nothing."""

    def __init__(self, routing: RoutingTable, rows: Sequence[Any], cell_deg: float) -> None:
        self._routing = routing
        self._cell = cell_deg
        self._by_stream: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self._by_cell: dict[Cell, list[Any]] = defaultdict(list)
        for row in rows:
            if row.stream:
                self._by_stream[(row.rule, row.stream)].append(row)
            if row.lat is not None and row.lon is not None:
                self._by_cell[(row.rule, *self._cell_of(row.lat, row.lon))].append(row)

    def _cell_of(self, lat: float, lon: float) -> tuple[int, int]:
        return math.floor(lat / self._cell), math.floor(lon / self._cell)

    @classmethod
    def build(cls, session: Session, routing: RoutingTable, cases: Sequence[NewCase]) -> DedupFilter | None:
        configs = {c.rule: routing.dedup(c.rule) for c in cases}
        rules = [rule for rule, cfg in configs.items() if cfg is not None]
        if not rules:
            return cls(routing, [], 1.0)
        max_lat = max((abs(c.lat) for c in cases if c.lat is not None), default=0.0)
        cell = max(_half_width_deg(cfg.radius_m, max_lat) for cfg in configs.values() if cfg is not None)
        oldest = min(c.first_seen for c in cases)
        since = oldest - timedelta(
            days=max(cfg.recurrence_days for cfg in configs.values() if cfg is not None)
        )
        rows = session.execute(
            select(
                Case.id, Case.rule, Case.status, Case.stream, Case.lat, Case.lon,
                Case.first_seen, Case.last_seen, Case.closed_at,
            )
            .where(
                Case.rule.in_(rules),
                or_(Case.status.in_(_OPEN), and_(Case.status == _CLOSED, Case.closed_at >= since)),
            )
            .limit(MAX_CANDIDATES + 1)
        ).all()  # fmt: skip
        if len(rows) > MAX_CANDIDATES:
            return None
        return cls(routing, rows, cell)

    def _near_rows(self, case: NewCase, radius_m: float) -> list[Any]:
        rows: list[Any] = []
        if case.stream:
            rows.extend(self._by_stream.get((case.rule, case.stream), ()))
        if case.lat is not None and case.lon is not None:
            if _half_width_deg(radius_m, case.lat) > self._cell:
                return list(self._by_cell_all(case.rule)) + rows  # wider than a cell: every row of the rule
            ci, cj = self._cell_of(case.lat, case.lon)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    rows.extend(self._by_cell.get((case.rule, ci + di, cj + dj), ()))
        return rows

    def _by_cell_all(self, rule: str) -> list[Any]:
        return [r for key, rows in self._by_cell.items() if key[0] == rule for r in rows]

    def may_match(self, case: NewCase) -> bool:
        cfg = self._routing.dedup(case.rule)
        if cfg is None:
            return False
        window = timedelta(hours=cfg.window_h)
        since = case.first_seen - timedelta(days=cfg.recurrence_days)
        for row in self._near_rows(case, cfg.radius_m):
            if row.id == case.id:
                continue
            if row.status in _OPEN and row.last_seen >= case.first_seen - window:
                if row.first_seen <= case.last_seen + window:
                    return True
            elif row.status == _CLOSED and row.closed_at is not None and row.closed_at >= since:
                return True
        return False
