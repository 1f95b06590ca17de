"""Monthly assessment (考核) per unit, street office or grid, computed from the event log.

The formulas, the attribution of a case to a month and a unit, and the worked example of the
tests are in api/ASSESSMENT.md; keep the two in step.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.core.text import csv_cell
from api.models import Case, CaseEvent
from api.services.history import Dispatch, fold
from api.services.routing import RoutingTable, WeightsConfig

GroupBy = Literal["unit", "street", "grid"]
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_CHUNK = 500


@dataclass
class Counts:
    dispatched: int = 0  # 派遣数 (dispatch events in the month)
    returned: int = 0  # 退回数 (of those, returned by the unit)
    on_hold: int = 0  # 挂账数
    due: int = 0  # 应处置数 = cases held at the end of the month − 挂账
    disposed: int = 0  # 处置数
    disposed_on_time: int = 0  # 按期处置数
    overdue_pending: int = 0  # 超期未处置数
    closed: int = 0  # 结案数
    closed_on_time: int = 0  # 按期结案数
    reworked: int = 0  # 返工数 (cases reworked at least once)
    postponed: int = 0  # 延期数 (cases postponed at least once)


@dataclass
class Row(Counts):
    key: str = ""
    name: str = ""
    to_close: int = 0  # 应结案数 = 处置数 + 超期未处置数
    disposal_rate: float | None = None  # 处置率
    ontime_disposal_rate: float | None = None  # 按期处置率
    closure_rate: float | None = None  # 结案率
    ontime_closure_rate: float | None = None  # 按期结案率
    rework_rate: float | None = None  # 返工率
    postponement_rate: float | None = None  # 延期率
    overdue_pending_rate: float | None = None  # 超期待处置率
    dispatch_accuracy: float | None = None  # 准确派遣率
    score: float | None = None
    rank: int | None = None


def month_bounds(month: str, routing: RoutingTable) -> tuple[datetime, datetime]:
    """[start, end) of ``YYYY-MM`` in the calendar's time zone, as aware datetimes."""
    m = _MONTH.match(month)
    if m is None:
        raise ValueError(f"month {month!r} is not YYYY-MM")
    year, mon = int(m.group(1)), int(m.group(2))
    tz = routing.calendar.tz
    start = datetime.combine(date(year, mon, 1), datetime.min.time(), tz)
    nxt = date(year + 1, 1, 1) if mon == 12 else date(year, mon + 1, 1)
    return start, datetime.combine(nxt, datetime.min.time(), tz)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def finish(key: str, name: str, c: Counts, weights: WeightsConfig) -> Row:
    row = Row(**asdict(c), key=key, name=name)
    row.to_close = c.disposed + c.overdue_pending
    row.disposal_rate = _rate(c.disposed, c.due)
    row.ontime_disposal_rate = _rate(c.disposed_on_time, c.due)
    row.closure_rate = _rate(c.closed, row.to_close)
    row.ontime_closure_rate = _rate(c.closed_on_time, row.to_close)
    row.rework_rate = _rate(c.reworked, row.to_close)
    row.postponement_rate = _rate(c.postponed, c.due)
    row.overdue_pending_rate = _rate(c.overdue_pending, c.due)
    row.dispatch_accuracy = _rate(c.dispatched - c.returned, c.dispatched)
    if c.due:
        score = (
            weights.disposal_rate * (row.disposal_rate or 0.0)
            + weights.ontime_disposal_rate * (row.ontime_disposal_rate or 0.0)
            + weights.no_rework * (1 - (row.rework_rate or 0.0))
            + weights.no_overdue_pending * (1 - (row.overdue_pending_rate or 0.0))
            + weights.no_postponement * (1 - (row.postponement_rate or 0.0))
        )
        row.score = round(score, 2)
    return row


def rank(rows: list[Row]) -> list[Row]:
    """Highest score first; equal scores share a rank (1, 2, 2, 4); rows without a score last."""
    rows.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.key))
    for i, row in enumerate(rows):
        if row.score is None:
            continue
        same = i > 0 and rows[i - 1].score == row.score
        row.rank = rows[i - 1].rank if same else i + 1
    return rows


def _count_assigned(c: Counts, d: Dispatch, cutoff: datetime) -> None:
    if d.held:
        c.on_hold += 1
        return
    c.due += 1
    first = d.disposals[0] if d.disposals else None
    if first is not None:
        c.disposed += 1
        if d.deadline_at is None or first <= d.deadline_at:
            c.disposed_on_time += 1
    elif d.deadline_at is not None and d.deadline_at < cutoff:
        c.overdue_pending += 1
    if d.closed_at is not None:
        c.closed += 1
        last = max((t for t in d.disposals if t <= d.closed_at), default=None)
        if last is not None and (d.deadline_at is None or last <= d.deadline_at):
            c.closed_on_time += 1
    if d.reworks:
        c.reworked += 1
    if d.postponed:
        c.postponed += 1


def _key(by: GroupBy, d: Dispatch, case: Case) -> str:
    if by == "unit":
        return d.unit or "(none)"
    if by == "street":
        return d.street or case.street or "(none)"
    return case.grid or "(none)"


def _events_by_case(session: Session, ids: list[int]) -> dict[int, list[CaseEvent]]:
    out: dict[int, list[CaseEvent]] = defaultdict(list)
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        for e in session.scalars(
            select(CaseEvent).where(CaseEvent.case_id.in_(chunk)).order_by(CaseEvent.id)
        ):
            out[e.case_id].append(e)
    return out


def compute(session: Session, routing: RoutingTable, month: str, by: GroupBy, now: datetime) -> list[Row]:
    """The assessment of ``month`` grouped ``by``, as of the month's end (or ``now`` if sooner)."""
    start, end = month_bounds(month, routing)
    cutoff = min(end, now)
    ids = list(
        session.scalars(
            select(CaseEvent.case_id)
            .where(CaseEvent.kind == "dispatch", CaseEvent.at >= start, CaseEvent.at < end)
            .distinct()
        )
    )
    counts: dict[str, Counts] = defaultdict(Counts)
    events = _events_by_case(session, ids)
    cases = {
        c.id: c
        for i in range(0, len(ids), _CHUNK)
        for c in session.scalars(select(Case).where(Case.id.in_(ids[i : i + _CHUNK])))
    }
    for case_id in ids:
        history = fold(events[case_id], until=cutoff)
        in_month = [d for d in history.dispatches if start <= d.at < end]
        case = cases[case_id]
        for d in in_month:
            c = counts[_key(by, d, case)]
            c.dispatched += 1
            if d.returned_at is not None:
                c.returned += 1
        kept = [d for d in in_month if d.returned_at is None]
        if kept:
            _count_assigned(counts[_key(by, kept[-1], case)], kept[-1], cutoff)
    rows = [finish(k, _name(routing, by, k), c, routing.config.weights) for k, c in counts.items()]
    return rank(rows)


def _name(routing: RoutingTable, by: GroupBy, key: str) -> str:
    if by == "unit" and key in routing.units:
        return routing.units[key].name
    if by == "street" and key in routing.streets:
        return routing.streets[key].name
    return key


CSV_HEADERS: dict[str, str] = {
    "rank": "排名 rank",
    "key": "编号 key",
    "name": "名称 name",
    "score": "综合得分 score",
    "dispatched": "派遣数",
    "returned": "退回数",
    "on_hold": "挂账数",
    "due": "应处置数",
    "disposed": "处置数",
    "disposed_on_time": "按期处置数",
    "overdue_pending": "超期未处置数",
    "to_close": "应结案数",
    "closed": "结案数",
    "closed_on_time": "按期结案数",
    "reworked": "返工数",
    "postponed": "延期数",
    "disposal_rate": "处置率",
    "ontime_disposal_rate": "按期处置率",
    "closure_rate": "结案率",
    "ontime_closure_rate": "按期结案率",
    "rework_rate": "返工率",
    "postponement_rate": "延期率",
    "overdue_pending_rate": "超期待处置率",
    "dispatch_accuracy": "准确派遣率",
}


def to_csv(rows: Iterable[Row]) -> str:
    """UTF-8 CSV with a byte-order mark (spreadsheets then read the Chinese headers right); a text
    cell that starts like a formula (``= + - @``, tab, CR: a grid named ``=HYPERLINK(..)``) gets a
    leading ``'`` so a spreadsheet shows it instead of running it."""
    names = [f.name for f in fields(Row) if f.name in CSV_HEADERS]
    names.sort(key=list(CSV_HEADERS).index)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([CSV_HEADERS[n] for n in names])
    for row in rows:
        values: dict[str, Any] = asdict(row)
        writer.writerow(["" if values[n] is None else csv_cell(values[n]) for n in names])
    return "\ufeff" + buf.getvalue()
