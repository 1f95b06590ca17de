"""The console at its desk (issue 15): each role signs in and sees only its pages and, on a case, only
the actions the lifecycle lets it take now; the assessment page shows the seeded month with the
figures of ``GET /assessment``. The database is seeded before the API starts: the month of
api/ASSESSMENT.md's worked example (tests/unit/test_api_assessment.py) and two cases nobody has
handled yet, so every status a button depends on is there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.console import PHONE, Console, api_get, console_api
from tests.conftest import unique_topic_prefix

pytestmark = [pytest.mark.mqtt]

ROLES = ["admin", "reviewer", "dispatcher", "field_unit"]
# the console's pages a role may open (what the nav lists), as api/AUTH.md gives each role its work:
# the desk reads streams and models, a field unit its own cases, the map and the assessment
DESK_PAGES = ["#/assessment", "#/cases", "#/map", "#/models", "#/streams"]
NAV = {
    "admin": DESK_PAGES,
    "reviewer": DESK_PAGES,
    "dispatcher": DESK_PAGES,
    "field_unit": ["#/assessment", "#/cases", "#/map"],
}
MONTH = "2026-03"
# the work each role comes for must be on offer (the lifecycle check below only bounds it from above)
MUST_OFFER = {
    ("admin", "candidate"): "register",
    ("reviewer", "candidate"): "register",
    ("reviewer", "verifying"): "close",
    ("dispatcher", "registered"): "dispatch",
    ("field_unit", "dispatched"): "accept",
    ("field_unit", "in_progress"): "dispose",
}


def seed(folder: Path) -> dict[str, int]:
    """The worked example's month plus a candidate and a registered case; returns a case id per status
    (and ``other_unit``: a case another unit holds). The API then runs on this database."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.api_support import FakeClock, auth, make_settings
    from tests.unit.test_api_assessment import case, seed_march

    clock = FakeClock()
    app = create_app(make_settings(f"sqlite:///{folder / 'cases.db'}", folder), clock=clock)
    with TestClient(app) as client:
        seed_march(app, client, clock)
        fresh, registered = case(app, 8, "红钢城-01"), case(app, 9, "红钢城-01")
        r = client.post(f"/cases/{registered}/register", headers=auth("reviewer"), json={})
        assert r.status_code == 200, r.text
        rows = client.get("/cases", params={"page_size": 100}, headers=auth("admin")).json()["data"]
    assert fresh and registered
    by_status: dict[str, int] = {}
    for row in sorted(rows, key=lambda c: c["id"]):
        if row["unit"] in (None, "hgc-squad"):
            by_status.setdefault(row["status"], row["id"])
        else:
            by_status.setdefault("other_unit", row["id"])
    want = {"candidate", "registered", "dispatched", "in_progress", "verifying", "closed", "other_unit"}
    assert want <= set(by_status), by_status
    return by_status


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("desk-api")
    return folder, seed(folder)


@pytest.fixture(scope="module")
def console_url(seeded: tuple[Path, dict[str, int]], mqtt_broker: tuple[str, int]) -> Iterator[str]:
    with console_api(seeded[0], mqtt_broker, unique_topic_prefix("console-desk")) as url:
        yield url


@pytest.fixture(scope="module")
def cases(seeded: tuple[Path, dict[str, int]]) -> dict[str, int]:
    return seeded[1]


def test_a_reach_off_the_machine_fails_the_test(console: Console) -> None:
    """The guard itself: a page that asks another host for something is caught (then forgiven here) —
    by the route where no CSP stops it first, by the console's CSP report on the console's pages."""
    page = console.page()
    page.goto(f"{console.url}/health")  # JSON: no CSP of its own
    page.evaluate("fetch('https://example.org/font.woff2').catch(() => null)")  # awaits the abort
    assert console.offsite == ["GET https://example.org/font.woff2 (fetch)"]
    console.offsite.clear()
    console.goto(page, "/login")
    page.locator("[data-test=login-key]").wait_for()
    page.evaluate("fetch('https://example.org/tile.png').catch(() => null)")
    assert console.page_errors, "the CSP refusal was not caught"
    assert all("https://example.org/tile.png" in e for e in console.page_errors), console.page_errors
    assert console.offsite == []
    console.page_errors.clear()


def test_a_wrong_key_is_refused(console: Console) -> None:
    page = console.page()
    console.goto(page, "/login")
    page.locator("[data-test=login-key]").fill("not-a-key-of-this-api")
    page.locator("[data-test=login-submit]").click()
    page.locator("[data-test=login-error]").wait_for()
    assert page.locator("[data-test=whoami]").inner_text() == ""
    console.shots(page, "login")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_only_its_pages(console: Console, role: str) -> None:
    page = console.sign_in(role)
    assert console.nav_pages(page) == NAV[role]
    assert page.locator("[data-test=whoami]").get_attribute("data-role") == role
    for route in DESK_PAGES:
        if route in NAV[role]:
            section = console.open(page, route[1:])
            assert section.locator("[data-test=forbidden]").count() == 0, route
        else:  # typed into the address bar: the page says the role may not open it
            console.goto(page, route[1:])
            page.locator(f'section.page[data-page="{route}"] [data-test=forbidden]').wait_for()


def shown_actions(console: Console, page: Any, case_id: int) -> list[str]:
    section = console.open(page, f"/cases/{case_id}")
    buttons = section.locator("[data-test=case-actions][data-ready] [data-test=action]")
    return [str(b.get_attribute("data-action")) for b in buttons.all()]


@pytest.mark.parametrize("role", ROLES)
def test_a_case_offers_the_role_exactly_its_actions_now(
    console: Console, cases: dict[str, int], role: str
) -> None:
    from api.services.auth import Role
    from api.services.lifecycle import allowed_actions

    page = console.sign_in(role)
    for status, case_id in sorted(cases.items()):
        if role == "field_unit" and status in ("other_unit", "candidate", "registered"):
            # another unit's case, or one no unit holds yet: a field unit may not read it
            console.goto(page, f"/cases/{case_id}")
            page.locator("[data-test=case-error]").wait_for()
            continue
        want = api_get(console.url, f"/cases/{case_id}/actions", role)
        from_api = [a["action"] for a in want["data"]]
        lifecycle = allowed_actions(want["status"], Role(role))
        # the API offers nothing the lifecycle forbids the role (it also leaves out what the case's state
        # rules out, e.g. `hold` for a case on hold; `correct` and `comment` are no transitions) ...
        assert set(from_api) - {"correct", "comment"} <= set(lifecycle), (status, from_api, lifecycle)
        # ... and the page shows exactly what the API offers
        assert shown_actions(console, page, case_id) == from_api, (role, status)
        if (role, status) in MUST_OFFER:
            assert MUST_OFFER[role, status] in from_api, (role, status, from_api)


def test_assessment_page_shows_the_month_of_get_assessment(console: Console) -> None:
    """Every figure the table shows is the API's, row by row (by unit, street office and grid)."""
    page = console.sign_in("dispatcher")
    for by in ("unit", "street", "grid"):
        section = console.open(page, f"/assessment?month={MONTH}&by={by}")
        table = section.locator(f"[data-test=assessment-table][data-month='{MONTH}'][data-by={by}]")
        want = api_get(console.url, "/assessment", "dispatcher", month=MONTH, by=by)["rows"]
        rows = table.locator("[data-test=assessment-row]")
        assert [r.get_attribute("data-key") for r in rows.all()] == [w["key"] for w in want] != []
        for row, expected in zip(rows.all(), want, strict=True):
            cells = {
                str(c.get_attribute("data-field")): c.get_attribute("data-value")
                for c in row.locator("[data-field]").all()
            }
            assert {"rank", "score", "dispatched", "disposed", "closed", "disposal_rate"} <= set(cells), cells
            for field, shown in cells.items():
                value = expected[field]
                assert shown == ("" if value is None else str(value)), (by, expected["key"], field)
        if by == "unit":
            console.shots(page, "assessment")


@pytest.mark.parametrize("route", ["/cases", "/map"])
def test_page_screenshots(console: Console, route: str) -> None:
    """The seeded cases in the list and on the map (the other pages are shot where they show most:
    the login and assessment above, a case, the streams and the models in test_console_demo.py)."""
    page = console.sign_in("admin")
    console.open(page, route)
    console.shots(page, route.strip("/"))


def test_a_field_unit_works_from_a_phone(console: Console, cases: dict[str, int]) -> None:
    """390×844: one column, the navigation folded behind its button, the own unit's cases only."""
    page = console.sign_in("field_unit", PHONE, is_mobile=True, has_touch=True)
    console.open(page, "/cases")
    assert not page.locator("[data-test=nav]").is_visible()
    page.locator("#nav-toggle").click()
    page.locator("[data-test=nav]").wait_for(state="visible")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width} px)"
    shown = {int(str(r.get_attribute("data-case-id"))) for r in page.locator("[data-test=case-row]").all()}
    listed = api_get(console.url, "/cases", "field_unit", page_size=100)["data"]
    assert shown == {c["id"] for c in listed} and shown, shown
    assert cases["other_unit"] not in shown
