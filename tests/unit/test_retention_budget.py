"""Retention under a disk budget, on SQLite and PostgreSQL: with a tiny budget the images of ended
cases go — secondary images (after-images, history images) first, then the main evidence, the case
that ended longest ago first — and an image an open case uses never goes; each deletion is in the
case's history and the image answers 410 Gone; a dry run plans the same and deletes nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.ingest.sample import sample_event, sample_jpeg
from api.models import Case
from api.services.retention import run_retention
from api.services.retention_budget import MB, PRUNED_KIND, enforce_budget
from tests.api_support import FakeClock, auth, db_url, ingest_sample, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures

REPO = Path(__file__).resolve().parents[2]

PHOTOS = {
    name: sample_jpeg(f"budget-{name}")
    for name in ("shared", "before", "after", "old", "new", "open", "candidate")
}
# what a budget pass deletes, in order: the closed case's disposal photo (a secondary image), then
# main evidence oldest ended first; "shared" (an old rejected case's, but a candidate uses the same
# JPEG), "open" and "candidate" never
ORDER = ["after", "before", "old", "new"]
NEVER = ["shared", "open", "candidate"]


@pytest.fixture
def api_settings_overrides() -> dict[str, Any]:
    return {"retention_photo_days": 0, "retention_dead_letter_days": 0}


def act(client: TestClient, who: str, case_id: int, action: str, **kw: Any) -> None:
    cast(FastAPI, client.app).state.clock.advance(
        minutes=1
    )  # each step later than the last (updated_at moves)
    response = client.post(f"/cases/{case_id}/{action}", headers=auth(who), **kw)
    assert response.status_code == 200, f"{action}: {response.text}"


def report(client: TestClient, photo: bytes, rule: str, lat: str) -> int:
    form = {"rule": rule, "lat": lat, "lon": "114.39", "description": "budget", "grid": "红钢城-05"}
    response = client.post(
        "/reports", headers=auth("public"), data=form, files={"photo": ("p.jpg", photo, "image/jpeg")}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def camera(app: FastAPI, stream: str) -> int:
    event = sample_event(stream=stream, jpeg=PHOTOS["shared"], location={"grid": "红钢城-03"})
    return ingest_sample(app, event)


def world(app: FastAPI, client: TestClient) -> dict[str, int]:
    """The cases, by the photo that is their main evidence ("after": the closed case's disposal photo)."""
    cases = {"shared": camera(app, "cam-b1")}
    act(client, "reviewer", cases["shared"], "reject", json={"reason": "false_positive"})  # ends first
    cases["candidate"] = camera(app, "cam-b2")  # the same JPEG, still a candidate
    cases["before"] = cid = report(client, PHOTOS["before"], "unclean_road", "30.601")
    act(client, "reviewer", cid, "register")
    act(client, "dispatcher", cid, "dispatch")
    act(client, "admin", cid, "accept")
    act(client, "admin", cid, "dispose", files={"photo": ("a.jpg", PHOTOS["after"], "image/jpeg")})
    act(client, "reviewer", cid, "close")
    for name, lat in (("old", "30.602"), ("new", "30.603")):
        cases[name] = report(client, PHOTOS[name], "street_vending", lat)
        act(client, "reviewer", cases[name], "reject", json={"reason": "out_of_scope"})
    cases["open"] = report(client, PHOTOS["open"], "illegal_structure", "30.604")
    act(client, "reviewer", cases["open"], "register")
    return cases


def evidence_status(client: TestClient, case_id: int, **params: str) -> int:
    return int(client.get(f"/cases/{case_id}/evidence", headers=auth("reviewer"), params=params).status_code)


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry"])
@pytest.mark.parametrize("needed", [0, 1, 2, 3, len(ORDER)])
def test_over_budget_ended_cases_images_go_oldest_first_never_an_open_cases(
    app: FastAPI,
    client: TestClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    needed: int,
    dry_run: bool,
) -> None:
    store = app.state.evidence_store
    cases = world(app, client)
    digests = {name: store.put(photo) for name, photo in PHOTOS.items()}  # already stored: same names
    sizes = {name: store.size(d) for name, d in digests.items()}
    total = store.usage_bytes()
    assert total == sum(sizes.values())
    # the smallest budget that ``needed`` deletions meet; "all of them": a tiny budget of 1 byte
    tiny = needed == len(ORDER)
    budget = 1 if tiny else total - sum(sizes[n] for n in ORDER[: max(needed - 1, 0)]) - (needed > 0)

    with caplog.at_level(logging.WARNING, logger="api.services.retention_budget"):
        result = enforce_budget(app.state.session_factory, store, budget, clock(), dry_run=dry_run)

    expected = ORDER[:needed]
    assert [p.sha256 for p in result.pruned] == [digests[n] for n in expected]
    assert [p.main for p in result.pruned] == [n != "after" for n in expected]
    assert [p.case_ids for p in result.pruned] == [
        (cases["before"] if n in ("after", "before") else cases[n],) for n in expected
    ]
    assert result.bytes_removed == sum(sizes[n] for n in expected)
    assert result.store_bytes == total
    assert result.over_budget_bytes == (sum(sizes[n] for n in NEVER) - 1 if tiny else 0)
    assert ("over its budget" in caplog.text) == tiny
    gone = {name for name, digest in digests.items() if not store.exists(digest)}
    assert gone == (set() if dry_run else set(expected))
    assert not gone & set(NEVER)  # an open case's image never goes
    histories = {
        name: client.get(f"/cases/{cid}/events", headers=auth("reviewer")).json()["data"]
        for name, cid in cases.items()
    }
    pruned_events = {
        name: [e["data"]["sha256"] for e in events if e["kind"] == PRUNED_KIND]
        for name, events in histories.items()
    }
    recorded = {digest for found in pruned_events.values() for digest in found}
    assert recorded == {digests[n] for n in gone}  # every deletion is recorded; a dry run records none
    for name in NEVER:
        assert evidence_status(client, cases[name]) == 200, name
    if dry_run:
        return
    for name in set(expected) - {"after"}:
        response = client.get(f"/cases/{cases[name]}/evidence", headers=auth("reviewer"))
        assert response.status_code == 410, name
        assert "budget" in response.json()["detail"]
    if "after" in expected:
        dispose = next(e for e in histories["before"] if e["evidence_sha256"] == digests["after"])
        event_url = f"/cases/{cases['before']}/events/{dispose['id']}/evidence"
        assert client.get(event_url, headers=auth("reviewer")).status_code == 410
    again = enforce_budget(app.state.session_factory, store, budget, clock())
    assert again.pruned == ()  # a second pass finds nothing more to delete and records nothing twice


def test_the_retention_pass_applies_the_budget_in_megabytes(
    app: FastAPI, client: TestClient, clock: FakeClock
) -> None:
    store = app.state.evidence_store
    cases = world(app, client)
    big = store.put(b"\xff\xd8\xff" + b"\0" * (2 * MB))  # the rejected "old" case's big after-image
    with app.state.session_factory() as session, session.begin():
        session.execute(update(Case).where(Case.id == cases["old"]).values(after_evidence_sha256=big))
    settings = app.state.settings.model_copy(update={"evidence_budget_mb": 2})
    dry = run_retention(app.state.session_factory, store, settings, clock(), dry_run=True)
    assert store.exists(big), "a dry run deletes nothing"
    done = run_retention(app.state.session_factory, store, settings, clock())
    assert dry == done
    after, old = (hashlib.sha256(PHOTOS[n]).hexdigest() for n in ("after", "old"))
    assert [p.sha256 for p in done.pruned] == [after, big]
    assert (done.budget_photos_removed, done.budget_bytes_removed) == (2, 2 * MB + 3 + len(PHOTOS["after"]))
    assert done.store_bytes > 2 * MB and done.over_budget_bytes == 0
    assert not store.exists(big) and store.exists(old)  # the old case's main evidence: under budget now
    assert evidence_status(client, cases["old"], which="after") == 410
    unlimited = run_retention(app.state.session_factory, store, app.state.settings, clock())
    assert (unlimited.store_bytes, unlimited.budget_photos_removed) == (0, 0)  # 0 MB: no budget


def test_the_command_line_dry_run_lists_what_would_go(app: FastAPI, client: TestClient) -> None:
    store = app.state.evidence_store
    cases = world(app, client)
    big = store.put(b"\xff\xd8\xff" + b"\0" * (2 * MB))
    with app.state.session_factory() as session, session.begin():
        session.execute(update(Case).where(Case.id == cases["old"]).values(after_evidence_sha256=big))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env.update(
        CITYWATCH_DATABASE_URL=app.state.settings.database_url,
        CITYWATCH_EVIDENCE_DIR=str(store.root),
        CITYWATCH_EVIDENCE_BUDGET_MB="2",
        CITYWATCH_RETENTION_PHOTO_DAYS="0",
    )
    run = subprocess.run(
        [sys.executable, "-m", "api", "retention", "--dry-run"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    *lines, figures = run.stdout.splitlines()
    after = hashlib.sha256(PHOTOS["after"]).hexdigest()
    assert [line.split()[:3] for line in lines] == [["would", "delete", after], ["would", "delete", big]]
    assert f"ended cases {cases['old']})" in lines[1]
    assert json.loads(figures)["budget_photos_removed"] == 2
    assert store.exists(big) and store.exists(after)  # a dry run deletes nothing
