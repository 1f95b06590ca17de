"""Camera re-check (反馈核查) with the real detector on a real broker.

The demo clip plays at 2x as a live camera. The parked car's case is walked to `disposed`
while the car is still there: the detector looks again and answers `present` → rework.
After the car has left (video 150 s), disposing again is answered `absent` → closed, with the
detector's fresh frame as the after-image."""

from __future__ import annotations

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

SPEED = 2.0
KEYS = {
    "reviewer": "citywatch-dev-reviewer-key",
    "dispatcher": "citywatch-dev-dispatcher-key",
    "unit": "citywatch-dev-unit-key",
}


def _post(api: str, path: str, role: str, **kw: Any) -> dict[str, Any]:
    r = httpx.post(f"{api}{path}", headers={"X-API-Key": KEYS[role]}, timeout=10, **kw)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def _case(api: str, case_id: int) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{api}/cases/{case_id}", timeout=10).json()
    return data


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_recheck_sends_back_then_closes(
    api: str, mqtt_broker: tuple[str, int], topic_prefix: str, tmp_path: Path, default_model_ready: None
) -> None:
    cfg = make_test_config(
        tmp_path,
        ["cam-demo-01"],
        host=mqtt_broker[0],
        port=mqtt_broker[1],
        prefix=topic_prefix,
        worker=f"e2e-rc-{uuid.uuid4().hex[:8]}",
        file_speed=SPEED,
    )
    log = (tmp_path / "detector.log").open("w")
    det = subprocess.Popen(
        [sys.executable, "-m", "detector.commands.cli", "run", "--config", str(cfg), "--exit-when-done"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # video time runs from the moment the stream is live, not from the process start: on a loaded
        # machine the detector takes seconds to load its models, and the car's departure at 150 s of
        # video would then come later than the wall clock says (a re-check answered `present`)
        _wait(lambda: ": live" in (tmp_path / "detector.log").read_text(), 120, "the stream to go live")
        t0 = time.monotonic()

        def parking() -> dict[str, Any] | None:
            for c in httpx.get(f"{api}/cases", timeout=10).json()["data"]:
                if c["rule"] == "illegal_parking":
                    return dict(c)
            return None

        case = _wait(parking, 120, "the parking case")
        cid = int(case["id"])
        _post(api, f"/cases/{cid}/register", "reviewer", json={})
        _post(api, f"/cases/{cid}/dispatch", "dispatcher", json={"unit": "hgc-squad"})
        _post(api, f"/cases/{cid}/accept", "unit", json={})
        # the car is still parked (it leaves at 150 s of video)
        assert (time.monotonic() - t0) * SPEED < 130, "too slow: the car left before the first re-check"
        out = _post(api, f"/cases/{cid}/dispose", "unit", data={"note": "asked the driver to move"})
        assert out["recheck_queued"]
        reworked = _wait(lambda: _case(api, cid)["status"] == "in_progress", 60, "rework after `present`")
        assert reworked
        assert _case(api, cid)["rework_count"] == 1
        # after the car has left (150 s of video, plus a margin), the camera sees the spot empty
        _wait(lambda: (time.monotonic() - t0) * SPEED > 160, 200, "the car to leave")
        _post(api, f"/cases/{cid}/dispose", "unit", data={"note": "towed"})
        _wait(lambda: _case(api, cid)["status"] == "closed", 60, "close after `absent`")
        events = httpx.get(f"{api}/cases/{cid}/events", timeout=10).json()
        kinds = [e.get("role") for e in (events["data"] if isinstance(events, dict) else events)]
        assert kinds.count("detector") >= 2, events
    finally:
        det.terminate()
        det.wait(timeout=30)
        log.close()
