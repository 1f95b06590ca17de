"""ingest_event on a migrated SQLite file: payload table, arrival-order table, evidence, errors."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.core.db import create_session_factory
from api.core.evidence import EvidenceStore
from api.errors import IngestError, IngestUnavailableError, InvalidDigestError
from api.ingest.sample import encode, new_violation_id, sample_event, sample_jpeg
from api.ingest.service import IngestOutcome, IngestResult, ingest_event
from api.ingest.validation import event_validator
from api.models import DEAD_LETTER_PAYLOAD_LIMIT, Case, CaseEvent, DeadLetter
from tests.api_support import migrated_engine

PREFIX = "citywatch/v1"
TOPIC = f"{PREFIX}/violations/cam-001"
VID = "v-0123456789abcdef01234567"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with migrated_engine(f"sqlite:///{tmp_path / 'cases.db'}") as eng:
        yield eng


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(engine)


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    return EvidenceStore(tmp_path / "evidence")


@pytest.fixture
def ingest(sessions: sessionmaker[Session], store: EvidenceStore) -> Callable[..., IngestResult]:
    def run(payload: bytes, topic: str = TOPIC, **kwargs: Any) -> IngestResult:
        with sessions() as session:
            return ingest_event(session, topic, payload, store, topic_prefix=PREFIX, **kwargs)

    return run


_DELETE = object()


def _apply(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value


def _mutate(**changes: Any) -> bytes:
    body = sample_event(violation_id=VID)
    _apply(body, changes)
    return encode(body)


def _nested(section: str, **changes: Any) -> bytes:
    body = sample_event(violation_id=VID)
    _apply(body[section], changes)
    return encode(body)


_GOOD_JPEG = sample_jpeg("good")
_OTHER_SHA = hashlib.sha256(b"other").hexdigest()

# (id, topic, payload, expected outcome, reason substring for dead letters)
PAYLOADS: list[tuple[str, str, bytes, IngestOutcome, str]] = [
    ("valid opened", TOPIC, _mutate(), IngestOutcome.created, ""),
    ("first event is updated", TOPIC, _mutate(event="updated", seq=4), IngestOutcome.created, ""),
    ("first event is cleared", TOPIC, _mutate(event="cleared", seq=9), IngestOutcome.created, ""),
    (
        "no evidence at all",
        TOPIC,
        encode(sample_event(violation_id=VID, jpeg=None)),
        IngestOutcome.created,
        "",
    ),
    ("minimal location", TOPIC, _mutate(location={}), IngestOutcome.created, ""),
    (
        "zone +08:00 times",
        TOPIC,
        _mutate(first_seen="2026-01-01T16:00:20.5+08:00"),
        IngestOutcome.created,
        "",
    ),
    ("empty", TOPIC, b"", IngestOutcome.dead_letter, "payload is empty"),
    ("not utf-8", TOPIC, b"\xff\xfe\x00{", IngestOutcome.dead_letter, "not UTF-8"),
    ("not json", TOPIC, b"{not json", IngestOutcome.dead_letter, "not valid JSON"),
    ("truncated json", TOPIC, _mutate()[:200], IngestOutcome.dead_letter, "not valid JSON"),
    (
        "NaN",
        TOPIC,
        _mutate().replace(b'"score_top":0.93', b'"score_top":NaN'),
        IngestOutcome.dead_letter,
        "NaN",
    ),
    ("deep nesting", TOPIC, b"[" * 100_000 + b"]" * 100_000, IngestOutcome.dead_letter, "not valid JSON"),
    ("array", TOPIC, b"[1, 2]", IngestOutcome.dead_letter, "JSON array, expected an object"),
    ("string", TOPIC, b'"hello"', IngestOutcome.dead_letter, "JSON string, expected an object"),
    ("null", TOPIC, b"null", IngestOutcome.dead_letter, "JSON null, expected an object"),
    (
        "schema v2",
        TOPIC,
        _mutate(schema="citywatch.violation/2"),
        IngestOutcome.dead_letter,
        "unsupported schema",
    ),
    ("schema missing", TOPIC, _mutate(schema=_DELETE), IngestOutcome.dead_letter, "schema version missing"),
    (
        "rule missing",
        TOPIC,
        _mutate(rule=_DELETE),
        IngestOutcome.dead_letter,
        "'rule' is a required property",
    ),
    ("seq as string", TOPIC, _mutate(seq="1"), IngestOutcome.dead_letter, "$.seq"),
    ("seq as bool", TOPIC, _mutate(seq=True), IngestOutcome.dead_letter, "$.seq"),
    ("seq negative", TOPIC, _mutate(seq=-1), IngestOutcome.dead_letter, "$.seq"),
    ("seq huge", TOPIC, _mutate(seq=10**30), IngestOutcome.dead_letter, "$.seq"),
    ("bad event kind", TOPIC, _mutate(event="reopened"), IngestOutcome.dead_letter, "$.event"),
    ("bad violation id", TOPIC, _mutate(violation_id="v-XYZ"), IngestOutcome.dead_letter, "$.violation_id"),
    ("huge zone", TOPIC, _mutate(zone="z" * 5000), IngestOutcome.dead_letter, "5000 characters"),
    ("bbox of 3", TOPIC, _mutate(bbox=[0.1, 0.2, 0.3]), IngestOutcome.dead_letter, "$.bbox"),
    ("bbox reversed", TOPIC, _mutate(bbox=[0.5, 0.2, 0.3, 0.4]), IngestOutcome.dead_letter, "x1 <= x2"),
    ("score above 1", TOPIC, _mutate(score_top=1.5), IngestOutcome.dead_letter, "$.score_top"),
    ("extra key", TOPIC, _mutate(colour="red"), IngestOutcome.dead_letter, "Additional properties"),
    (
        "time without zone",
        TOPIC,
        _mutate(first_seen="2026-01-01T08:00:20"),
        IngestOutcome.dead_letter,
        "first_seen",
    ),
    (
        "time with space",
        TOPIC,
        _mutate(last_seen="2026-01-01 08:00:20Z"),
        IngestOutcome.dead_letter,
        "last_seen",
    ),
    ("month 13", TOPIC, _mutate(first_seen="2026-13-01T08:00:20Z"), IngestOutcome.dead_letter, "first_seen"),
    (
        "last before first",
        TOPIC,
        _mutate(last_seen="2026-01-01T07:00:00+00:00"),
        IngestOutcome.dead_letter,
        "before first_seen",
    ),
    ("NUL in zone", TOPIC, _mutate(zone="a\x00b"), IngestOutcome.dead_letter, "NUL character"),
    (
        "topic other stream",
        f"{PREFIX}/violations/cam-002",
        _mutate(),
        IngestOutcome.dead_letter,
        "does not match",
    ),
    ("topic outside prefix", "elsewhere/violations/cam-001", _mutate(), IngestOutcome.dead_letter, "is not"),
    ("topic too deep", f"{TOPIC}/extra", _mutate(), IngestOutcome.dead_letter, "is not"),
    (
        "sha mismatch",
        TOPIC,
        _nested("evidence", sha256=_OTHER_SHA),
        IngestOutcome.dead_letter,
        "does not match",
    ),
    ("sha not hex", TOPIC, _nested("evidence", sha256="XYZ"), IngestOutcome.dead_letter, "$.evidence.sha256"),
    (
        "jpeg not base64",
        TOPIC,
        _nested("evidence", jpeg="@@@not base64@@@"),
        IngestOutcome.dead_letter,
        "base64",
    ),
    (
        "jpeg not a jpeg",
        TOPIC,
        _nested("evidence", jpeg=base64.b64encode(b"PNG....").decode(), sha256=None),
        IngestOutcome.dead_letter,
        "not a JPEG",
    ),
    ("model missing name", TOPIC, _nested("model", name=_DELETE), IngestOutcome.dead_letter, "$.model"),
    ("lat out of range", TOPIC, _nested("location", lat=123.0), IngestOutcome.dead_letter, "$.location.lat"),
]


@pytest.mark.parametrize(
    ("topic", "payload", "outcome", "reason"), [pytest.param(*row[1:], id=row[0]) for row in PAYLOADS]
)
def test_payload_table(
    ingest: Callable[..., IngestResult],
    sessions: sessionmaker[Session],
    topic: str,
    payload: bytes,
    outcome: IngestOutcome,
    reason: str,
) -> None:
    result = ingest(payload, topic=topic)
    assert result.outcome is outcome, result.reason
    with sessions() as s:
        cases = s.scalars(select(Case)).all()
        letters = s.scalars(select(DeadLetter)).all()
    if outcome is IngestOutcome.dead_letter:
        assert cases == []
        assert len(letters) == 1
        assert reason in letters[0].reason
        assert result.reason == letters[0].reason
        assert letters[0].payload_size == len(payload)
        assert letters[0].topic == topic
        assert "\x00" not in letters[0].payload
    else:
        assert letters == []
        assert [c.violation_id for c in cases] == [VID]
        assert cases[0].status == "candidate"
        assert cases[0].first_seen.tzinfo is not None


def test_huge_payload_is_refused_before_parsing(ingest: Callable[..., IngestResult]) -> None:
    payload = b"{" + b" " * 5000 + b"}"
    result = ingest(payload, max_payload_bytes=4096)
    assert result.outcome is IngestOutcome.dead_letter
    assert result.reason is not None and "over the 4096 byte limit" in result.reason


def test_dead_letter_keeps_64_kib_and_the_full_size(
    ingest: Callable[..., IngestResult], sessions: sessionmaker[Session]
) -> None:
    payload = b"x" * (DEAD_LETTER_PAYLOAD_LIMIT * 2)
    ingest(payload)
    with sessions() as s:
        letter = s.scalars(select(DeadLetter)).one()
    assert letter.payload_size == len(payload)
    assert len(letter.payload) == DEAD_LETTER_PAYLOAD_LIMIT


E = tuple[str, int]
# arrival order of (event, seq) -> outcomes, final violation_state, last_seq, cleared?
ORDERINGS: list[tuple[str, list[E], list[str], str, int]] = [
    ("in order", [("opened", 0), ("updated", 1), ("cleared", 2)],
     ["created", "updated", "updated"], "cleared", 2),
    ("late updated after cleared", [("opened", 0), ("cleared", 2), ("updated", 1)],
     ["created", "updated", "stale"], "cleared", 2),
    ("cleared first", [("cleared", 2), ("opened", 0), ("updated", 1)],
     ["created", "stale", "stale"], "cleared", 2),
    ("updated first", [("updated", 1), ("opened", 0)], ["created", "stale"], "open", 1),
    ("redelivered opened", [("opened", 0), ("opened", 0)], ["created", "duplicate"], "open", 0),
    ("redelivered both", [("opened", 0), ("updated", 1), ("updated", 1), ("opened", 0)],
     ["created", "updated", "duplicate", "duplicate"], "open", 1),
    ("stale redelivered", [("opened", 0), ("updated", 3), ("updated", 2), ("updated", 2)],
     ["created", "updated", "stale", "duplicate"], "open", 3),
    ("newer seq reopens", [("opened", 0), ("cleared", 1), ("updated", 2)],
     ["created", "updated", "updated"], "open", 2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("arrivals", "outcomes", "state", "last_seq"), [pytest.param(*row[1:], id=row[0]) for row in ORDERINGS]
)
def test_arrival_order_table(
    ingest: Callable[..., IngestResult],
    sessions: sessionmaker[Session],
    arrivals: list[E],
    outcomes: list[str],
    state: str,
    last_seq: int,
) -> None:
    got = [
        ingest(encode(sample_event(violation_id=VID, event=ev, seq=seq))).outcome.value
        for ev, seq in arrivals
    ]
    assert got == outcomes
    with sessions() as s:
        case = s.scalars(select(Case)).one()
        history = s.scalars(select(CaseEvent).order_by(CaseEvent.id)).all()
    assert case.violation_state == state
    assert case.last_seq == last_seq
    assert (case.cleared_at is not None) == (state == "cleared")
    distinct = sorted({seq for _, seq in arrivals})
    assert sorted(h.seq for h in history if h.seq is not None) == distinct
    assert case.event_count == len(distinct)
    assert history[0].from_status is None and history[0].to_status == "candidate"
    assert all(h.role == "detector" and h.actor == "detector:cam-001" for h in history)


def test_replay_with_other_sent_at_is_a_duplicate(ingest: Callable[..., IngestResult]) -> None:
    first = ingest(encode(sample_event(violation_id=VID)))
    replay = ingest(encode(sample_event(violation_id=VID, sent_at="2027-05-05T00:00:00Z")))
    assert (first.outcome, replay.outcome) == (IngestOutcome.created, IngestOutcome.duplicate)
    assert first.case_id == replay.case_id


def test_evidence_is_stored_by_sha256(
    ingest: Callable[..., IngestResult], sessions: sessionmaker[Session], store: EvidenceStore
) -> None:
    ingest(encode(sample_event(violation_id=VID, jpeg=_GOOD_JPEG)))
    digest = hashlib.sha256(_GOOD_JPEG).hexdigest()
    with sessions() as s:
        case = s.scalars(select(Case)).one()
    assert case.evidence_sha256 == digest
    assert store.read(digest) == _GOOD_JPEG
    assert store.path_for(digest).name == f"{digest}.jpg"


def test_late_event_fills_missing_evidence_but_not_state(
    ingest: Callable[..., IngestResult], sessions: sessionmaker[Session]
) -> None:
    ingest(encode(sample_event(violation_id=VID, event="cleared", seq=2, jpeg=None)))
    result = ingest(encode(sample_event(violation_id=VID, event="opened", seq=0, jpeg=_GOOD_JPEG)))
    assert result.outcome is IngestOutcome.stale
    with sessions() as s:
        case = s.scalars(select(Case)).one()
        notes = s.scalars(select(CaseEvent.note).order_by(CaseEvent.id)).all()
    assert case.violation_state == "cleared"
    assert case.evidence_sha256 == hashlib.sha256(_GOOD_JPEG).hexdigest()
    assert notes[1] is not None and "evidence filled in" in notes[1]


def test_newer_event_without_jpeg_keeps_evidence_and_location(
    ingest: Callable[..., IngestResult], sessions: sessionmaker[Session]
) -> None:
    ingest(encode(sample_event(violation_id=VID, jpeg=_GOOD_JPEG)))
    ingest(
        encode(sample_event(violation_id=VID, event="updated", seq=1, jpeg=None, location={"grid": "G-09"}))
    )
    with sessions() as s:
        case = s.scalars(select(Case)).one()
    assert case.evidence_sha256 == hashlib.sha256(_GOOD_JPEG).hexdigest()
    assert (case.grid, case.road, case.lat) == ("G-09", "Heping", 30.6)


def test_times_are_stored_as_the_same_instant(
    ingest: Callable[..., IngestResult], sessions: sessionmaker[Session]
) -> None:
    ingest(encode(sample_event(violation_id=VID, first_seen="2026-01-01T16:00:20+08:00")))
    with sessions() as s:
        case = s.scalars(select(Case)).one()
    assert case.first_seen.isoformat() == "2026-01-01T08:00:20+00:00"


def test_many_violations_make_many_cases(
    ingest: Callable[..., IngestResult], sessions: sessionmaker[Session]
) -> None:
    ids = [new_violation_id() for _ in range(5)]
    for vid in ids + ids:
        ingest(encode(sample_event(violation_id=vid)))
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 5


def test_session_with_open_transaction_is_refused(
    sessions: sessionmaker[Session], store: EvidenceStore
) -> None:
    with sessions() as s:
        s.execute(select(1))
        with pytest.raises(IngestError, match="open transaction"):
            ingest_event(s, TOPIC, _mutate(), store, topic_prefix=PREFIX)


@pytest.mark.parametrize("payload", [_mutate(), b"not json"], ids=["valid", "invalid"])
def test_unreachable_database_is_transient(tmp_path: Path, store: EvidenceStore, payload: bytes) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    with Session(engine) as s, pytest.raises(IngestUnavailableError):
        ingest_event(s, TOPIC, payload, store, topic_prefix=PREFIX)
    engine.dispose()


@pytest.mark.parametrize("digest", ["../../etc/passwd", "A" * 64, "0" * 63, "0" * 64 + "/x", ""])
def test_evidence_store_refuses_non_digests(store: EvidenceStore, digest: str) -> None:
    with pytest.raises(InvalidDigestError):
        store.path_for(digest)


def test_the_api_validates_with_the_detector_contract() -> None:
    root = Path(__file__).resolve().parents[2]
    theirs = json.loads((root / "detector/contracts/violation-event.v1.schema.json").read_text())
    assert event_validator().schema == theirs
