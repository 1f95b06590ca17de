"""The ingest and the migrations on real databases (SQLite file and PostgreSQL)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.core.db import create_db_engine, create_session_factory
from api.core.evidence import EvidenceStore
from api.core.migrate import alembic_config, current_revision, head_revision, run_migrations
from api.ingest.sample import encode, new_violation_id, sample_event
from api.ingest.service import IngestOutcome, ingest_event
from api.main import create_app
from api.models import Base, Case, CaseEvent, DeadLetter
from tests.api_support import FakeClock, auth, fresh_database, make_settings, migrated_engine

PREFIX = "citywatch/v1"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with migrated_engine(db_url) as eng:
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(engine)


def test_schema_matches_the_models_and_upgrade_is_idempotent(engine: Engine) -> None:
    run_migrations(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    eng = create_db_engine(f"sqlite:///{tmp_path / 'down.db'}")
    run_migrations(eng)
    cfg = alembic_config()
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert current_revision(eng) is None
    run_migrations(eng)
    assert current_revision(eng) == head_revision()
    eng.dispose()


def test_workers_migrating_at_once_on_a_fresh_database(tmp_path: Path) -> None:
    eng = create_db_engine(f"sqlite:///{tmp_path / 'race.db'}")
    errors: list[BaseException] = []
    changed: list[bool] = []

    def migrate() -> None:
        try:
            changed.append(run_migrations(eng))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(changed) == [False, False, True]  # one migrated, the others found it done
    assert current_revision(eng) == head_revision()
    eng.dispose()


def test_concurrent_consumers_make_one_case_per_violation(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Four consumers get the same 15 events (3 violations x seq 0..4), each in its own order."""
    store = EvidenceStore(tmp_path / "evidence")
    vids = [new_violation_id() for _ in range(3)]
    kinds = ["opened", "updated", "updated", "updated", "cleared"]
    messages = [
        encode(sample_event(violation_id=vid, event=kinds[seq], seq=seq)) for vid in vids for seq in range(5)
    ]
    outcomes: list[IngestOutcome] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def consume(seed: int) -> None:
        order = messages[:]
        random.Random(seed).shuffle(order)
        barrier.wait()
        for payload in order:
            with sessions() as session:
                result = ingest_event(session, f"{PREFIX}/violations/cam-001", payload, store)
            with lock:
                outcomes.append(result.outcome)

    threads = [threading.Thread(target=consume, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(outcomes) == 60
    assert outcomes.count(IngestOutcome.created) == 3
    assert outcomes.count(IngestOutcome.dead_letter) == 0
    assert outcomes.count(IngestOutcome.duplicate) == 45
    with sessions() as s:
        cases = s.scalars(select(Case).where(Case.violation_id.in_(vids))).all()
        assert len(cases) == 3
        for case in cases:
            assert (case.last_seq, case.event_count, case.violation_state) == (4, 5, "cleared")
            seqs = s.scalars(select(CaseEvent.seq).where(CaseEvent.case_id == case.id)).all()
            assert sorted(s for s in seqs if s is not None) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "payload",
    [b"\x00\x00\x00 binary", encode(sample_event(zone="a\x00b"))],
    ids=["raw-nul", "escaped-nul"],
)
def test_nul_characters_are_dead_lettered_not_a_database_error(
    sessions: sessionmaker[Session], tmp_path: Path, payload: bytes
) -> None:
    topic = f"nul-test/{new_violation_id()}"
    with sessions() as session:
        result = ingest_event(session, topic, payload, EvidenceStore(tmp_path / "ev"), topic_prefix=PREFIX)
    assert result.outcome is IngestOutcome.dead_letter
    with sessions() as s:
        letter = s.scalars(select(DeadLetter).where(DeadLetter.topic == topic)).one()
        assert "\x00" not in letter.payload
        assert result.reason == letter.reason
        assert letter.payload_size == len(payload)
        assert s.scalar(select(func.count()).select_from(DeadLetter).where(DeadLetter.topic == topic)) == 1


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_revision_0003_backfills_reviews_and_serves_them(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Cases judged before revision 0003 get reviewed_at / reviewed_by from their latest register or
    reject event; then ``GET /reviews`` and a correction work on the migrated database, and the
    revision goes down and up again."""
    if kind == "postgres":
        request.getfixturevalue("pg_url")  # skips without PostgreSQL
    cases, events = Base.metadata.tables["cases"], Base.metadata.tables["case_events"]
    t0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    with fresh_database(kind, tmp_path) as url:
        eng = create_db_engine(url)
        try:
            run_migrations(eng, "0002")
            judged = {  # name: (source, status, resolution, [(event kind, actor, minutes after t0)])
                "confirmed": (
                    "camera",
                    "dispatched",
                    None,
                    [("register", "reviewer:r1", 1), ("dispatch", "d", 2)],
                ),
                "rejected": (
                    "camera",
                    "rejected",
                    "false_positive",
                    [("register", "reviewer:r1", 3), ("reject", "admin:a1", 4)],
                ),
                "untouched": ("camera", "candidate", None, []),
                "report": ("citizen", "registered", None, [("register", "reviewer:r1", 5)]),
            }
            ids: dict[str, int] = {}
            with eng.begin() as conn:
                for name, (source, status, resolution, history) in judged.items():
                    ids[name] = conn.execute(
                        cases.insert().values(
                            violation_id=f"v-{name}",
                            rule="illegal_parking",
                            label="vehicle",
                            stream="cam-mig" if source == "camera" else None,
                            bbox=[0.1, 0.2, 0.3, 0.4] if source == "camera" else None,
                            first_seen=t0,
                            last_seen=t0,
                            status=status,
                            resolution=resolution,
                            source=source,
                            last_seq=0,
                            model_name="m",
                            model_version="1",
                        )
                    ).inserted_primary_key[0]
                    for kind_, actor, minutes in history:
                        conn.execute(
                            events.insert().values(
                                case_id=ids[name],
                                kind=kind_,
                                actor=actor,
                                role=actor.split(":")[0],
                                at=t0 + timedelta(minutes=minutes),
                            )
                        )
            run_migrations(eng)
            with eng.connect() as conn:
                rows = {r.id: (r.reviewed_at, r.reviewed_by) for r in conn.execute(select(cases))}
            assert rows == {
                ids["confirmed"]: (t0 + timedelta(minutes=1), "reviewer:r1"),
                ids["rejected"]: (t0 + timedelta(minutes=4), "admin:a1"),
                ids["untouched"]: (None, None),
                ids["report"]: (t0 + timedelta(minutes=5), "reviewer:r1"),
            }

            app = create_app(make_settings(url, tmp_path), clock=FakeClock(t0 + timedelta(hours=1)))
            with TestClient(app) as client:
                page = client.get("/reviews", headers=auth("dispatcher"), params={"limit": 1}).json()
                assert [(i["case_id"], i["verdict"]) for i in page["items"]] == [
                    (ids["confirmed"], "confirmed")
                ]
                page = client.get(
                    "/reviews", headers=auth("dispatcher"), params={"since": page["next_since"]}
                ).json()
                assert [(i["case_id"], i["verdict"], i["reason"]) for i in page["items"]] == [
                    (ids["rejected"], "rejected", "false_positive")
                ]
                body = {"label": "vendor", "bbox": [1, 2, 30, 40]}
                response = client.post(
                    f"/cases/{ids['confirmed']}/correct", headers=auth("reviewer"), json=body
                )
                assert response.status_code == 200, response.text
                page = client.get(
                    "/reviews", headers=auth("dispatcher"), params={"since": page["next_since"]}
                ).json()
                assert [(i["case_id"], i["verdict"], i["corrected_bbox"]) for i in page["items"]] == [
                    (ids["confirmed"], "corrected", [1, 2, 30, 40])
                ]
                assert page["items"][0]["reviewed_at"] == "2026-03-02T02:00:00Z"

            cfg = alembic_config()
            with eng.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "0002")
            assert current_revision(eng) == "0002"
            run_migrations(eng)
            assert current_revision(eng) == head_revision()
        finally:
            eng.dispose()
