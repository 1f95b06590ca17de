"""The walking skeleton on real services: streams.yaml → `citywatch run` → Mosquitto → case API.

The demo clip holds one illegal parking, one street vendor and one litter event (and a passing
car, a legally parked van, pedestrians): exactly those three cases must exist, with the right
rule, stream, zone and evidence; the parked car leaving clears its case; replaying the clip again
adds no case."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import REPO, make_test_config

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]

STREAM = "cam-demo-01"
BROKEN_STREAM = {
    "id": "cam-broken",
    "url": "rtsp://192.0.2.1/stream1",
    "zones": [{"id": "z1", "polygon": [[0.1, 0.1]], "rules": ["illegal_parking"]}],
}
EXPECTED = {
    ("illegal_parking", "no-parking-east"): "cleared",
    ("street_vending", "no-vending-east"): "open",
    ("unclean_road", "roadway"): "cleared",
}


def run_detector(config: Path, tmp_path: Path, name: str) -> None:
    log = tmp_path / f"{name}.log"
    with log.open("w") as fh:
        rc = subprocess.call(
            [
                sys.executable,
                "-m",
                "detector.commands.cli",
                "run",
                "--config",
                str(config),
                "--exit-when-done",
            ],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    assert rc == 0, log.read_text()[-3000:]


def cases(url: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(f"{url}/cases", params={"page_size": 100}).json()["data"]
    return data


def settled(url: str, want: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Cases once the API has ingested everything (count stable for 2 s)."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = cases(url)
        if [(c["id"], c["updated_at"]) for c in now] != [(c["id"], c["updated_at"]) for c in last]:
            last, stable_since = now, time.monotonic()
        elif len(now) >= want and time.monotonic() - stable_since > 2.0:
            break
        time.sleep(0.3)
    return last


def test_demo_clip_makes_exactly_its_three_cases(
    api: str, mqtt_broker: tuple[str, int], topic_prefix: str, tmp_path: Path, default_model_ready: None
) -> None:
    cfg = make_test_config(
        tmp_path,
        [STREAM],
        host=mqtt_broker[0],
        port=mqtt_broker[1],
        prefix=topic_prefix,
        worker=f"e2e-{uuid.uuid4().hex[:8]}",
        extra_streams=(BROKEN_STREAM,),
    )
    run_detector(cfg, tmp_path, "run1")
    # the broken entry is reported with its problem and skipped; the good stream ran
    log = (tmp_path / "run1.log").read_text()
    assert "cam-broken" in log and "polygon needs at least 3 points" in log, log[-2000:]
    got = settled(api, len(EXPECTED))
    assert sorted((c["rule"], c["zone"]) for c in got) == sorted(EXPECTED), got
    for c in got:
        assert c["stream"] == STREAM
        assert c["violation_state"] == EXPECTED[(c["rule"], c["zone"])], c
        jpeg = httpx.get(f"{api}/cases/{c['id']}/evidence")
        assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
        assert jpeg.content[:2] == b"\xff\xd8"
        assert hashlib.sha256(jpeg.content).hexdigest() == c["evidence_sha256"]
    # the same clip again: the same violation ids, no new case
    run_detector(cfg, tmp_path, "run2")
    again = settled(api, len(EXPECTED))
    assert sorted(c["id"] for c in again) == sorted(c["id"] for c in got)
