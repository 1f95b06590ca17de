"""``/console/``: the web console (api/console/static/: plain ES modules, no build step) served by the
API itself. The files are public (they hold no data; every call they make needs a credential);
their Content-Security-Policy lets the page reach this API only: no CDN, no fonts, no map tiles."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "console" / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new release shows at once
}

router = APIRouter(include_in_schema=False)


class ConsoleFiles(StaticFiles):
    """StaticFiles with the console's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


@router.get("/console")
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=308)


def mount(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (``/console`` redirects there)."""
    # ES modules need a JavaScript type; some hosts' /etc/mime.types say otherwise for .js
    mimetypes.add_type("text/javascript", ".js")
    mimetypes.add_type("application/json", ".json")
    app.include_router(router)
    app.mount("/console", ConsoleFiles(directory=STATIC_DIR, html=True), name="console")
