"""``citywatch status``: the table from retained stream states, exit codes, and a round trip through a
real broker (retained messages published the way the detector publishes them)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from detector.commands import status

NOW = 1_800_000_000.0


def state(sid: str, name: str, **kw: Any) -> dict[str, Any]:
    base = {"stream": sid, "state": name, "since": NOW - 30, "sample_fps": 0.5, "last_sample_at": NOW - 1}
    return base | {"decode_mode": "keyframes", "input": "detect_url", "lag_s": 0.4, "last_error": None} | kw


@pytest.mark.parametrize(
    ("found", "expected", "states"),
    [
        ({"a": state("a", "live")}, ["a"], ["live"]),
        ({}, ["a"], ["missing"]),
        ({"a": state("a", "live"), "x": state("x", "failed")}, ["a"], ["live", "failed"]),
    ],
)
def test_rows_list_configured_streams_first(
    found: dict[str, Any], expected: list[str], states: list[str]
) -> None:
    rows = status.rows({"streams": found, "workers": {}}, expected, NOW)
    assert [r["state"] for r in rows] == states


def test_table_shows_state_rate_decode_input_and_the_error() -> None:
    err = "cannot open stream rtsp://admin:***@10.0.0.5/101: authorization failed"
    found = {"streams": {"a": state("a", "live"), "b": state("b", "failed", last_error=err)}, "workers": {}}
    text = status.format_table(status.rows(found, ["a", "b"], NOW), {"detector-1": "online"}, NOW)
    line_a, line_b = text.splitlines()[1:3]
    assert "live" in line_a and "0.50" in line_a and "keyframes" in line_a and "sub" in line_a
    assert "failed" in line_b and "authorization failed" in line_b and "admin:***@" in line_b
    assert text.splitlines()[-1] == "worker detector-1: online"


@pytest.mark.mqtt
def test_status_reads_retained_states_from_the_broker(
    mqtt_broker: tuple[str, int], topic_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = mqtt_broker
    cam = f"cam-{uuid.uuid4().hex[:6]}"
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"status-test-{uuid.uuid4().hex[:8]}")
    pub.connect(host, port)
    pub.loop_start()
    topic = f"{topic_prefix}/streams/{cam}/state"
    pub.publish(
        topic, json.dumps(state(cam, "stalled", last_error="no usable frame for 10 s")), 1, True
    ).wait_for_publish(5)
    cfg = {
        "version": 1,
        "mqtt": {"host": host, "port": port, "topic_prefix": topic_prefix},
        "streams": [
            {"id": cam, "url": "rtsp://192.0.2.1/x"},
            {"id": "never-seen", "url": "rtsp://192.0.2.1/y"},
        ],
    }
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg))
    try:
        time.sleep(0.2)
        code = status.main(["--config", str(path), "--json", "--wait", "5"])
    finally:
        pub.publish(topic, b"", 1, True).wait_for_publish(5)  # clear the retained state
        pub.disconnect()
        pub.loop_stop()
    out = json.loads(capsys.readouterr().out)
    by_id = {r["stream"]: r for r in out["streams"]}
    assert code == 1  # one stalled, one missing
    assert by_id[cam]["state"] == "stalled" and by_id[cam]["last_error"] == "no usable frame for 10 s"
    assert by_id["never-seen"]["state"] == "missing"


def test_unreachable_broker_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {"version": 1, "mqtt": {"host": "127.0.0.1", "port": port}, "streams": []}
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert status.main(["--config", str(path), "--wait", "1"]) == 2
    assert "no MQTT broker" in capsys.readouterr().err
