"""``create_app``: the case API. The lifespan migrates the database, opens the evidence store,
loads the credentials and the routing table (职责清单), and starts the MQTT ingest and the camera
re-check (outbox sender + answer consumer); shutdown runs in reverse order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.core.config import Settings
from api.core.db import create_db_engine, create_session_factory
from api.core.evidence import EvidenceStore
from api.core.migrate import run_migrations
from api.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    IllegalTransitionError,
    InvalidDigestError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from api.ingest.mqtt import MqttIngest
from api.models import utcnow
from api.routes import assessment, auth, cases, health, lifecycle, open311, recheck, reports
from api.routes.common import validation_error
from api.services.auth import Authenticator
from api.services.lifecycle import Desk
from api.services.recheck import RecheckSender
from api.services.recheck_answers import handle_result
from api.services.recheck_mqtt import RecheckMqtt
from api.services.routing import RoutingTable

log = logging.getLogger(__name__)

API_VERSION = "0.2.0"


def _detail(
    status: int, headers: dict[str, str] | None = None
) -> Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]:
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": str(exc)}, headers=headers)

    return handler


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    body: dict[str, object] = {"detail": str(exc)}
    if isinstance(exc, IllegalTransitionError):
        body.update(action=exc.action, status=exc.status, allowed=exc.allowed)
    return JSONResponse(status_code=409, content=body)


async def _unprocessable(_request: Request, exc: Exception) -> JSONResponse:
    """Shaped like FastAPI's own validation errors, so the 422 schema holds for both."""
    return JSONResponse(
        status_code=422, content={"detail": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}
    )


def create_app(settings: Settings | None = None, *, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        authenticator = Authenticator.from_settings(settings)
        routing = RoutingTable.load(settings.routing_file)
        authenticator.announce()
        log.info(
            "routing table %s: %d units, %d routes",
            routing.source,
            len(routing.units),
            len(routing.config.routes),
        )
        engine = create_db_engine(settings.database_url)
        try:
            await run_in_threadpool(run_migrations, engine)
            store = EvidenceStore(settings.evidence_dir)
            store.ensure_writable()
            session_factory = create_session_factory(engine)
            desk = Desk(routing=routing, settings=settings, store=store, clock=clock)
            app.state.engine = engine
            app.state.session_factory = session_factory
            app.state.evidence_store = store
            app.state.auth = authenticator
            app.state.desk = desk
            ingest = (
                MqttIngest(settings, session_factory, store, routing=routing)
                if settings.ingest_enabled
                else None
            )
            live_recheck = settings.ingest_enabled and settings.recheck_enabled
            answers = (
                RecheckMqtt(settings, session_factory, lambda s, t, p: handle_result(s, desk, t, p))
                if live_recheck
                else None
            )
            sender = RecheckSender(settings, session_factory, answers.publish, clock) if answers else None
            app.state.ingest, app.state.recheck_mqtt, app.state.recheck_sender = ingest, answers, sender
            started: list[MqttIngest | RecheckMqtt | RecheckSender] = [
                x for x in (ingest, answers, sender) if x
            ]
            for part in started:
                part.start()
            try:
                yield
            finally:
                for part in reversed(started):
                    await run_in_threadpool(part.stop)
        finally:
            engine.dispose()

    app = FastAPI(
        title="citywatch case API",
        version=API_VERSION,
        description="Cases opened from citywatch violation events (MQTT) and citizen reports, with their "
        "evidence, the bureau's closed loop (review, dispatch, rectification, camera re-check), the monthly "
        "assessment and Open311 GeoReport v2. Credentials and roles: api/AUTH.md.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.add_exception_handler(NotFoundError, _detail(404))
    app.add_exception_handler(InvalidDigestError, _detail(404))
    app.add_exception_handler(AuthenticationError, _detail(401, {"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(ForbiddenError, _detail(403))
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(InvalidRequestError, _unprocessable)
    app.add_exception_handler(PayloadTooLargeError, _detail(413))
    app.add_exception_handler(UnsupportedMediaError, _detail(415))
    app.add_exception_handler(RequestValidationError, validation_error)
    for module in (health, auth, cases, lifecycle, reports, assessment, recheck, open311):
        app.include_router(module.router)
    return app
