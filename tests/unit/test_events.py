"""Violation events: deterministic ids, the payload builder, and the schema validation table."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from detector.contracts.events import (
    SCHEMA_NAME,
    EventError,
    EventSchemaError,
    build_event,
    commands_topic,
    encode_event,
    iso_timestamp,
    load_schema,
    state_topic,
    status_topic,
    validate_event,
    violation_id,
    violations_topic,
)
from detector.evidence import render_evidence

T0 = 1767254420.0  # 2026-01-01T08:00:20+00:00


def _evidence() -> Any:
    frame = np.full((48, 64, 3), 90, np.uint8)
    return render_evidence(frame, (10, 10, 40, 30), [(0, 0), (1, 0), (1, 1)], "vehicle 0.91", captured_at=T0)


def make_event(kind: str = "opened", **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "violation_id": violation_id("cam-001", ("illegal_parking", "no-parking-1", 7), T0),
        "seq": 0,
        "rule": "illegal_parking",
        "label": "vehicle",
        "stream": "cam-001",
        "zone": "no-parking-1",
        "bbox_norm": (0.1, 0.2, 0.3, 0.4),
        "score_median": 0.81,
        "score_top": 0.93,
        "first_seen": T0,
        "last_seen": T0 + 302,
        "evidence": _evidence(),
        "model": {"name": "citywatch-synth", "version": "1.0.0", "sha256": "ab" * 32},
        "location": {"lat": 30.6, "lon": 114.4, "address": "1 Main St", "grid": "G-12", "road": "Main St"},
    }
    args.update(overrides)
    return build_event(kind, **args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- ids
def test_violation_id_is_deterministic_and_well_formed() -> None:
    a = violation_id("cam-001", "track-7", T0)
    assert a == violation_id("cam-001", "track-7", T0)
    assert a.startswith("v-") and len(a) == 26 and all(c in "0123456789abcdef" for c in a[2:])
    assert violation_id("cam-001", "track-7", T0 + 1e-6) == a  # float noise below a millisecond


@pytest.mark.parametrize(
    "other",
    [("cam-002", "track-7", T0), ("cam-001", "track-8", T0), ("cam-001", "track-7", T0 + 0.002)],
)
def test_violation_id_changes_with_any_input(other: tuple[str, str, float]) -> None:
    assert violation_id(*other) != violation_id("cam-001", "track-7", T0)


def test_violation_id_accepts_sequences_and_ints() -> None:
    assert violation_id("cam-001", ("a", 1), T0) == violation_id("cam-001", ["a", 1], T0)
    assert violation_id("cam-001", 7, T0) == violation_id("cam-001", "7", T0)
    assert violation_id("cam-001", ("a", "b"), T0) != violation_id("cam-001", "ab", T0)


@pytest.mark.parametrize(
    ("stream", "key", "ts"),
    [("cam 1", "k", T0), ("", "k", T0), ("cam-1", None, T0), ("cam-1", True, T0), ("cam-1", "k", "08:00")],
)
def test_violation_id_rejects_bad_input(stream: Any, key: Any, ts: Any) -> None:
    with pytest.raises(EventError):
        violation_id(stream, key, ts)


# ---------------------------------------------------------------------------------------- build
def test_build_event_produces_a_valid_payload_with_every_schema_key() -> None:
    event = make_event()
    validate_event(event)
    assert set(event) == set(load_schema()["properties"])
    assert event["schema"] == SCHEMA_NAME
    assert event["first_seen"] == "2026-01-01T08:00:20.000+00:00"
    assert event["last_seen"] == "2026-01-01T08:05:22.000+00:00"
    jpeg = base64.b64decode(event["evidence"]["jpeg"])
    assert event["evidence"]["sha256"] == hashlib.sha256(jpeg).hexdigest()
    assert event["evidence"]["captured_at"] == event["first_seen"]
    assert json.loads(encode_event(event)) == event


def test_build_event_without_evidence_for_updates() -> None:
    event = make_event("cleared", seq=3, evidence=None, location={})
    assert event["evidence"] == {
        "jpeg": None,
        "url": None,
        "sha256": None,
        "captured_at": None,
        "width": None,
        "height": None,
    }
    assert event["location"] == {"lat": None, "lon": None, "address": None, "grid": None, "road": None}


def test_build_event_clamps_rounding_noise_at_the_frame_edge() -> None:
    assert make_event(bbox_norm=(-1e-5, 0.2, 1.0000004, 0.4))["bbox"] == [0.0, 0.2, 1.0, 0.4]


def test_build_event_rejects_an_opened_event_without_evidence() -> None:
    with pytest.raises(EventSchemaError) as info:
        make_event("opened", evidence=None)
    assert info.value.path == "$.evidence.jpeg"


def test_iso_timestamp() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000+00:00"
    assert iso_timestamp(T0, timezone(timedelta(hours=8))) == "2026-01-01T16:00:20.000+08:00"
    assert iso_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000+00:00"
    with pytest.raises(EventError, match="no timezone"):
        iso_timestamp(datetime(2026, 1, 1))


def test_topics() -> None:
    assert violations_topic("cam-001") == "citywatch/v1/violations/cam-001"
    assert state_topic("cam-001") == "citywatch/v1/streams/cam-001/state"
    assert status_topic("w1", "x/v1") == "x/v1/status/w1"
    assert commands_topic("w1") == "citywatch/v1/commands/w1/#"
    with pytest.raises(EventError):
        violations_topic("cam/#")


# ---------------------------------------------------------------------------------------- validation table
def _set(path: str, value: Any) -> Any:
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = event
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()
_OTHER_JPEG = base64.b64encode(b"\xff\xd8not the same bytes").decode()


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (_set("schema", "citywatch.violation/2"), "$.schema"),
        (_set("event", "closed"), "$.event"),
        (_set("violation_id", "v-XYZ"), "$.violation_id"),
        (_set("seq", -1), "$.seq"),
        (_set("seq", 1.5), "$.seq"),
        (_set("rule", "speeding"), "$.rule"),
        (_set("label", "bicycle"), "$.label"),
        (_set("stream", "cam 1"), "$.stream"),
        (_set("zone", ""), "$.zone"),
        (_set("bbox", [0.1, 0.2, 0.3]), "$.bbox"),
        (_set("bbox", [0.1, 0.2, 1.5, 0.4]), "$.bbox[2]"),
        (_set("score_top", 1.2), "$.score_top"),
        (_set("first_seen", "2026-01-01 08:00:20"), "$.first_seen"),
        (_set("last_seen", "2026-01-01T08:05:22"), "$.last_seen"),
        (_set("zone", _DELETE), "$"),
        (_set("extra", 1), "$"),
        (_set("evidence.sha256", "abc"), "$.evidence.sha256"),
        (_set("evidence.width", 0), "$.evidence.width"),
        (_set("evidence.thumbnail", None), "$.evidence"),
        (_set("model.version", _DELETE), "$.model"),
        (_set("location.lat", 95), "$.location.lat"),
        (_set("sent_at", "yesterday"), "$.sent_at"),
        # rules the JSON Schema cannot express
        (_set("bbox", [0.5, 0.2, 0.3, 0.4]), "$.bbox"),
        (_set("last_seen", "2026-01-01T08:00:19+00:00"), "$.last_seen"),
        (_set("score_median", 0.95), "$.score_median"),
        (_set("evidence.jpeg", None), "$.evidence.jpeg"),
        (_set("evidence.jpeg", "***not base64***"), "$.evidence.jpeg"),
        (_set("evidence.jpeg", _OTHER_JPEG), "$.evidence.sha256"),
    ],
)
def test_invalid_payloads_raise_with_the_json_path(mutate: Any, path: str) -> None:
    event = copy.deepcopy(make_event())
    mutate(event)
    with pytest.raises(EventSchemaError) as info:
        validate_event(event)
    assert info.value.path == path
    assert path in str(info.value)


@pytest.mark.parametrize(
    "mutate",
    [
        _set("sent_at", None),
        _set("evidence.url", "https://example.org/e.jpg"),
        _set("location", {}),
        _set("model.sha256", None),
        _set("first_seen", "2026-01-01T16:00:20+08:00"),
    ],
)
def test_valid_variants_pass(mutate: Any) -> None:
    event = copy.deepcopy(make_event())
    mutate(event)
    validate_event(event)


def test_updated_event_without_evidence_is_valid() -> None:
    validate_event(make_event("updated", seq=1, evidence=None))


def test_error_lists_every_problem() -> None:
    event = make_event()
    event["seq"] = -1
    event["rule"] = "speeding"
    with pytest.raises(EventSchemaError) as info:
        validate_event(event)
    assert {p for p, _ in info.value.errors} == {"$.seq", "$.rule"}
    assert "1 more" in str(info.value)


def test_non_object_payload() -> None:
    with pytest.raises(EventSchemaError, match="JSON object"):
        validate_event([1, 2])  # type: ignore[arg-type]
