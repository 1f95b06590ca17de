"""Driving the web console (api/console/static, served at /console/) in a real browser.

- ``console_api``: the API as its own process the way ``make demo`` runs it (dev mode: the documented
  keys, loopback only), SQLite under a test folder, the test MQTT broker, re-checks re-sent every 2 s.
- ``Console``: opens pages in fresh browser contexts whose every request goes through ``guard``: a
  request for any host but 127.0.0.1 / localhost is aborted and recorded, and the test that made it
  fails (tests/browser/conftest.py) — the console must never reach off the machine (no CDN, fonts,
  tiles). Uncaught page errors and Content-Security-Policy refusals (the console's CSP stops a reach
  for another host before the network sees it) are recorded and fail the test the same way.
- ``Console.shots``: the page at 1366×768 and at 390×844, saved as ``<page>-<w>x<h>.png`` under
  ``$CITYWATCH_SCREENSHOTS`` (``make screenshots`` sets docs/screenshots) or the test's tmp folder.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from tests.live_api import ingest_connected, live_api
from tests.mosquitto import account

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Locator,
        Page,
        Request,
        Route,
        WebSocketRoute,
    )

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
# the documented dev keys (api/AUTH.md "Dev mode"), by the role the console shows
KEYS = {
    "admin": "citywatch-dev-admin-key",
    "reviewer": "citywatch-dev-reviewer-key",
    "dispatcher": "citywatch-dev-dispatcher-key",
    "field_unit": "citywatch-dev-unit-key",
}
DEV_UNIT = "hgc-squad"
T = TypeVar("T")


def wait_for(pred: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    """Poll ``pred`` until it returns something truthy (no timed assertions: a deadline only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@contextmanager
def console_api(
    folder: Path, broker: tuple[str, int], prefix: str, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """The API in dev mode on SQLite under ``folder`` (a database already there is used as it is)."""
    full = {
        "CITYWATCH_DEV_MODE": "true",
        "CITYWATCH_MQTT_HOST": broker[0],
        "CITYWATCH_MQTT_PORT": str(broker[1]),
        "CITYWATCH_MQTT_TOPIC_PREFIX": prefix,
        "CITYWATCH_MQTT_CLIENT_ID": f"browser-api-{uuid.uuid4().hex[:8]}",
        "CITYWATCH_RECHECK_RETRY_S": "2",
        **(env or {}),
    }
    login = account("api")  # CITYWATCH_TEST_BROKER=acl
    if login is not None:
        full.update(CITYWATCH_MQTT_USERNAME=login[0], CITYWATCH_MQTT_PASSWORD=login[1])
    with live_api(folder, full, ready=ingest_connected, cwd=folder, args=()) as url:
        yield url


def api_get(url: str, path: str, role: str, **params: Any) -> Any:
    """``GET`` as ``role`` with its dev key (what the page must agree with)."""
    r = httpx.get(f"{url}{path}", params=params, headers={"X-API-Key": KEYS[role]}, timeout=10)
    assert r.status_code == 200, f"GET {path} as {role}: {r.status_code} {r.text[:300]}"
    return r.json()


class Console:
    """Pages of the console at ``url``; ``offsite`` and ``page_errors`` collect what fails the test."""

    def __init__(self, browser: Browser, url: str, shots_dir: Path) -> None:
        self.browser = browser
        self.url = url
        self.shots_dir = shots_dir
        self.offsite: list[str] = []
        self.page_errors: list[str] = []
        self._contexts: list[BrowserContext] = []

    # -- the guard -------------------------------------------------------------------------------
    def _local(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return True
        return parts.hostname in LOCAL_HOSTS

    def guard(self, route: Route, request: Request) -> None:
        if self._local(request.url):
            route.fallback()
        else:
            self.offsite.append(f"{request.method} {request.url} ({request.resource_type})")
            route.abort("blockedbyclient")

    def guard_ws(self, ws: WebSocketRoute) -> None:
        if self._local(ws.url):
            ws.connect_to_server()
        else:
            self.offsite.append(f"WebSocket {ws.url}")
            ws.close()

    def context(self, viewport: Mapping[str, int] = DESKTOP, **options: Any) -> BrowserContext:
        ctx = self.browser.new_context(
            viewport=dict(viewport),  # type: ignore[arg-type]
            service_workers="block",  # a service worker's fetches would bypass the route
            **options,
        )
        ctx.route(re.compile(r".*"), self.guard)
        ctx.route_web_socket(re.compile(r".*"), self.guard_ws)
        self._contexts.append(ctx)
        return ctx

    def page(self, viewport: Mapping[str, int] = DESKTOP, **options: Any) -> Page:
        """A new page in its own context (its own sessionStorage: one signed-in person)."""
        ctx = self.context(viewport, **options)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: self.page_errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda msg: self._csp(page, msg))
        return page

    def _csp(self, page: Page, msg: ConsoleMessage) -> None:
        """The console's Content-Security-Policy stops a reach for another host before the network
        (and the route) sees it; Chromium reports that on the console: it fails the test too."""
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.page_errors.append(f"{page.url}: {msg.text}")

    def close(self) -> None:
        for ctx in self._contexts:
            ctx.close()
        self._contexts.clear()

    # -- the console -----------------------------------------------------------------------------
    def goto(self, page: Page, route: str) -> None:
        """``route`` as the hash router has it, e.g. ``/cases/3``."""
        page.goto(f"{self.url}/console/#{route}")

    def open(self, page: Page, route: str) -> Locator:
        """Go to ``route`` and wait until its page has drawn what it loaded; returns the page's section."""
        self.goto(page, route)
        section = page.locator(f'#view section.page[data-ready="#{route}"]')
        section.wait_for()
        return section

    def sign_in(self, role: str, viewport: Mapping[str, int] = DESKTOP, **options: Any) -> Page:
        """A page signed in as ``role`` with its dev key through the sign-in form."""
        page = self.page(viewport, **options)
        self.goto(page, "/login")
        page.locator("[data-test=login-key]").fill(KEYS[role])
        page.locator("[data-test=login-submit]").click()
        page.locator(f"[data-test=whoami][data-role={role}]").wait_for(state="attached")  # folded on a phone
        return page

    def nav_pages(self, page: Page) -> list[str]:
        """The pages the navigation offers, as their routes (``#/cases``...)."""
        links = page.locator("[data-test=nav] [data-test=nav-link]")
        links.first.wait_for(state="attached")
        return sorted(str(a.get_attribute("data-route")) for a in links.all())

    def shots(self, page: Page, name: str, ready: Callable[[Page], None] | None = None) -> list[Path]:
        """``name`` at 1366×768 and at 390×844 (``ready`` waits for what the page must show)."""
        before = page.viewport_size
        saved = []
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(dict(size))  # type: ignore[arg-type]
            if ready is not None:
                ready(page)
            page.locator("#toast").wait_for(state="hidden")  # a confirmation fades after a few seconds
            page.evaluate("document.fonts ? document.fonts.ready : null")
            path = self.shots_dir / f"{name}-{size['width']}x{size['height']}.png"
            page.screenshot(path=str(path), animations="disabled", caret="hide")
            saved.append(path)
        if before is not None:
            page.set_viewport_size(before)
        return saved
