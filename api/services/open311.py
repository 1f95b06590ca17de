"""Open311 GeoReport v2: the service list, the case → request mapping and the XML writer.

Mapping (REFERENCES.md): closed | rejected | merged → ``closed``, every other status ``open``;
camera and drone candidates (not yet confirmed by a reviewer) are hidden; a citizen's own
report is visible from the moment it is filed. ``media_url`` is given only to callers who may
see the case's evidence (staff), never to the public.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from sqlalchemy import and_, not_

from api.core.text import xml_text
from api.models import Case, CaseEvent, CaseSource, CaseStatus, Rule
from api.schemas import is_overdue

CLOSED = (CaseStatus.closed.value, CaseStatus.rejected.value, CaseStatus.merged.value)
MACHINE_SOURCES = (CaseSource.camera.value, CaseSource.drone.value)

SERVICES: dict[str, dict[str, Any]] = {
    Rule.illegal_parking.value: {
        "service_name": "违章停放 Illegal parking",
        "description": "机动车乱停放: a vehicle parked in a no-parking zone.",
        "group": "街面秩序 Street order",
        "keywords": "parking, vehicle, 乱停放",
    },
    Rule.street_vending.value: {
        "service_name": "占道经营 Street vending",
        "description": "无照经营游商 / 店外经营: a stall or vendor occupying the street.",
        "group": "街面秩序 Street order",
        "keywords": "vendor, stall, 游商, 占道",
    },
    Rule.illegal_structure.value: {
        "service_name": "违法搭建 Illegal structure",
        "description": "私搭乱建: a structure built without a permit.",
        "group": "市容环境 City appearance",
        "keywords": "structure, building, 违建",
    },
    Rule.unclean_road.value: {
        "service_name": "道路不洁 Unclean road",
        "description": "道路不洁 / 暴露垃圾: litter or exposed garbage on the road.",
        "group": "市容环境 City appearance",
        "keywords": "litter, garbage, 垃圾",
    },
}
_EVENT_NOTES = {
    "register": "registered (立案)",
    "dispatch": "dispatched to the responsible unit",
    "accept": "the unit is working on it",
    "dispose": "the unit reports it rectified",
    "verify": "being verified",
    "close": "verified and closed",
    "rework": "sent back for rework",
    "postpone": "deadline extended",
    "reject": "closed without action",
    "merge": "merged into another request",
    "return": "being routed to another unit",
}


def service_list() -> list[dict[str, Any]]:
    return [
        {"service_code": code, "metadata": False, "type": "realtime", **info}
        for code, info in SERVICES.items()
    ]


def visible_condition() -> Any:
    return not_(and_(Case.status == CaseStatus.candidate.value, Case.source.in_(MACHINE_SOURCES)))


def is_visible(case: Case) -> bool:
    return not (case.status == CaseStatus.candidate and case.source in MACHINE_SOURCES)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def status_notes(case: Case) -> str | None:
    if case.status == CaseStatus.merged:
        return f"duplicate of request {case.merged_into_id}"
    if case.status == CaseStatus.rejected:
        return {
            "false_positive": "no violation found",
            "out_of_scope": "not handled by this bureau",
            "self_resolved": "resolved before action",
        }.get(case.resolution or "", "closed without action")
    if case.status == CaseStatus.closed:
        return "rectified and verified"
    return {
        "candidate": "received",
        "registered": "registered (立案)",
        "dispatched": "dispatched",
        "in_progress": "in progress",
        "disposed": "rectified, awaiting verification",
        "verifying": "being verified",
    }.get(case.status)


def describe(case: Case) -> str:
    if case.description:
        return case.description
    where = f" (camera {case.stream}, zone {case.zone})" if case.stream else ""
    return f"{SERVICES.get(case.rule, {}).get('service_name', case.rule)} detected{where}"


def to_request(
    case: Case,
    *,
    unit_name: str | None,
    media_base: str | None,
    extensions: bool,
    events: list[CaseEvent] | None,
    now: datetime,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "service_request_id": str(case.id),
        "status": "closed" if case.status in CLOSED else "open",
        "status_notes": status_notes(case),
        "service_name": SERVICES.get(case.rule, {}).get("service_name", case.rule),
        "service_code": case.rule,
        "description": describe(case),
        "agency_responsible": unit_name,
        "service_notice": None,
        "requested_datetime": _iso(case.first_seen),
        "updated_datetime": _iso(case.updated_at),
        "expected_datetime": _iso(case.deadline_at),
        "address": case.address,
        "address_id": None,
        "zipcode": None,
        "lat": case.lat,
        "long": case.lon,
        "media_url": f"{media_base}/cases/{case.id}/evidence"
        if media_base and case.evidence_sha256
        else None,
    }
    if extensions:
        out["extended_attributes"] = {
            "case_status": case.status,
            "source": case.source,
            "unit": case.unit,
            "tier": case.tier,
            "street": case.street,
            "grid": case.grid,
            "road": case.road,
            "rework_count": case.rework_count,
            "overdue": is_overdue(case.status, case.deadline_at, case.on_hold, now),
            "merged_into": str(case.merged_into_id) if case.merged_into_id else None,
            "recurrence_of": str(case.recurrence_of_id) if case.recurrence_of_id else None,
        }
        out["notes"] = [
            {"datetime": _iso(e.at), "summary": _EVENT_NOTES[e.kind], "type": e.kind}
            for e in events or []
            if e.kind in _EVENT_NOTES
        ]
    return out


def _put(parent: ET.Element, tag: str, value: Any) -> None:
    child = ET.SubElement(parent, tag)
    if isinstance(value, dict):
        for k, v in value.items():
            _put(child, k, v)
    elif isinstance(value, list):
        for item in value:
            _put(child, tag.rstrip("s") or "item", item)
    elif isinstance(value, bool):
        child.text = "true" if value else "false"
    elif value is not None:
        child.text = xml_text(str(value))  # text stored before the input rules may hold anything


def to_xml(root: str, item: str | None, rows: list[dict[str, Any]]) -> bytes:
    """``<root><item>..</item>..</root>``; with ``item`` None, the one row's fields sit in the root."""
    top = ET.Element(root)
    for row in rows:
        element = ET.SubElement(top, item) if item is not None else top
        for key, value in row.items():
            _put(element, key, value)
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="unicode")).encode("utf-8")
