"""The console's stream pages (issue 15) in Chromium: #/streams shows each camera's state and snapshot
with its zones and follows a state change live; in #/streams/{id} an admin draws a zone on the snapshot,
the API's check refuses a bad parameter with `config check`'s words next to the zone, and saving writes
the streams file keeping its comments. A reviewer may check but not save. The "detector" here is a
retained state and snapshot published on the test broker, as `citywatch run` publishes them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from ruamel.yaml import YAML

from detector.contracts.events import snapshot_topic, state_topic
from detector.delivery.mqtt import MqttSettings, PahoCommunicator
from tests.browser.console import Console, console_api, wait_for
from tests.conftest import unique_topic_prefix
from tests.mosquitto import account

pytestmark = [pytest.mark.mqtt]

STREAM = "cam-b1"
STREAMS_YAML = f"""\
# streams of the browser test (this comment must survive the console's save)
version: 1
streams:
  - id: {STREAM}
    name: 和平大道 东侧
    url: a.mp4   # the clip
    zones:
      - id: kerb   # the bus stop
        polygon: [[0.1, 0.6], [0.5, 0.6], [0.5, 0.9], [0.1, 0.9]]
        rules: [illegal_parking]
"""
NEW_ZONE = [(0.6, 0.2), (0.9, 0.2), (0.9, 0.5), (0.6, 0.5)]


def state(name: str, reason: str | None = None) -> bytes:
    now = time.time()
    payload = {
        "stream": STREAM, "state": name, "since": now, "connected": name == "live", "last_frame_ts": now,
        "last_sample_at": now, "last_error": "connection reset" if reason else None, "reason": reason,
        "samples": 10, "reconnects": 0, "sample_fps": 0.5, "sample_interval_s": 2.0, "url": "a.mp4",
        "lag_s": 0.2,
    }  # fmt: skip
    return json.dumps(payload).encode()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, mqtt_broker: tuple[str, int]) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("streams-api")
    prefix = unique_topic_prefix("console-streams")
    streams_file = folder / "streams.yaml"
    streams_file.write_text(STREAMS_YAML, encoding="utf-8")
    login = account("detector")
    settings = MqttSettings(
        host=mqtt_broker[0],
        port=mqtt_broker[1],
        worker=f"browser-det-{uuid.uuid4().hex[:6]}",
        topic_prefix=prefix,
        username=login[0] if login else None,
        password=login[1] if login else None,
    )
    comm = PahoCommunicator(settings).start()
    assert comm.wait_connected(15)
    image = np.full((360, 640, 3), (60, 70, 80), np.uint8)
    cv2.rectangle(image, (380, 80), (580, 180), (40, 160, 240), -1)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    comm.publish(state_topic(STREAM, prefix), state("live"), 1, True).wait(10)
    comm.publish(snapshot_topic(STREAM, prefix), jpeg.tobytes(), 1, True).wait(10)
    try:
        yield {"folder": folder, "prefix": prefix, "file": streams_file, "comm": comm}
    finally:
        for topic in (state_topic(STREAM, prefix), snapshot_topic(STREAM, prefix)):
            comm.publish(topic, b"", 1, True).wait(5)  # clear the retained messages
        comm.stop()


@pytest.fixture(scope="module")
def console_url(setup: dict[str, Any], mqtt_broker: tuple[str, int]) -> Iterator[str]:
    env = {"CITYWATCH_STREAMS_FILE": str(setup["file"])}
    with console_api(setup["folder"], mqtt_broker, setup["prefix"], env) as url:
        yield url


def test_streams_page_shows_state_snapshot_and_zones_live(console: Console, setup: dict[str, Any]) -> None:
    page = console.sign_in("dispatcher")
    section = console.open(page, "/streams")
    row = section.locator(f"[data-test=stream-row][data-stream={STREAM}]")
    row.and_(page.locator("[data-state=live]")).wait_for(timeout=20_000)
    wait_for(
        lambda: page.evaluate("document.querySelector('img.snapshot')?.naturalWidth") == 640,
        20,
        "the snapshot",
    )
    assert row.locator("g.zone[data-zone=kerb] polygon").count() == 1
    assert "0.5" in row.locator(".figures").inner_text()  # the sample rate
    setup["comm"].publish(state_topic(STREAM, setup["prefix"]), state("stalled", "lost"), 1, True).wait(10)
    row.and_(page.locator("[data-state=stalled]")).wait_for(timeout=20_000)  # no reload: the stream event
    assert "connection reset" in row.inner_text()
    setup["comm"].publish(state_topic(STREAM, setup["prefix"]), state("live"), 1, True).wait(10)
    row.and_(page.locator("[data-state=live]")).wait_for(timeout=20_000)


def test_admin_draws_checks_and_saves_a_zone(console: Console, setup: dict[str, Any]) -> None:
    page = console.sign_in("admin")
    console.open(page, f"/streams/{STREAM}")
    canvas = page.locator("[data-test=zone-canvas][data-snapshot=loaded]")
    canvas.wait_for()
    assert "null" not in page.locator("#view").inner_text()
    page.locator("[data-test=zone-new]").click()
    box = canvas.bounding_box()
    assert box is not None
    for x, y in NEW_ZONE:
        canvas.click(position={"x": x * box["width"], "y": y * box["height"]})
    page.locator("[data-test=zone-id]").fill("pavement")
    assert page.locator("[data-test=zone-unsaved]").is_visible()
    page.locator("[data-test=zone-rule][value=illegal_parking]").check()
    dwell = page.locator("[data-param='illegal_parking.dwell_s']")
    dwell.fill("-5")
    dwell.dispatch_event("change")
    page.locator("[data-test=zone-check]").click()
    page.locator("[data-test=zone-problems]").wait_for()
    errors = page.locator("[data-test=zone-form] [data-test=zone-errors]").inner_text()
    assert "streams[0].zones[1].params.illegal_parking.dwell_s" in errors
    assert "dwell_s should be greater than or equal to 0" in errors and "use a number of at least 0" in errors
    assert setup["file"].read_text(encoding="utf-8") == STREAMS_YAML  # a check writes nothing
    dwell = page.locator("[data-param='illegal_parking.dwell_s']")
    dwell.fill("90")
    dwell.dispatch_event("change")
    page.locator("[data-test=zone-save]").click()
    page.locator("[data-test=zone-saved]").wait_for()
    assert page.locator("[data-test=zone-unsaved]").is_hidden()
    text = setup["file"].read_text(encoding="utf-8")
    assert "# streams of the browser test" in text and "# the bus stop" in text and "# the clip" in text
    zones = YAML(typ="safe").load(text)["streams"][0]["zones"]
    assert [z["id"] for z in zones] == ["kerb", "pavement"]
    new = zones[1]
    assert (new["rules"], new["params"]) == (["illegal_parking"], {"illegal_parking": {"dwell_s": 90}})
    for (x, y), (sx, sy) in zip(NEW_ZONE, new["polygon"], strict=True):
        assert abs(x - sx) < 0.01 and abs(y - sy) < 0.01, new["polygon"]


def test_a_reviewer_may_check_but_not_save(console: Console) -> None:
    page = console.sign_in("reviewer")
    console.open(page, f"/streams/{STREAM}")
    page.locator("[data-test=zones-read-only]").wait_for()
    assert page.locator("[data-test=zone-save]").is_disabled()
    page.locator("[data-test=zone-check]").click()
    page.locator("[data-test=zone-checked]").wait_for()
