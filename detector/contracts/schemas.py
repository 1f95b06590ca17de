"""The v1 JSON Schemas (this folder) and their one ``date-time`` rule, for the detector and the API alike.

Every message over MQTT has a schema here: the violation event, the stream state, the status, the
camera re-check (command and result); so has ``streams.yaml`` (generated from the detector's models,
for the API's zone editor: ``detector.contracts.zones``). Both sides validate with
:func:`contract_validator`, so a payload one side sends is judged by the rule the other side reads
it with. ``date-time`` is RFC 3339 with a zone (``2026-01-01T08:00:20+00:00``); fractions of any
length up to nanoseconds.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator, FormatChecker

EVENT_SCHEMA_FILE: Final = "violation-event.v1.schema.json"
STATE_SCHEMA_FILE: Final = "stream-state.v1.schema.json"
STATUS_SCHEMA_FILE: Final = "status.v1.schema.json"
RECHECK_SCHEMA_FILE: Final = "recheck.v1.schema.json"
STREAMS_SCHEMA_FILE: Final = "streams.v1.schema.json"  # generated: python -m detector.config.schema_export
SCHEMA_FILES: Final = (
    EVENT_SCHEMA_FILE,
    STATE_SCHEMA_FILE,
    STATUS_SCHEMA_FILE,
    RECHECK_SCHEMA_FILE,
    STREAMS_SCHEMA_FILE,
)

JsonDict = dict[str, Any]

_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})",
)


def schema_path(file: str) -> Path:
    """Where a contract's schema file lies (``detector/contracts/<file>``)."""
    return Path(str(resources.files("detector.contracts").joinpath(file)))


@functools.cache
def load_contract(file: str) -> JsonDict:
    """A JSON Schema shipped in ``detector/contracts/`` (e.g. ``stream-state.v1.schema.json``)."""
    text = resources.files("detector.contracts").joinpath(file).read_text(encoding="utf-8")
    schema: JsonDict = json.loads(text)
    return schema


def parse_datetime(value: str) -> datetime:
    """RFC 3339 -> aware datetime (fractions beyond microseconds are cut)."""
    text = value.replace("z", "Z").replace("t", "T")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:
        text = text[: frac.start(1) + 6] + text[frac.end(1) :]
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("date-time has no zone")
    return parsed


def check_date_time(value: object) -> bool:
    """The contracts' ``date-time`` format: True, or ``ValueError`` saying what is wrong.

    A value that is not a string passes (the ``type`` keyword judges it)."""
    if not isinstance(value, str):
        return True
    if _RFC3339.fullmatch(value) is None:
        raise ValueError("expected an RFC 3339 date-time with a zone, e.g. 2026-01-01T08:00:20+00:00")
    parse_datetime(value)
    return True


def is_date_time(value: str) -> bool:
    """:func:`check_date_time` as a yes/no (for ``jsonschema-rs`` format callbacks)."""
    try:
        return check_date_time(value)
    except ValueError:
        return False


DATE_TIME_CHECKER: Final = FormatChecker(formats=())
DATE_TIME_CHECKER.checks("date-time", raises=ValueError)(check_date_time)


@functools.cache
def contract_validator(file: str, definition: str | None = None) -> Draft202012Validator:
    """A validator of a contract in ``detector/contracts/`` or, with ``definition``, of one of its
    ``$defs`` (e.g. the re-check ``command``), with the contracts' ``date-time`` check."""
    schema = load_contract(file)
    Draft202012Validator.check_schema(schema)
    if definition is not None:
        schema = {**schema["$defs"][definition], "$defs": schema["$defs"]}
    return Draft202012Validator(schema, format_checker=DATE_TIME_CHECKER)
