"""Fixtures of the browser tests (issue 15): a headless Chromium and the console in it.

- ``browser`` (module): Debian's ``chromium`` (``$CITYWATCH_TEST_CHROMIUM``, else ``chromium`` on PATH,
  else /usr/bin/chromium) driven by Playwright for Python — no ``playwright install`` download. It runs
  behind a proxy that does not exist (127.0.0.1:9) for every host but loopback, so even Chromium's own
  background traffic cannot leave the machine. When Playwright or Chromium is missing or the browser
  does not start, the tests skip and say why (``make test-services`` installs Chromium).
- ``console`` (function): a ``tests.browser.console.Console`` on the module's ``console_url`` fixture
  (each module starts its API once, ``console_api``). A request of any of its pages for a host that is
  not 127.0.0.1 / localhost, or an uncaught error in a page, fails the test that made it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.console import Console

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ENV = "CITYWATCH_TEST_CHROMIUM"
SHOTS_ENV = "CITYWATCH_SCREENSHOTS"  # where Console.shots saves (make screenshots: docs/screenshots)
REPO = Path(__file__).resolve().parents[2]
# Playwright already turns off most of Chromium's background services; these are the rest that phone home
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


def launch_failure(message: str) -> str:
    """Playwright's first line and what the browser itself said on stderr (its "[err]" lines)."""
    lines = message.strip().splitlines() or ["(no message)"]
    said = [line.split("[err] ", 1)[1] for line in lines if "][err] " in line and not line.startswith("  - ")]
    return "; ".join([lines[0][:200], *dict.fromkeys(said[-3:])])[:600]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("the browser tests need Playwright for Python: pip install -e '.[dev]'")
    exe = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip(
            f"no Chromium at {exe}: `make test-services` (apt-get install chromium) or set {CHROMIUM_ENV}"
        )
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(
            executable_path=exe,
            headless=True,
            args=CHROMIUM_ARGS,
            proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1,localhost"},
        )
    except Error as err:
        pw.stop()
        pytest.skip(f"Chromium ({exe}) does not start under Playwright: {launch_failure(str(err))}")
    try:
        yield browser
    finally:
        browser.close()
        pw.stop()


@pytest.fixture
def console(browser: Browser, console_url: str, tmp_path: Path) -> Iterator[Console]:
    configured = os.environ.get(SHOTS_ENV)
    shots = (REPO / configured) if configured else tmp_path / "screenshots"
    c = Console(browser, console_url, shots)
    try:
        yield c
    finally:
        c.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Fail the test itself (not its teardown) when a page of its console reached off the machine or
    threw an uncaught error."""
    try:
        return (yield)
    finally:
        c = getattr(item, "funcargs", {}).get("console")
        problems = []
        if isinstance(c, Console) and c.offsite:
            problems.append("requests that would leave the machine:\n  " + "\n  ".join(c.offsite))
        if isinstance(c, Console) and c.page_errors:
            errors = "\n  ".join(c.page_errors)
            problems.append(f"errors in the page (uncaught, or a reach refused by its CSP):\n  {errors}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
