"""``create_app``: the case API. The lifespan migrates the database, opens the evidence store and
starts the MQTT ingest; shutdown runs in reverse order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.core.config import Settings
from api.core.db import create_db_engine, create_session_factory
from api.core.evidence import EvidenceStore
from api.core.migrate import run_migrations
from api.errors import NotFoundError
from api.ingest.mqtt import MqttIngest
from api.routes import cases, health

log = logging.getLogger(__name__)

API_VERSION = "0.1.0"


async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.database_url)
        try:
            await run_in_threadpool(run_migrations, engine)
            store = EvidenceStore(settings.evidence_dir)
            store.ensure_writable()
            session_factory = create_session_factory(engine)
            app.state.engine = engine
            app.state.session_factory = session_factory
            app.state.evidence_store = store
            ingest = MqttIngest(settings, session_factory, store) if settings.ingest_enabled else None
            app.state.ingest = ingest
            if ingest is not None:
                ingest.start()
            try:
                yield
            finally:
                if ingest is not None:
                    await run_in_threadpool(ingest.stop)
        finally:
            engine.dispose()

    app = FastAPI(
        title="citywatch case API",
        version=API_VERSION,
        description="Cases opened from citywatch violation events (MQTT), with their evidence.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_exception_handler(NotFoundError, _not_found)
    app.include_router(health.router)
    app.include_router(cases.router)
    return app
