"""``/health``: database reachable, ingest connected, ingest counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import SessionDep
from api.ingest.mqtt import MqttIngest
from api.schemas import HealthPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
def health(request: Request, response: Response, session: SessionDep) -> HealthPublic:
    db: dict[str, Any]
    try:
        session.execute(text("SELECT 1"))
        db = {"ok": True, "backend": session.get_bind().dialect.name}
    except SQLAlchemyError as exc:
        db = {"ok": False, "error": " ".join(str(exc).split())[:300]}
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
