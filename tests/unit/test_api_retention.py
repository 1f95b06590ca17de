"""Retention on SQLite and PostgreSQL: photos of cases that ended long ago go, unless a live (or
recently ended) case still uses the same content-addressed file; old dead letters go; a dry run
deletes nothing; the periodic task and ``python -m api retention`` run the same pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.ingest.sample import sample_event, sample_jpeg
from api.main import create_app
from api.models import DeadLetter
from api.services.retention import RetentionReport, run_retention
from tests.api_support import FakeClock, auth, db_url, ingest_sample, make_settings, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures

REPO = Path(__file__).resolve().parents[2]
DAYS = 365


@pytest.fixture
def api_settings_overrides() -> dict[str, Any]:
    return {"retention_photo_days": DAYS, "retention_dead_letter_days": 30}


def act(client: TestClient, who: str, case_id: int, action: str, **kw: Any) -> None:
    client.app.state.clock.advance(minutes=1)  # each step later than the last (updated_at moves)
    response = client.post(f"/cases/{case_id}/{action}", headers=auth(who), **kw)
    assert response.status_code == 200, f"{action}: {response.text}"


def report(client: TestClient, photo: bytes, rule: str, lat: str) -> int:
    form = {"rule": rule, "lat": lat, "lon": "114.39", "description": "retention", "grid": "红钢城-05"}
    response = client.post(
        "/reports", headers=auth("public"), data=form, files={"photo": ("p.jpg", photo, "image/jpeg")}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def camera(app: FastAPI, photo: bytes, stream: str) -> int:
    return ingest_sample(app, sample_event(stream=stream, jpeg=photo, location={"grid": "红钢城-03"}))


def closed_with_rectification(client: TestClient, before: bytes, after: bytes) -> int:
    cid = report(client, before, "unclean_road", "30.601")
    act(client, "reviewer", cid, "register")
    act(client, "dispatcher", cid, "dispatch")
    act(client, "admin", cid, "accept")  # the route may pick another unit: admin acts for it
    act(client, "admin", cid, "dispose", files={"photo": ("a.jpg", after, "image/jpeg")})
    act(client, "reviewer", cid, "close")
    return cid


def rejected(client: TestClient, cid: int) -> int:
    act(client, "reviewer", cid, "reject", json={"reason": "false_positive"})
    return cid


def add_dead_letter(app: FastAPI, received_at: Any, topic: str) -> None:
    with app.state.session_factory() as session, session.begin():
        session.add(
            DeadLetter(topic=topic, received_at=received_at, reason="test", payload="x", payload_size=1)
        )


PHOTOS = {
    name: sample_jpeg(f"retention-{name}") for name in ("shared", "report", "before", "after", "recent")
}


def test_photos_of_long_ended_cases_go_unless_a_live_case_uses_them(
    app: FastAPI, client: TestClient, clock: FakeClock
) -> None:
    store = app.state.evidence_store
    start = clock()
    old_camera = rejected(client, camera(app, PHOTOS["shared"], "cam-r1"))
    live_camera = camera(app, PHOTOS["shared"], "cam-r2")  # the same JPEG, still a candidate
    old_report = rejected(client, report(client, PHOTOS["report"], "street_vending", "30.602"))
    old_closed = closed_with_rectification(client, PHOTOS["before"], PHOTOS["after"])
    clock.advance(days=DAYS + 30)
    recent = rejected(client, report(client, PHOTOS["recent"], "illegal_structure", "30.603"))
    add_dead_letter(app, start, "old/topic")
    add_dead_letter(app, clock() - timedelta(days=29), "recent/topic")
    digests = {name: store.put(photo) for name, photo in PHOTOS.items()}  # already stored: same names

    settings = app.state.settings
    dry = run_retention(app.state.session_factory, store, settings, clock(), dry_run=True)
    assert all(store.exists(d) for d in digests.values()), "a dry run deletes nothing"
    done = run_retention(app.state.session_factory, store, settings, clock())
    assert (
        done
        == dry
        == RetentionReport(expired_cases=3, photos_removed=3, photos_kept=1, dead_letters_removed=1)
    )
    gone = {name for name, digest in digests.items() if not store.exists(digest)}
    assert gone == {"report", "before", "after"}  # shared (a live case) and recent stay
    for cid, code in (
        (old_report, 404),
        (old_closed, 404),
        (old_camera, 200),
        (live_camera, 200),
        (recent, 200),
    ):
        assert client.get(f"/cases/{cid}/evidence", headers=auth("reviewer")).status_code == code, cid
    assert (
        client.get(f"/cases/{old_closed}", headers=auth("reviewer")).json()["evidence_sha256"]
        == digests["before"]
    )  # the row keeps what the image was
    with app.state.session_factory() as session:
        assert list(session.scalars(select(DeadLetter.topic))) == ["recent/topic"]
    again = run_retention(app.state.session_factory, store, settings, clock())
    assert (again.photos_removed, again.dead_letters_removed) == (0, 0)


@pytest.mark.parametrize(
    ("photo_days", "dead_letter_days", "removed"),
    [(0, 0, (0, 0)), (0, 30, (0, 1)), (DAYS, 0, (1, 0))],
)
def test_zero_days_keeps_forever(
    app: FastAPI,
    client: TestClient,
    clock: FakeClock,
    photo_days: int,
    dead_letter_days: int,
    removed: tuple[int, int],
) -> None:
    rejected(client, report(client, PHOTOS["report"], "street_vending", "30.602"))
    add_dead_letter(app, clock(), "old/topic")
    clock.advance(days=DAYS + 30)
    settings = app.state.settings.model_copy(
        update={"retention_photo_days": photo_days, "retention_dead_letter_days": dead_letter_days}
    )
    done = run_retention(app.state.session_factory, app.state.evidence_store, settings, clock())
    assert (done.photos_removed, done.dead_letters_removed) == removed


def test_the_periodic_task_runs_inside_the_api(db_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(db_url, tmp_path, retention_interval_s=0.05, retention_dead_letter_days=30)
    app = create_app(settings, clock=clock)
    with TestClient(app):
        add_dead_letter(app, clock() - timedelta(days=31), "old/topic")
        # the task runs every 0.05 s and each pass replaces `last`, so a loaded machine can miss the one
        # report that removed the dead letter: wait on the table instead
        deadline = time.monotonic() + 30
        while True:
            with app.state.session_factory() as session:
                if session.scalar(select(DeadLetter.id)) is None:
                    break
            assert time.monotonic() < deadline, "the retention task never ran"
            time.sleep(0.05)
        assert app.state.retention.last is not None


def test_the_command_line_pass(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env.update(
        CITYWATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}", CITYWATCH_EVIDENCE_DIR=str(tmp_path / "ev")
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
    assert json.loads(run.stdout.splitlines()[-1]) == {
        "dry_run": True,
        "expired_cases": 0,
        "photos_removed": 0,
        "photos_kept": 0,
        "dead_letters_removed": 0,
        "store_bytes": 0,
        "budget_photos_removed": 0,
        "budget_bytes_removed": 0,
        "over_budget_bytes": 0,
    }
