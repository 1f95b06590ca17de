"""Duplicate handling (configurable per rule in the routing file's ``dedup`` section).

A new case of the same rule within ``radius_m`` and ``window_h`` of an open case (registered
and not ended) is merged into it at once; failing that, one within ``radius_m`` of a case closed
less than ``recurrence_days`` ago is linked to it as a recurrence and stays a candidate.

"Within radius_m": two cases of the same camera stream are at the same place when they are in the
same zone and their boxes overlap (IoU >= 0.1) or either has no box — a fixed camera's location
is the camera's, so the view says where; otherwise the haversine distance of lat/lon (both needed).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from api.models import OPEN_STATUSES, Case, CaseEvent, CaseStatus
from api.services.auth import SYSTEM
from api.services.lifecycle import mark_duplicate
from api.services.routing import RoutingTable

EARTH_RADIUS_M = 6_371_008.8
SAME_VIEW_IOU = 0.1
_MAX_CANDIDATES = 200


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def distance_m(new: Case, old: Case) -> float | None:
    """Metres between two cases, or None when they cannot be compared."""
    if new.stream and new.stream == old.stream:  # one camera: its view decides, not its location
        if new.zone != old.zone:
            return None
        if not new.bbox or not old.bbox:
            return 0.0
        return 0.0 if iou(new.bbox, old.bbox) >= SAME_VIEW_IOU else None
    if None in (new.lat, new.lon, old.lat, old.lon):
        return None
    return haversine_m(new.lat, new.lon, old.lat, old.lon)  # type: ignore[arg-type]


def _nearest(new: Case, rows: list[Case], radius_m: float) -> tuple[Case, float] | None:
    best: tuple[Case, float] | None = None
    for row in rows:
        d = distance_m(new, row)
        if d is not None and d <= radius_m and (best is None or d < best[1]):
            best = (row, d)
    return best


def _near(new: Case, radius_m: float) -> list[ColumnElement[bool]]:
    """SQL pre-filter: same stream, or a lat/lon box around the new case."""
    if new.lat is None or new.lon is None:
        return [Case.stream == new.stream] if new.stream else []
    dlat = radius_m / 111_320 + 1e-9
    dlon = dlat / max(0.01, math.cos(math.radians(new.lat)))
    box = Case.lat.between(new.lat - dlat, new.lat + dlat) & Case.lon.between(new.lon - dlon, new.lon + dlon)
    return [box | (Case.stream == new.stream)] if new.stream else [box]


def apply_dedup(session: Session, routing: RoutingTable, case: Case, now: datetime) -> str | None:
    """Merge ``case`` (a fresh candidate) into an open duplicate or link it to a recurrence.

    Returns "merged", "recurrence" or None. Adds the events; the caller commits.
    """
    cfg = routing.dedup(case.rule)
    if cfg is None or case.status != CaseStatus.candidate:
        return None
    near = _near(case, cfg.radius_m)
    if not near:
        return None
    window = timedelta(hours=cfg.window_h)
    open_rows = session.scalars(
        select(Case)
        .where(
            Case.rule == case.rule,
            Case.id != case.id,
            Case.status.in_([s.value for s in OPEN_STATUSES]),
            Case.last_seen >= case.first_seen - window,
            Case.first_seen <= case.last_seen + window,
            *near,
        )
        .order_by(Case.id)
        .limit(_MAX_CANDIDATES)
    ).all()
    hit = _nearest(case, list(open_rows), cfg.radius_m)
    if hit is not None:
        target, metres = hit
        mark_duplicate(session, case, target, actor=None, now=now)
        case.status = CaseStatus.merged.value
        session.add(
            CaseEvent(
                case_id=case.id,
                kind="merge",
                actor=SYSTEM.actor,
                role=SYSTEM.role.value,
                from_status=CaseStatus.candidate.value,
                to_status=CaseStatus.merged.value,
                at=now,
                note=f"duplicate of open case {target.id} ({metres:.0f} m, same rule)",
                data={"into": target.id, "distance_m": round(metres, 1)},
            )
        )
        return "merged"
    since = case.first_seen - timedelta(days=cfg.recurrence_days)
    closed_rows = session.scalars(
        select(Case)
        .where(
            Case.rule == case.rule,
            Case.id != case.id,
            Case.status == CaseStatus.closed.value,
            Case.closed_at >= since,
            *near,
        )
        .order_by(Case.closed_at.desc())
        .limit(_MAX_CANDIDATES)
    ).all()
    hit = _nearest(case, list(closed_rows), cfg.radius_m)
    if hit is None:
        return None
    earlier, metres = hit
    case.recurrence_of_id = earlier.id
    session.add(
        CaseEvent(
            case_id=case.id,
            kind="recurrence",
            actor=SYSTEM.actor,
            role=SYSTEM.role.value,
            from_status=case.status,
            to_status=case.status,
            at=now,
            note=f"recurrence of case {earlier.id}, closed {earlier.closed_at:%Y-%m-%d}",
            data={"of": earlier.id, "distance_m": round(metres, 1)},
        )
    )
    return "recurrence"
