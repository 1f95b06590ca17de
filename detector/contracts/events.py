"""Violation events: deterministic ids, the v1 payload, and its validation.

The payload is fixed by ``detector/contracts/violation-event.v1.schema.json`` (see the contracts
README, section 4). :func:`build_event` produces exactly that payload; :func:`validate_event`
checks a payload against the schema (JSON Schema Draft 2020-12, ``date-time`` formats checked)
plus the few rules the schema cannot express, and raises :class:`EventSchemaError` naming the
JSON path of the first problem. :func:`validate_state` and :func:`validate_status` check the
other payloads the detector publishes against ``stream-state.v1`` and ``status.v1``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal, Protocol

from jsonschema import Draft202012Validator

from detector.contracts.errors import DetectorError
from detector.contracts.schemas import (
    EVENT_SCHEMA_FILE,
    STATE_SCHEMA_FILE,
    STATUS_SCHEMA_FILE,
    JsonDict,
    contract_validator,
    load_contract,
)

SCHEMA_NAME: Final = "citywatch.violation/1"
SCHEMA_FILE: Final = EVENT_SCHEMA_FILE
EventKind = Literal["opened", "updated", "cleared"]
EVENT_KINDS: Final = ("opened", "updated", "cleared")

TOPIC_PREFIX: Final = "citywatch/v1"

_STREAM_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BBOX_SLACK: Final = 1e-3  # rounding error tolerated (and clamped) at the frame edge

ViolationKey = str | int | Sequence[str | int]


class Evidence(Protocol):
    """What an event says about its evidence image (``detector.evidence.Evidence`` is one)."""

    @property
    def jpeg(self) -> bytes: ...
    @property
    def sha256(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def captured_at(self) -> float | None: ...
    @property
    def url(self) -> str | None: ...


class EventError(DetectorError, ValueError):
    """Base class of the errors raised while building or checking a violation event."""


class EventSchemaError(EventError):
    """A payload does not satisfy the v1 violation-event contract.

    ``path`` is the JSON path of the first problem (``$.evidence.sha256``), ``errors`` lists
    ``(path, message)`` for every problem found.
    """

    def __init__(
        self,
        path: str,
        message: str,
        errors: Sequence[tuple[str, str]] = (),
        *,
        what: str = "violation event",
    ) -> None:
        self.path = path
        self.errors: list[tuple[str, str]] = list(errors) or [(path, message)]
        more = f" (and {len(self.errors) - 1} more problem(s))" if len(self.errors) > 1 else ""
        super().__init__(f"{what} invalid at {path}: {message}{more}")


# ---------------------------------------------------------------------------------------- topics
def check_stream_id(stream_id: str) -> str:
    """Return ``stream_id`` when it is a valid stream id (safe as one MQTT topic level)."""
    if not isinstance(stream_id, str) or not _STREAM_RE.match(stream_id):
        raise EventError(
            f"stream id {stream_id!r} is not valid: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return stream_id


def violations_topic(stream_id: str, prefix: str = TOPIC_PREFIX) -> str:
    return f"{prefix}/violations/{check_stream_id(stream_id)}"


def state_topic(stream_id: str, prefix: str = TOPIC_PREFIX) -> str:
    return f"{prefix}/streams/{check_stream_id(stream_id)}/state"


def snapshot_topic(stream_id: str, prefix: str = TOPIC_PREFIX) -> str:
    """A stream's latest view, a JPEG at most 640 px wide (QoS 1, retained): what zones are drawn on."""
    return f"{prefix}/streams/{check_stream_id(stream_id)}/snapshot"


STREAM_TOPIC_KINDS: Final = ("state", "snapshot")


def stream_topic_filter(kind: str, prefix: str = TOPIC_PREFIX) -> str:
    """Every stream's ``state`` or ``snapshot``: ``{prefix}/streams/+/{kind}``."""
    if kind not in STREAM_TOPIC_KINDS:
        raise EventError(f"no stream topic {kind!r}; stream topics are {', '.join(STREAM_TOPIC_KINDS)}")
    return f"{prefix}/streams/+/{kind}"


def parse_stream_topic(topic: str, prefix: str = TOPIC_PREFIX) -> tuple[str, str] | None:
    """``(stream id, kind)`` of a ``{prefix}/streams/{id}/{state|snapshot}`` topic, else ``None``."""
    head = f"{prefix}/streams/"
    if not topic.startswith(head):
        return None
    stream_id, _, kind = topic[len(head) :].partition("/")
    if kind not in STREAM_TOPIC_KINDS or not _STREAM_RE.fullmatch(stream_id):
        return None
    return stream_id, kind


def status_topic(worker: str, prefix: str = TOPIC_PREFIX) -> str:
    return f"{prefix}/status/{check_stream_id(worker)}"


def commands_topic(worker: str, prefix: str = TOPIC_PREFIX) -> str:
    """Filter for every command to ``worker``: ``{prefix}/commands/{worker}/#``."""
    return f"{prefix}/commands/{check_stream_id(worker)}/#"


# ---------------------------------------------------------------------------------------- ids
def _canonical_key(key: ViolationKey) -> str:
    if isinstance(key, bool):
        raise EventError(f"violation_key must be a str, an int or a sequence of them, got {key!r}")
    if isinstance(key, str | int):
        return str(key)
    if isinstance(key, Sequence) and all(isinstance(k, str | int) and not isinstance(k, bool) for k in key):
        return "\x1e".join(str(k) for k in key)
    raise EventError(f"violation_key must be a str, an int or a sequence of them, got {key!r}")


def violation_id(stream_id: str, violation_key: ViolationKey, first_seen_ts: float) -> str:
    """Deterministic id ``v-<24 hex>``: the same video gives the same ids.

    ``first_seen_ts`` is rounded to the millisecond so float noise cannot change the id.
    """
    check_stream_id(stream_id)
    if isinstance(first_seen_ts, bool) or not isinstance(first_seen_ts, int | float):
        raise EventError(f"first_seen_ts must be epoch seconds (a number), got {first_seen_ts!r}")
    millis = round(float(first_seen_ts) * 1000.0)
    canonical = f"citywatch.violation/1\x1f{stream_id}\x1f{_canonical_key(violation_key)}\x1f{millis}"
    return "v-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


# ---------------------------------------------------------------------------------------- times
def iso_timestamp(ts: float | datetime, tz: tzinfo = UTC) -> str:
    """ISO 8601 with an explicit offset, millisecond precision, from epoch seconds or a datetime."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise EventError(f"datetime {ts!r} has no timezone; pass an aware datetime or epoch seconds")
        dt = ts.astimezone(tz)
    elif isinstance(ts, int | float) and not isinstance(ts, bool):
        dt = datetime.fromtimestamp(float(ts), tz=tz)
    else:
        raise EventError(f"timestamp must be epoch seconds or an aware datetime, got {ts!r}")
    return dt.isoformat(timespec="milliseconds")


def _parse_datetime(value: object) -> datetime | None:
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


# ---------------------------------------------------------------------------------------- build
def _bbox(values: Sequence[float]) -> list[float]:
    if len(values) != 4:
        raise EventError(f"bbox_norm must have 4 values (x1, y1, x2, y2), got {len(values)}")
    out: list[float] = []
    for v in values:
        f = float(v)
        if -_BBOX_SLACK <= f < 0.0:
            f = 0.0
        elif 1.0 < f <= 1.0 + _BBOX_SLACK:
            f = 1.0
        out.append(round(f, 6))
    return out


def _evidence_dict(evidence: Evidence | None) -> JsonDict:
    if evidence is None:
        return {"jpeg": None, "url": None, "sha256": None, "captured_at": None, "width": None, "height": None}
    return {
        "jpeg": base64.b64encode(evidence.jpeg).decode("ascii") if evidence.jpeg else None,
        "url": evidence.url,
        "sha256": evidence.sha256,
        "captured_at": None if evidence.captured_at is None else iso_timestamp(evidence.captured_at),
        "width": evidence.width,
        "height": evidence.height,
    }


def build_event(
    kind: EventKind,
    *,
    violation_id: str,
    seq: int,
    rule: str,
    label: str,
    stream: str,
    zone: str,
    bbox_norm: Sequence[float],
    score_median: float,
    score_top: float,
    first_seen: float | datetime,
    last_seen: float | datetime,
    evidence: Evidence | None,
    model: Mapping[str, Any],
    location: Mapping[str, Any],
    sent_at: float | datetime | None = None,
    validate: bool = True,
) -> JsonDict:
    """Build one v1 violation event; ``sent_at`` defaults to now. Validated unless told not to."""
    payload: JsonDict = {
        "schema": SCHEMA_NAME,
        "event": kind,
        "violation_id": violation_id,
        "seq": seq,
        "rule": rule,
        "label": label,
        "stream": stream,
        "zone": zone,
        "bbox": _bbox(bbox_norm),
        "score_median": round(float(score_median), 4),
        "score_top": round(float(score_top), 4),
        "first_seen": iso_timestamp(first_seen),
        "last_seen": iso_timestamp(last_seen),
        "evidence": _evidence_dict(evidence),
        "model": {"name": model.get("name"), "version": model.get("version"), "sha256": model.get("sha256")},
        "location": {k: location.get(k) for k in ("lat", "lon", "address", "grid", "road")},
        "sent_at": iso_timestamp(datetime.now(UTC) if sent_at is None else sent_at),
    }
    if validate:
        validate_event(payload)
    return payload


def encode_event(payload: Mapping[str, Any]) -> bytes:
    """The bytes sent on the wire: compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------------- validate
def load_schema() -> JsonDict:
    """The v1 violation-event schema shipped in ``detector/contracts/``."""
    return load_contract(SCHEMA_FILE)


def _validator() -> Draft202012Validator:
    return contract_validator(SCHEMA_FILE)


def _check(file: str, payload: object, what: str) -> None:
    errors = sorted(contract_validator(file).iter_errors(payload), key=lambda e: (e.json_path, e.message))
    if errors:
        found = [(e.json_path, e.message) for e in errors]
        raise EventSchemaError(*found[0], found, what=what)


def validate_state(state: Mapping[str, Any]) -> None:
    """Raise :class:`EventSchemaError` unless ``state`` is a valid v1 stream state."""
    _check(STATE_SCHEMA_FILE, state, "stream state")


def validate_status(payload: bytes | str) -> None:
    """Raise :class:`EventSchemaError` unless ``payload`` is a valid v1 status (``online`` / ``offline``)."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as exc:
        raise EventSchemaError("$", f"status payload is not UTF-8: {exc}", what="status") from exc
    _check(STATUS_SCHEMA_FILE, text, "status")


def _semantic_errors(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules of the contract that the JSON Schema does not express."""
    errors: list[tuple[str, str]] = []
    x1, y1, x2, y2 = payload["bbox"]
    if x1 > x2 or y1 > y2:
        errors.append(("$.bbox", f"bbox {payload['bbox']} is not x1 <= x2 and y1 <= y2"))
    first, last = _parse_datetime(payload["first_seen"]), _parse_datetime(payload["last_seen"])
    if first is not None and last is not None and last < first:
        errors.append(("$.last_seen", f"last_seen {payload['last_seen']} is before first_seen"))
    if payload["score_median"] > payload["score_top"] + 1e-9:
        errors.append(("$.score_median", "score_median is above score_top"))
    evidence = payload["evidence"]
    jpeg = evidence.get("jpeg")
    if payload["event"] == "opened" and not jpeg and not evidence.get("url"):
        errors.append(("$.evidence.jpeg", "an 'opened' event must carry the evidence JPEG (or its url)"))
    if jpeg:
        try:
            raw = base64.b64decode(jpeg, validate=True)
        except (binascii.Error, ValueError):
            return [*errors, ("$.evidence.jpeg", "evidence.jpeg is not valid base64")]
        if not raw.startswith(b"\xff\xd8"):
            errors.append(("$.evidence.jpeg", "evidence.jpeg does not decode to a JPEG (no FFD8 marker)"))
        if evidence.get("sha256") != hashlib.sha256(raw).hexdigest():
            errors.append(
                ("$.evidence.sha256", "evidence.sha256 is not the sha256 of the decoded JPEG bytes")
            )
    return errors


def validate_event(payload: Mapping[str, Any]) -> None:
    """Raise :class:`EventSchemaError` unless ``payload`` is a valid v1 violation event."""
    if not isinstance(payload, Mapping):
        raise EventSchemaError("$", f"a violation event must be a JSON object, got {type(payload).__name__}")
    validator = _validator()
    errors = sorted(validator.iter_errors(payload), key=lambda e: (e.json_path, e.message))
    found = [(e.json_path, e.message) for e in errors]
    if not found:
        found = _semantic_errors(payload)
    if found:
        path, message = found[0]
        raise EventSchemaError(path, message, found)
