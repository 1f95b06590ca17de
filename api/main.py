"""``create_app``: the case API. The lifespan migrates the database, opens the evidence store,
loads the credentials and the routing table (职责清单), and starts the MQTT ingest and the camera
re-check (outbox sender + answer consumer) and the retention task; shutdown runs in reverse order.
The ingress guard (api/core/ingress.py) decides about each request from its headers before its
body is read: size, type, credential and role, quotas, the evidence store's upload floor."""

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
from api.core.ingress import IngressGuard
from api.core.migrate import run_migrations
from api.core.ratelimit import RateLimiter
from api.errors import (
    AuthenticationError,
    ConflictError,
    EvidenceFullError,
    EvidenceGoneError,
    ForbiddenError,
    IllegalTransitionError,
    InvalidDigestError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnsupportedMediaError,
)
from api.ingest.mqtt import MqttIngest
from api.ingest.streams import StreamBoard
from api.models import utcnow
from api.routes import (
    actions,
    assessment,
    auth,
    cases,
    console,
    health,
    lifecycle,
    live,
    manifest,
    open311,
    recheck,
    reports,
    reviews,
    streams,
)
from api.routes import metrics as metrics_routes
from api.routes.common import validation_error
from api.routes.limits import build_policies, report_quotas
from api.services.auth import Authenticator
from api.services.lifecycle import Desk
from api.services.metrics import ApiMetrics, RequestMetrics
from api.services.recheck import RecheckSender
from api.services.recheck_answers import handle_result
from api.services.recheck_mqtt import RecheckMqtt
from api.services.retention import RetentionTask
from api.services.routing import RoutingTable
from api.services.streams_file import StreamsFile

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


async def _rate_limited(_request: Request, exc: Exception) -> JSONResponse:
    wait = exc.retry_after_s if isinstance(exc, RateLimitedError) else 60
    return JSONResponse(status_code=429, content={"detail": str(exc)}, headers={"Retry-After": str(wait)})


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
            store = EvidenceStore(
                settings.evidence_dir,
                upload_floor_bytes=settings.evidence_upload_floor_bytes,
                ingest_floor_bytes=settings.evidence_ingest_floor_bytes,
            )
            store.ensure_writable()
            session_factory = create_session_factory(engine)
            desk = Desk(routing=routing, settings=settings, store=store, clock=clock)
            app.state.engine = engine
            app.state.session_factory = session_factory
            app.state.evidence_store = store
            app.state.auth = authenticator
            app.state.desk = desk
            ingest = (
                MqttIngest(settings, session_factory, store, routing=routing, streams=app.state.streams)
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
            retention = (
                RetentionTask(settings, session_factory, store, clock)
                if settings.retention_interval_s
                else None
            )
            app.state.retention = retention
            started: list[MqttIngest | RecheckMqtt | RecheckSender | RetentionTask] = [
                x for x in (ingest, answers, sender, retention) if x
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
    app.state.streams = StreamBoard()  # the detectors' stream states and snapshots (MQTT, retained)
    app.state.streams_file = StreamsFile(settings.streams_file)
    app.state.limiter = limiter = RateLimiter(max_tracked=settings.rate_max_tracked)
    app.state.report_quotas = report_quotas(settings)
    policies, default = build_policies(settings, open311_error=open311.ingress_error)
    app.add_middleware(IngressGuard, policies=policies, default=default, limiter=limiter)
    app.state.metrics = metrics = ApiMetrics(app.state)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: it times what the guard refuses too
    app.include_router(metrics_routes.router)
    app.add_exception_handler(NotFoundError, _detail(404))
    app.add_exception_handler(EvidenceGoneError, _detail(410))  # pruned by the retention budget
    app.add_exception_handler(InvalidDigestError, _detail(404))
    app.add_exception_handler(AuthenticationError, _detail(401, {"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(ForbiddenError, _detail(403))
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(InvalidRequestError, _unprocessable)
    app.add_exception_handler(PayloadTooLargeError, _detail(413))
    app.add_exception_handler(UnsupportedMediaError, _detail(415))
    app.add_exception_handler(RateLimitedError, _rate_limited)
    app.add_exception_handler(EvidenceFullError, _detail(507))
    app.add_exception_handler(RequestValidationError, validation_error)
    routers = (health, auth, cases, actions, lifecycle, reviews, reports, assessment, recheck, open311)
    for module in (*routers, live, manifest, streams):
        app.include_router(module.router)
    console.mount(app)
    return app
