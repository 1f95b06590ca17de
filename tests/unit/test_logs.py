"""The log setup both sides use (detector/contracts/logs.py, the API through api/core/logs.py): JSON
lines carry the stream, violation and case a line concerns; text keeps the familiar look; the API's access-log
filter keeps only the failed requests."""

from __future__ import annotations

import json
import logging
from types import ModuleType
from typing import Any

import pytest

from api.core import logs as api_logs
from detector.contracts import logs as shared_logs

SIDES = [pytest.param(shared_logs, id="shared")]  # the API re-exports the same setup


def record(msg: str = "case %d opened", args: tuple[Any, ...] = (7,), **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("citywatch.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("extra", "fields"),
    [
        ({}, {}),
        ({"stream": "cam-1"}, {"stream": "cam-1"}),
        (
            {"stream": "cam-1", "violation_id": "v-1", "case_id": 7},
            {"stream": "cam-1", "violation_id": "v-1", "case_id": 7},
        ),
        ({"case_id": None, "other": "x"}, {}),  # None and unknown keys are left out
    ],
)
def test_json_line_fields(side: ModuleType, extra: dict[str, Any], fields: dict[str, Any]) -> None:
    line = json.loads(side.JsonFormatter().format(record(**extra)))
    assert {k: line.pop(k) for k in ("level", "logger", "msg")} == {
        "level": "INFO",
        "logger": "citywatch.test",
        "msg": "case 7 opened",
    }
    assert line.pop("ts").endswith("+00:00")
    assert line == fields


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("given", "stream", "violation_id", "case_id"),
    [
        ({}, None, None, None),
        ({"stream": "cam-1"}, "cam-1", None, None),
        ({"stream": "cam-1", "violation_id": "v-1", "case_id": 3}, "cam-1", "v-1", 3),
    ],
)
def test_about(
    side: ModuleType, given: dict[str, Any], stream: str | None, violation_id: str | None, case_id: int | None
) -> None:
    assert side.about(stream, violation_id, case_id) == given


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("asked", "env", "chosen"),
    [
        (None, None, "text"),
        (None, "json", "json"),
        (None, " JSON ", "json"),
        ("text", "json", "text"),  # the command line wins
        ("json", None, "json"),
        (None, "yaml", None),
        ("xml", None, None),
    ],
)
def test_log_format(
    side: ModuleType, monkeypatch: pytest.MonkeyPatch, asked: str | None, env: str | None, chosen: str | None
) -> None:
    if env is None:
        monkeypatch.delenv(side.ENV, raising=False)
    else:
        monkeypatch.setenv(side.ENV, env)
    if chosen is None:
        with pytest.raises(ValueError, match="log format"):
            side.log_format(asked)
    else:
        assert side.log_format(asked) == chosen


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_setup_logging_writes_the_format(
    side: ModuleType, fmt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    kept, level = list(root.handlers), root.level
    monkeypatch.delenv(side.ENV, raising=False)
    try:
        assert side.setup_logging("INFO", fmt) == fmt
        logging.getLogger("citywatch.test").info("stream %s live", "cam-1", extra=side.about("cam-1"))
        err = capsys.readouterr().err.strip()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in kept:
            root.addHandler(handler)
        root.setLevel(level)
    if fmt == "json":
        line = json.loads(err)
        assert (line["msg"], line["stream"], line["level"]) == ("stream cam-1 live", "cam-1", "INFO")
    else:
        assert err.endswith("INFO citywatch.test: stream cam-1 live")


@pytest.mark.parametrize(
    ("args", "kept"),
    [
        (("127.0.0.1:5", "GET", "/cases", "1.1", 200), False),
        (("127.0.0.1:5", "GET", "/cases", "1.1", 304), False),
        (("127.0.0.1:5", "GET", "/cases", "1.1", 404), True),
        (("127.0.0.1:5", "POST", "/cases/1/actions", "1.1", 500), True),
        ((), True),  # not an access line: kept
    ],
)
def test_errors_only(args: tuple[Any, ...], kept: bool) -> None:
    rec = record('%s - "%s %s HTTP/%s" %d' if args else "plain", args)
    assert api_logs.ErrorsOnly().filter(rec) is kept
