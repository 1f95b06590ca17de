"""The camera re-check v1 (反馈核查): its topics, the command and result payloads, their validators.

The API builds the command (:func:`build_command`) and validates the result; the detector validates
the command and builds the result (:func:`build_result`). Both use the schema
``detector/contracts/recheck.v1.schema.json`` (``$defs/command``, ``$defs/result``) through
:func:`command_validator` and :func:`result_validator`; the README beside it documents the exchange.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from jsonschema import Draft202012Validator

from detector.contracts.events import iso_timestamp
from detector.contracts.schemas import RECHECK_SCHEMA_FILE, contract_validator

COMMAND_SCHEMA: Final = "citywatch.recheck/1"
RESULT_SCHEMA: Final = "citywatch.recheck-result/1"
DETECTOR_NAME_MAX: Final = 128


def command_topic(prefix: str, stream: str) -> str:
    """Where the API sends the re-check commands of ``stream``."""
    return f"{prefix}/commands/recheck/{stream}"


def answer_topic(prefix: str, stream: str) -> str:
    """The agreed topic of the answers for ``stream``: the only one the detector answers on."""
    return f"{prefix}/recheck-results/{stream}"


def command_validator() -> Draft202012Validator:
    """The validator of a command (``$defs/command``)."""
    return contract_validator(RECHECK_SCHEMA_FILE, "command")


def result_validator() -> Draft202012Validator:
    """The validator of a result (``$defs/result``)."""
    return contract_validator(RECHECK_SCHEMA_FILE, "result")


def build_command(
    *,
    prefix: str,
    request_id: str,
    case_id: int,
    violation_id: str | None,
    purpose: str,
    stream: str,
    zone: str | None,
    bbox: Sequence[float] | None,
    rule: str | None,
    label: str | None,
    requested_at: datetime,
) -> dict[str, Any]:
    """One ``citywatch.recheck/1`` command; its ``reply_topic`` is the agreed answer topic."""
    return {
        "schema": COMMAND_SCHEMA,
        "request_id": request_id,
        "case_id": case_id,
        "violation_id": violation_id,
        "purpose": purpose,
        "stream": stream,
        "zone": zone,
        "bbox": bbox,
        "rule": rule,
        "label": label,
        "requested_at": requested_at.isoformat(),
        "reply_topic": answer_topic(prefix, stream),
    }


def build_result(
    *,
    request_id: str,
    case_id: int,
    stream: str,
    present: bool,
    score: float | None,
    bbox: Sequence[float] | None,
    jpeg: bytes,
    sha256: str,
    captured_at: float,
    width: int,
    height: int,
    checked_at: datetime,
    detector: str,
) -> dict[str, Any]:
    """One ``citywatch.recheck-result/1`` answer; score and box clamped to [0, 1]."""
    return {
        "schema": RESULT_SCHEMA,
        "request_id": request_id,
        "case_id": case_id,
        "stream": stream,
        "result": "present" if present else "absent",
        "score": None if score is None else round(min(max(score, 0.0), 1.0), 4),
        "bbox": None if bbox is None else [round(min(max(v, 0.0), 1.0), 5) for v in bbox],
        "evidence": {
            "jpeg": base64.b64encode(jpeg).decode("ascii"),
            "sha256": sha256,
            "captured_at": iso_timestamp(captured_at),
            "width": width,
            "height": height,
        },
        "checked_at": iso_timestamp(checked_at),
        "detector": detector[:DETECTOR_NAME_MAX],
    }
