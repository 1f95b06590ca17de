"""``GET /live``: server-sent events for the console (``text/event-stream``).

- ``case``: a case was created or changed (``id``, ``status``, ``rule``, ``stream``, ``unit``,
  ``source``, ``updated_at``); the event's ``id`` is its ``updated_at``, so a client that
  reconnects with ``Last-Event-ID`` gets what it missed. Found by polling the database every
  ``CITYWATCH_LIVE_POLL_S`` (1 s): works with several API workers. A field unit gets its own cases.
- ``stream``: a stream's state, as ``api.services.live.publish_stream`` hands it over.
- a ``: heartbeat`` comment every ``CITYWATCH_LIVE_HEARTBEAT_S`` (15 s).

Staff credentials only, in a header (the console reads it with ``fetch``: EventSource cannot send
one). Left out of the OpenAPI: the answer never ends, so the fuzzer cannot check it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.core.config import Settings
from api.deps import CurrentUser
from api.errors import ForbiddenError
from api.services.auth import STAFF_READERS, Principal
from api.services.live import HUB, CaseCursor, LiveHub, poll_cases, sse, start_cursor

router = APIRouter(tags=["console"])


def _since(last_event_id: str | None) -> datetime | None:
    if not last_event_id:
        return None
    try:
        at = datetime.fromisoformat(last_event_id.strip())
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _start(factory: sessionmaker[Session], user: Principal, since: datetime | None) -> CaseCursor:
    with factory() as session:
        return start_cursor(session, user, since)


def _poll(factory: sessionmaker[Session], user: Principal, cursor: CaseCursor) -> list[dict[str, object]]:
    with factory() as session:
        return poll_cases(session, user, cursor)


async def events(
    factory: sessionmaker[Session],
    user: Principal,
    settings: Settings,
    since: datetime | None,
    hub: LiveHub = HUB,
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    with hub.subscribe() as queue:
        cursor = await run_in_threadpool(_start, factory, user, since)
        yield "retry: 3000\n: connected\n\n"
        next_poll = next_beat = loop.time()
        while True:
            now = loop.time()
            if now >= next_poll:
                for case in await run_in_threadpool(_poll, factory, user, cursor):
                    yield sse("case", case, str(case["updated_at"]))
                next_poll = loop.time() + settings.live_poll_s
            if now >= next_beat:
                yield ": heartbeat\n\n"
                next_beat = loop.time() + settings.live_heartbeat_s
            wait = max(0.0, min(next_poll, next_beat) - loop.time())
            try:
                state = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                continue
            yield sse("stream", state)


@router.get("/live", include_in_schema=False)
def live(
    request: Request,
    user: CurrentUser,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """The console's live events (module docstring)."""
    if user.role not in STAFF_READERS:
        raise ForbiddenError(f"role {user.role.value!r} may not follow the cases")
    return StreamingResponse(
        events(request.app.state.session_factory, user, request.app.state.settings, _since(last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
