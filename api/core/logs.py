"""The case API's logging: the shared setup of :mod:`detector.contracts.logs` (``--log-format
text|json``, ``about()`` for the ``stream`` / ``violation_id`` / ``case_id`` of a line) and the API's own
access-log filter (``python -m api --access-log``).
"""

from __future__ import annotations

import logging

from detector.contracts.logs import FORMATS, JsonFormatter, about, log_format, setup_logging

__all__ = ["ACCESS_LOGS", "FORMATS", "ErrorsOnly", "JsonFormatter", "about", "log_format", "setup_logging"]

ACCESS_LOGS = ("all", "errors", "off")  # python -m api --access-log


class ErrorsOnly(logging.Filter):
    """On ``uvicorn.access``: only the requests answered with a status of 400 or more (the demo
    polls ``GET /cases`` every few seconds; a line per poll would bury what matters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        status = args[4] if isinstance(args, tuple) and len(args) >= 5 else None
        return not isinstance(status, int) or status >= 400
