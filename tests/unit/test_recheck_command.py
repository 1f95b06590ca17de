"""The detector takes re-check commands only in the agreed shape, for the stream of their topic,
and answers only on the agreed topic (detector/delivery/recheck.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import detector.delivery.recheck as recheck
from detector.config import StreamConfig
from detector.contracts.detections import Detections
from detector.delivery.mqtt import ReceivedMessage
from detector.delivery.publisher import JsonlSink
from detector.delivery.recheck import MAX_COMMAND_BYTES, RecheckCommand, RecheckCommandError, Rechecker
from detector.inference.model import ModelInfo
from detector.pipeline import UNKNOWN_RULE_MIN_SCORE, StreamPipeline
from tests.detector_support import RecordingComm

PREFIX = "citywatch/v1"
STREAM = "cam-1"
TOPIC = f"{PREFIX}/commands/recheck/{STREAM}"
AGREED = f"{PREFIX}/recheck-results/{STREAM}"


def command(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema": "citywatch.recheck/1",
        "request_id": "rc-3f9c0a1b2c3d4e5f60718293",
        "case_id": 1042,
        "violation_id": "v-0123456789abcdef01234567",
        "purpose": "verify",
        "stream": STREAM,
        "zone": "no-parking-east",
        "bbox": [0.41, 0.52, 0.58, 0.77],
        "rule": "illegal_parking",
        "label": "vehicle",
        "requested_at": "2026-03-02T03:00:00+00:00",
        "reply_topic": AGREED,
    }
    for key, value in changes.items():
        if value is DELETE:
            del body[key]
        else:
            body[key] = value
    return body


DELETE = object()


def raw(body: object) -> bytes:
    return json.dumps(body).encode()


# (id, payload, topic, reason substring)
HOSTILE = [
    ("not JSON", b"{nope", TOPIC, "not UTF-8 JSON"),
    ("not UTF-8", b"\xff\xfe{}", TOPIC, "not UTF-8 JSON"),
    ("NaN in the box", raw(command()).replace(b"0.41", b"NaN"), TOPIC, "NaN is not valid JSON"),
    ("a list", raw([command()]), TOPIC, "not a citywatch.recheck/1 command"),
    ("another schema", raw(command(schema="citywatch.recheck/2")), TOPIC, "not a citywatch.recheck/1"),
    ("an extra key", raw(command(exec="rm -rf /")), TOPIC, "Additional properties are not allowed"),
    ("a reply_to key", raw(command(reply_to="x/y")), TOPIC, "Additional properties are not allowed"),
    ("reply_topic elsewhere", raw(command(reply_topic="home/door/open")), TOPIC, "is not the agreed"),
    ("reply_topic of another stream", raw(command(reply_topic=f"{PREFIX}/recheck-results/cam-2")), TOPIC,
     "is not the agreed"),
    ("reply_topic on the violations", raw(command(reply_topic=f"{PREFIX}/violations/{STREAM}")), TOPIC,
     "is not the agreed"),
    ("reply_topic with a wildcard", raw(command(reply_topic=f"{PREFIX}/recheck-results/#")), TOPIC,
     "is not the agreed"),
    ("stream not the topic's", raw(command(stream="cam-2", reply_topic=f"{PREFIX}/recheck-results/cam-2")),
     TOPIC, "not on 'citywatch/v1/commands/recheck/cam-2'"),
    ("no reply_topic", raw(command(reply_topic=DELETE)), TOPIC, "'reply_topic' is a required property"),
    ("no request_id", raw(command(request_id=DELETE)), TOPIC, "'request_id' is a required property"),
    ("bad request_id", raw(command(request_id="../../etc")), TOPIC, "$.request_id"),
    ("case_id a string", raw(command(case_id="7")), TOPIC, "$.case_id"),
    ("case_id zero", raw(command(case_id=0)), TOPIC, "$.case_id"),
    ("box out of the frame", raw(command(bbox=[0.1, 0.2, 1.5, 0.4])), TOPIC, "$.bbox[2]"),
    ("box of three", raw(command(bbox=[0.1, 0.2, 0.3])), TOPIC, "$.bbox"),
    ("unknown rule", raw(command(rule="shoot")), TOPIC, "$.rule"),
    ("unknown purpose", raw(command(purpose="stream-forever")), TOPIC, "$.purpose"),
    ("bad time", raw(command(requested_at="yesterday")), TOPIC, "$.requested_at"),
    ("huge zone", raw(command(zone="z" * 500)), TOPIC, "$.zone"),
    ("over the size limit", raw(command(zone="z" * MAX_COMMAND_BYTES)), TOPIC, "byte limit"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "topic", "reason"), [pytest.param(*r[1:], id=r[0]) for r in HOSTILE])
def test_hostile_commands_are_refused_with_the_reason(payload: bytes, topic: str, reason: str) -> None:
    with pytest.raises(RecheckCommandError) as err:
        RecheckCommand.parse(payload, topic=topic, prefix=PREFIX)
    assert reason in str(err.value)
    assert len(str(err.value)) < 1000


# (id, changes, expected zone, expected bbox)
GOOD = [
    ("full", {}, "no-parking-east", (0.41, 0.52, 0.58, 0.77)),
    ("no zone, no box", {"zone": None, "bbox": None}, None, None),
    ("no violation id", {"violation_id": DELETE}, "no-parking-east", (0.41, 0.52, 0.58, 0.77)),
    ("triage", {"purpose": "triage"}, "no-parking-east", (0.41, 0.52, 0.58, 0.77)),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "zone", "bbox"), [pytest.param(*r[1:], id=r[0]) for r in GOOD])
def test_agreed_commands_are_taken(changes: dict[str, Any], zone: str | None, bbox: Any) -> None:
    cmd = RecheckCommand.parse(raw(command(**changes)), topic=TOPIC, prefix=PREFIX)
    assert (cmd.stream, cmd.zone, cmd.bbox, cmd.case_id) == (STREAM, zone, bbox, 1042)
    assert cmd.reply_topic == AGREED


def _pipeline() -> Any:
    """What ``Rechecker._answer`` reads of a stream pipeline."""
    return SimpleNamespace(
        rule_models={},
        zones={},
        model_for=lambda _rule: SimpleNamespace(name="m", version="1"),
        evidence=SimpleNamespace(max_width=64, jpeg_quality=70),
    )


def test_the_rechecker_drops_bad_commands_and_answers_only_on_the_agreed_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recheck, "judge", lambda *_a: (False, None, None))  # the view: nothing there
    comm = RecordingComm()
    checker = Rechecker(comm, {STREAM: _pipeline()}, PREFIX, "det-1").start()
    deliver = comm.subs[TOPIC]
    forged = command(reply_topic="home/door/open", request_id="rc-" + "a" * 24)
    deliver(ReceivedMessage(TOPIC, raw(forged), 1, False))
    deliver(ReceivedMessage(TOPIC, raw(command(extra=1)), 1, False))
    deliver(ReceivedMessage(TOPIC, raw(command()), 1, True))  # retained
    deliver(ReceivedMessage(TOPIC, raw(command()), 1, False))  # the one good command
    deliver(ReceivedMessage(TOPIC, raw(command()), 1, False))  # redelivered: one request
    assert (checker.refused, checker.answered) == (3, 0)
    assert checker.last_refusal is not None and "retained" in checker.last_refusal
    image = np.zeros((48, 64, 3), np.uint8)
    checker.on_frame(STREAM, 1_772_420_400.0, image, Detections.empty())
    assert checker.answered == 1
    assert [t for t, *_ in comm.published] == [AGREED]
    answer = json.loads(comm.published[0][1])
    assert (answer["request_id"], answer["result"], answer["stream"]) == (
        "rc-3f9c0a1b2c3d4e5f60718293",
        "absent",
        STREAM,
    )


@pytest.mark.parametrize(
    ("rules", "rule", "expected"),
    [
        ({}, "illegal_parking", 0.35),  # the parameters' default
        ({"illegal_parking": {"min_score": 0.6}}, "illegal_parking", 0.6),  # the stream's own
        ({"illegal_parking": {"min_score": 0.6}}, "street_vending", 0.35),  # another rule's is not it
        ({"unclean_road": {"min_score": 0.5}}, "unclean_road", 0.5),
        ({}, "no_such_rule", UNKNOWN_RULE_MIN_SCORE),
    ],
)
def test_a_recheck_judges_with_the_streams_min_score_of_the_rule(
    tmp_path: Any, rules: dict[str, Any], rule: str, expected: float
) -> None:
    stream = StreamConfig.model_validate({"id": STREAM, "url": "rtsp://cam/1", "zones": [], "rules": rules})
    info = ModelInfo("m", "1", None, ("vehicle",), {"vehicle": "vehicle"})
    with JsonlSink(tmp_path / "events.jsonl") as sink:
        assert StreamPipeline(stream, info, sink).min_score(rule) == pytest.approx(expected)
