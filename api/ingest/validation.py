"""Turn one MQTT message into a checked ``ViolationEvent`` or an ``InvalidEventError``.

Checks, in order: size, UTF-8, JSON (no NaN/Infinity), object, schema version, the v1 JSON Schema
(Draft 2020-12, ``date-time`` checked as RFC 3339 with a zone), no NUL characters, a few
cross-field rules the schema cannot say, the topic's stream against the payload's, and the
evidence JPEG (base64, JPEG magic, sha256 against ``evidence.sha256``). Free text (model name and
version, address, grid, road) is cleaned of control characters (``api.core.text.clean_line``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from api.core.evidence import JPEG_MAGIC
from api.core.text import clean_line, clean_optional_line
from api.errors import InvalidEventError
from detector.contracts.schemas import (
    EVENT_SCHEMA_FILE,
    contract_validator,
    is_date_time,
    load_contract,
    parse_datetime,
)

SCHEMA_ID = "citywatch.violation/1"
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
_MAX_REASON_PART = 240
_MAX_SCHEMA_ERRORS = 3
_JSON_TYPE_NAMES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def event_validator() -> Draft202012Validator:
    """The v1 violation-event schema (``detector/contracts/``) with the contracts' ``date-time``."""
    return contract_validator(EVENT_SCHEMA_FILE)


@cache
def fast_event_validator() -> Any | None:
    """The same schema compiled by ``jsonschema-rs`` (~30x faster) to pass valid events quickly;
    a payload it refuses is checked again by ``jsonschema`` for the dead letter's reason.
    ``None`` when the package is missing (then ``jsonschema`` checks every payload)."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    return jsonschema_rs.Draft202012Validator(
        load_contract(EVENT_SCHEMA_FILE), formats={"date-time": is_date_time}, validate_formats=True
    )


@dataclass(frozen=True, slots=True)
class ViolationEvent:
    event: str
    violation_id: str
    seq: int
    rule: str
    label: str
    stream: str
    zone: str
    bbox: list[float]
    score_median: float
    score_top: float
    first_seen: datetime
    last_seen: datetime
    evidence_jpeg: bytes | None
    evidence_sha256: str | None
    evidence_captured_at: datetime | None
    model_name: str
    model_version: str
    model_sha256: str | None
    lat: float | None
    lon: float | None
    address: str | None
    grid: str | None
    road: str | None
    payload_sha256: str


def _short(text: str, limit: int = _MAX_REASON_PART) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _walk_strings(node: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_strings(value, f"{path}[{i}]")


def _describe(error: ValidationError) -> str:
    where = error.json_path
    if error.validator in ("maxLength", "minLength") and isinstance(error.instance, str):
        side = "over" if error.validator == "maxLength" else "under"
        limit = f"{error.validator} {error.validator_value}"
        return f"{where}: string of {len(error.instance)} characters, {side} {limit}"
    return f"{where}: {_short(error.message)}"


def decode_payload(payload: bytes, max_payload_bytes: int) -> dict[str, Any]:
    if len(payload) > max_payload_bytes:
        raise InvalidEventError(f"payload is {len(payload)} bytes, over the {max_payload_bytes} byte limit")
    if not payload:
        raise InvalidEventError("payload is empty")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError(f"payload is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InvalidEventError("payload is not valid JSON: nested too deeply") from exc
    except ValueError as exc:
        raise InvalidEventError(f"payload is not valid JSON: {_short(str(exc))}") from exc
    if not isinstance(data, dict):
        raise InvalidEventError(
            f"payload is a JSON {_JSON_TYPE_NAMES.get(type(data), 'value')}, expected an object"
        )
    return data


def check_schema(data: dict[str, Any], *, may_hold_nul: bool = True) -> None:
    """``may_hold_nul=False``: the raw payload has no ``\\u0000``, so no string can hold a NUL
    (JSON cannot carry a raw NUL byte in a string) and the walk for one is skipped."""
    version = data.get("schema")
    if version != SCHEMA_ID:
        shown = _short(repr(version), 80) if "schema" in data else "missing"
        raise InvalidEventError(f"unsupported schema version {shown}: this API reads {SCHEMA_ID!r}")
    fast = fast_event_validator()
    valid = fast.is_valid(data) if fast is not None else False
    errors = (
        []
        if valid
        else sorted(event_validator().iter_errors(data), key=lambda e: (list(e.absolute_path), e.validator))
    )
    if errors:
        parts = [_describe(e) for e in errors[:_MAX_SCHEMA_ERRORS]]
        more = f" (+{len(errors) - _MAX_SCHEMA_ERRORS} more)" if len(errors) > _MAX_SCHEMA_ERRORS else ""
        raise InvalidEventError("schema violation: " + "; ".join(parts) + more)
    for path, value in _walk_strings(data) if may_hold_nul else ():
        if "\x00" in value:
            raise InvalidEventError(f"{path}: string contains a NUL character")


def stream_from_topic(topic: str, topic_prefix: str) -> str:
    head = f"{topic_prefix}/violations/"
    stream = topic[len(head) :] if topic.startswith(head) else ""
    if not stream or "/" in stream:
        raise InvalidEventError(f"topic {_short(topic, 120)!r} is not {head}<stream_id>")
    return stream


def decode_evidence(evidence: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """Return (jpeg bytes or None, sha256 or None); the sha256 is verified when bytes are given."""
    declared = cast(str | None, evidence.get("sha256"))
    encoded = cast(str | None, evidence.get("jpeg"))
    if encoded is None:
        return None, declared
    try:
        jpeg = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidEventError(f"$.evidence.jpeg is not valid base64: {_short(str(exc))}") from exc
    if not jpeg.startswith(JPEG_MAGIC):
        raise InvalidEventError("$.evidence.jpeg is not a JPEG (no FF D8 FF start of image)")
    actual = hashlib.sha256(jpeg).hexdigest()
    if declared is not None and declared != actual:
        raise InvalidEventError(
            f"$.evidence.sha256 does not match the JPEG bytes: declared {declared}, computed {actual}"
        )
    return jpeg, actual


def parse_event(
    topic: str, payload: bytes, *, topic_prefix: str, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> ViolationEvent:
    """Parse and check one message; every refusal is an ``InvalidEventError`` with the reason."""
    data = decode_payload(payload, max_payload_bytes)
    check_schema(data, may_hold_nul=b"\\u0000" in payload)
    first_seen = parse_datetime(data["first_seen"])
    last_seen = parse_datetime(data["last_seen"])
    if last_seen < first_seen:
        raise InvalidEventError(f"last_seen {data['last_seen']} is before first_seen {data['first_seen']}")
    x1, y1, x2, y2 = (float(v) for v in data["bbox"])
    if x2 < x1 or y2 < y1:
        raise InvalidEventError(f"bbox {data['bbox']} is not x1 <= x2, y1 <= y2")
    topic_stream = stream_from_topic(topic, topic_prefix)
    if topic_stream != data["stream"]:
        raise InvalidEventError(
            f"topic stream {topic_stream!r} does not match payload stream {data['stream']!r}"
        )
    evidence: dict[str, Any] = data["evidence"]
    jpeg, evidence_sha = decode_evidence(evidence)
    captured = evidence.get("captured_at")
    model: dict[str, Any] = data["model"]
    location: dict[str, Any] = data["location"]
    return ViolationEvent(
        event=data["event"],
        violation_id=data["violation_id"],
        seq=data["seq"],
        rule=data["rule"],
        label=data["label"],
        stream=data["stream"],
        zone=data["zone"],  # a name the detector matches a re-check against: kept as sent
        bbox=[x1, y1, x2, y2],
        score_median=float(data["score_median"]),
        score_top=float(data["score_top"]),
        first_seen=first_seen,
        last_seen=last_seen,
        evidence_jpeg=jpeg,
        evidence_sha256=evidence_sha,
        evidence_captured_at=parse_datetime(captured) if captured is not None else None,
        model_name=clean_line(model["name"]),
        model_version=clean_line(model["version"]),
        model_sha256=clean_optional_line(model.get("sha256")),
        lat=location.get("lat"),
        lon=location.get("lon"),
        address=clean_optional_line(location.get("address")),
        grid=clean_optional_line(location.get("grid")),
        road=clean_optional_line(location.get("road")),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
