"""The batched ingest (``api.ingest.batch``) against SQLite and PostgreSQL: in one batch, the same
outcomes as ``ingest_event`` one message at a time — arrival orders, duplicates inside the batch,
dead letters between valid events, evidence, the duplicate check of the routing table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from api.core.db import create_db_engine, create_session_factory
from api.core.evidence import EvidenceStore
from api.core.migrate import run_migrations
from api.ingest.batch import Message, ingest_batch, store_evidence
from api.ingest.sample import encode, new_violation_id, sample_event, sample_jpeg
from api.ingest.service import ingest_event
from api.models import Case, CaseEvent, CaseStatus, DeadLetter
from api.services.routing import RoutingTable
from tests.api_support import migrated_engine

PREFIX = "citywatch/v1"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with migrated_engine(db_url) as eng:
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(engine)


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    s = EvidenceStore(tmp_path / "evidence")
    s.ensure_writable()
    return s


def message(body: dict[str, Any]) -> Message:
    return Message(f"{PREFIX}/violations/{body['stream']}", encode(body))


def event(vid: str, stream: str, kind: str = "opened", seq: int = 0, **extra: Any) -> dict[str, Any]:
    jpeg = sample_jpeg(f"{vid}-{seq}") if kind == "opened" else None
    return sample_event(violation_id=vid, stream=stream, event=kind, seq=seq, jpeg=jpeg, **extra)


def run_batch(
    sessions: sessionmaker[Session], store: EvidenceStore, msgs: list[Message], **kw: Any
) -> list[str]:
    with sessions() as session:
        results = ingest_batch(session, msgs, store, topic_prefix=PREFIX, **kw)
    assert results is not None
    return [r.outcome.value for r in results]


def run_one_by_one(
    sessions: sessionmaker[Session], store: EvidenceStore, msgs: list[Message], **kw: Any
) -> list[str]:
    out = []
    for m in msgs:
        with sessions() as session:
            out.append(
                ingest_event(session, m.topic, m.payload, store, topic_prefix=PREFIX, **kw).outcome.value
            )
    return out


def snapshot(sessions: sessionmaker[Session], stream: str) -> list[tuple[Any, ...]]:
    """Cases and histories of a stream, in the order the cases were made (ids left out)."""
    with sessions() as s:
        cases = s.scalars(select(Case).where(Case.stream == stream).order_by(Case.id)).all()
        out: list[tuple[Any, ...]] = []
        for c in cases:
            history = s.scalars(
                select(CaseEvent).where(CaseEvent.case_id == c.id).order_by(CaseEvent.id)
            ).all()
            out.append(
                (
                    c.status, c.violation_state, c.last_seq, c.event_count,
                    c.evidence_sha256 is not None, c.last_seen, c.cleared_at,
                    [(h.kind, h.seq, (h.note or "")[:20]) for h in history],
                )
            )  # fmt: skip
        return out


def scenario(stream: str) -> list[Message]:
    """Everything at once: new violations, events of one violation out of order and repeated,
    a replay with another sent_at, and bad messages in between."""
    a, b, c = (new_violation_id() for _ in range(3))
    bodies = [
        event(a, stream, "updated", 1),
        event(a, stream, "opened", 0),
        event(b, stream),
        event(b, stream),  # redelivered in the same batch
        event(a, stream, "cleared", 3),
        event(b, stream, sent_at="2027-01-01T00:00:00+00:00"),  # replayed
        event(c, stream, "updated", 2),
        event(a, stream, "updated", 2),  # late
    ]
    msgs = [message(x) for x in bodies]
    msgs.insert(3, Message(f"{PREFIX}/violations/{stream}", b"{broken"))
    msgs.insert(6, message({**event(new_violation_id(), stream), "seq": "x"}))
    return msgs


def test_a_batch_has_the_outcomes_of_one_by_one(
    sessions: sessionmaker[Session], store: EvidenceStore
) -> None:
    s1, s2 = f"cam-{uuid.uuid4().hex[:8]}", f"cam-{uuid.uuid4().hex[:8]}"
    batched = run_batch(sessions, store, scenario(s1))
    single = run_one_by_one(sessions, store, scenario(s2))
    assert batched == single == [
        "created", "stale", "created", "dead_letter", "duplicate", "updated", "dead_letter",
        "duplicate", "created", "stale",
    ]  # fmt: skip
    assert snapshot(sessions, s1) == snapshot(sessions, s2)


def test_a_second_batch_updates_the_cases_of_the_first(
    sessions: sessionmaker[Session], store: EvidenceStore
) -> None:
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    vids = [new_violation_id() for _ in range(20)]
    assert set(run_batch(sessions, store, [message(event(v, stream)) for v in vids])) == {"created"}
    again = [message(event(v, stream, "cleared", 5)) for v in vids] + [message(event(vids[0], stream))]
    assert run_batch(sessions, store, again) == ["updated"] * 20 + ["duplicate"]
    with sessions() as s:
        states = s.scalars(select(Case.violation_state).where(Case.stream == stream)).all()
    assert states == ["cleared"] * 20


def test_dead_letters_keep_their_reasons(sessions: sessionmaker[Session], store: EvidenceStore) -> None:
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    msgs = [
        Message(f"{PREFIX}/violations/{stream}", b""),
        message(event(new_violation_id(), stream)),
        message({**event(new_violation_id(), stream), "schema": "citywatch.violation/9"}),
    ]
    with sessions() as session:
        results = ingest_batch(session, msgs, store, topic_prefix=PREFIX)
    assert results is not None
    assert [r.outcome.value for r in results] == ["dead_letter", "created", "dead_letter"]
    with sessions() as s:
        rows = {r.id: r for r in s.scalars(select(DeadLetter).where(DeadLetter.topic.endswith(stream)))}
    first, last = results[0].dead_letter_id, results[2].dead_letter_id
    assert first is not None and last is not None
    assert rows[first].reason == "payload is empty"
    assert "unsupported schema version" in rows[last].reason


def hijack(owner: str, other: str) -> list[Message]:
    """A violation of ``owner``'s stream, then events with its id from ``other``'s stream (in the same
    batch and after it), then ``owner``'s own next events."""
    vid = new_violation_id()
    return [
        message(event(vid, owner)),
        message(event(vid, other, "updated", 1, zone="elsewhere")),  # same batch as the case's first
        message(event(vid, other, "cleared", 5)),
        message(event(vid, owner, "updated", 1)),  # seq 1 was not taken by the refused event
        message(event(vid, owner, "cleared", 2)),
    ]


@pytest.mark.parametrize("how", ["batch", "one_by_one"])
def test_a_violation_id_is_bound_to_its_stream(
    sessions: sessionmaker[Session], store: EvidenceStore, how: str
) -> None:
    owner, other = (f"cam-{uuid.uuid4().hex[:8]}" for _ in range(2))
    msgs = hijack(owner, other)
    run = run_batch if how == "batch" else run_one_by_one
    assert run(sessions, store, msgs) == ["created", "dead_letter", "dead_letter", "updated", "updated"]
    with sessions() as s:
        case = s.scalars(select(Case).where(Case.violation_id == json_vid(msgs[0]))).one()
        letters = s.scalars(select(DeadLetter).where(DeadLetter.topic.endswith(other))).all()
    assert (case.stream, case.zone, case.last_seq, case.violation_state) == (
        owner,
        "no-parking-1",
        2,
        "cleared",
    )
    assert case.event_count == 3
    assert len(letters) == 2
    assert all(f"is bound to stream {owner!r}" in r.reason and repr(other) in r.reason for r in letters)
    assert snapshot(sessions, other) == []


def json_vid(m: Message) -> str:
    return str(json.loads(m.payload)["violation_id"])


def test_evidence_is_stored_once_per_image(store: EvidenceStore) -> None:
    jpegs = [sample_jpeg("a"), sample_jpeg("b"), sample_jpeg("a")]
    digests = store_evidence(store, jpegs)
    assert digests[0] == digests[2] != digests[1]
    assert [store.read(d) for d in digests] == jpegs
    assert not list(store.root.rglob("*.tmp"))
    assert store_evidence(store, jpegs) == digests  # stored already: nothing rewritten


def _registered_case(sessions: sessionmaker[Session], store: EvidenceStore, body: dict[str, Any]) -> None:
    with sessions() as session:
        ingest_event(session, f"{PREFIX}/violations/{body['stream']}", encode(body), store)
    with sessions() as session, session.begin():
        case = session.scalars(select(Case).where(Case.violation_id == body["violation_id"])).one()
        case.status = CaseStatus.registered.value


@pytest.mark.parametrize(("near", "merged"), [(True, True), (False, False)], ids=["same view", "elsewhere"])
def test_the_duplicate_check_runs_as_one_by_one(
    sessions: sessionmaker[Session], store: EvidenceStore, near: bool, merged: bool
) -> None:
    """New cases next to a registered one are merged into it, in a batch as one by one."""
    routing = RoutingTable.load(None)
    outcomes: dict[str, list[str]] = {}
    for mode, run in (("batch", run_batch), ("single", run_one_by_one)):
        stream = f"cam-{uuid.uuid4().hex[:8]}"
        # a place of its own: the shared PostgreSQL database must not merge other tests' cases
        lat = 40.0 + uuid.uuid4().int % 10_000 / 1e4
        here: dict[str, Any] = {"lat": lat, "lon": 100.0, "grid": None, "address": None, "road": None}
        there = {**here, "lat": lat - 5.0}
        old = event(new_violation_id(), stream if near else f"{stream}-far", location=here if near else there)
        _registered_case(sessions, store, old)
        new = [message(event(new_violation_id(), stream, location=here)) for _ in range(3)]
        run(sessions, store, new, routing=routing)
        with sessions() as s:
            rows = s.scalars(select(Case).where(Case.stream == stream, Case.status != "registered")).all()
        outcomes[mode] = sorted(c.status for c in rows)
    assert outcomes["batch"] == outcomes["single"]
    assert outcomes["batch"] == (["merged"] * 3 if merged else ["candidate"] * 3)


@pytest.mark.postgres
def test_rows_a_concurrent_worker_inserted_are_not_taken_for_ours(pg_url: str) -> None:
    """The batch reads back the ids of the cases it inserted with ``xmin = pg_current_xact_id()``:
    a case another worker committed meanwhile (same violation id) must not count as created."""
    from sqlalchemy import text

    from api.ingest.service import _case_values
    from api.ingest.validation import parse_event

    eng = create_db_engine(pg_url)
    run_migrations(eng)
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    ours, theirs = (event(new_violation_id(), stream) for _ in range(2))
    rows = [
        _case_values(parse_event(message(b).topic, message(b).payload, topic_prefix=PREFIX), None)
        for b in (ours, theirs)
    ]
    try:
        with eng.connect() as a, eng.connect() as b:
            tx = a.begin()
            a.execute(insert(Case), [rows[0]])
            with b.begin():
                b.execute(insert(Case), [rows[1]])
            mine = (
                a.execute(
                    select(Case.violation_id)
                    .where(Case.violation_id.in_([ours["violation_id"], theirs["violation_id"]]))
                    .where(text("cases.xmin = pg_current_xact_id()::xid"))
                )
                .scalars()
                .all()
            )
            assert mine == [ours["violation_id"]]
            tx.rollback()
    finally:
        eng.dispose()
