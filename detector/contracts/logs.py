"""The log setup of both sides (``citywatch run|demo``, ``python -m api``): ``--log-format text|json``
(or ``CITYWATCH_LOG_FORMAT``).

``text`` is the familiar ``time LEVEL logger: message``; ``json`` writes one JSON object per line
with ``ts``, ``level``, ``logger``, ``msg`` and, when the log call passes them with ``extra=``, the
fields that tie a line to what it concerns: ``stream``, ``violation_id``, ``case_id`` (see
:func:`about`). A traceback goes in ``exc``. Standard library only, so the API uses it as a contract.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
ENV = "CITYWATCH_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("stream", "violation_id", "case_id")  # passed by the log calls with extra=


def about(
    stream: str | None = None, violation_id: str | None = None, case_id: int | None = None
) -> dict[str, Any]:
    """``extra=`` for a log call that concerns a stream, a violation or a case (``None``s left out)."""
    given = {"stream": stream, "violation_id": violation_id, "case_id": case_id}
    return {k: v for k, v in given.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, the ``FIELDS`` given, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_format(asked: str | None = None) -> str:
    """The format asked for on the command line, else ``CITYWATCH_LOG_FORMAT``, else text."""
    chosen = (asked or os.environ.get(ENV) or "text").strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: use one of {', '.join(FORMATS)} ({ENV})")
    return chosen


def setup_logging(level: str | int = "INFO", fmt: str | None = None) -> str:
    """Configure the root logger (stderr) once for the process; returns the format used."""
    chosen = log_format(fmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return chosen
