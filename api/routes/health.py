"""``/health``: database reachable, ingest connected, ingest counters. ``/healthz``: the process answers
(liveness). ``/readyz``: 200 when the database answers and, with MQTT ingest on, the broker is connected;
503 with the reasons otherwise (readiness: a load balancer sends no request to a 503)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.deps import SessionDep
from api.ingest.mqtt import MqttIngest
from api.schemas import AlivePublic, HealthPublic, ReadyPublic

router = APIRouter(tags=["health"])


def _db_error(session: Session) -> str | None:
    """None when the database answers, else its error in one line."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return " ".join(str(exc).split())[:300]
    return None


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
def health(request: Request, response: Response, session: SessionDep) -> HealthPublic:
    error = _db_error(session)
    db: dict[str, Any] = (
        {"ok": True, "backend": session.get_bind().dialect.name}
        if error is None
        else {"ok": False, "error": error}
    )
    ingest_obj: MqttIngest | None = request.app.state.ingest
    ingest: dict[str, Any] = {"enabled": ingest_obj is not None}
    if ingest_obj is not None:
        ingest.update(ingest_obj.stats())
    if not db["ok"]:
        status = "error"
        response.status_code = 503
    elif ingest_obj is not None and not ingest["connected"]:
        status = "degraded"
    else:
        status = "ok"
    return HealthPublic(status=status, db=db, ingest=ingest)


@router.get("/healthz", response_model=AlivePublic)
def healthz() -> AlivePublic:
    return AlivePublic(status="alive")


@router.get("/readyz", response_model=ReadyPublic, responses={503: {"model": ReadyPublic}})
def readyz(request: Request, response: Response, session: SessionDep) -> ReadyPublic:
    reasons = []
    error = _db_error(session)
    if error is not None:
        reasons.append(f"the database does not answer: {error}")
    ingest: MqttIngest | None = request.app.state.ingest
    if ingest is not None and not ingest.connected:
        reasons.append("the MQTT ingest is not connected to the broker (violation events wait there)")
    if reasons:
        response.status_code = 503
    return ReadyPublic(ready=not reasons, reasons=reasons)
