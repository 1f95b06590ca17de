"""A camera's RTSP server dies for 30 s while a car is parked in a no-parking zone.

The full detector (``citywatch run``'s :class:`Detector`: workers, shared inference with the default model,
rules, outbox, MQTT) watches ``cam-demo-01`` of the root streams.yaml over RTSP, detecting on the 640x360
substream and taking evidence from a 1280x720 main stream. The server is killed (SIGKILL) once the parking
violation has opened, and restarted 30 s later serving the clip from where the camera would be by then.

Expected: the state goes stalled → connecting → live, live again within 10 s of the server's return; the
car keeps its one violation (one ``opened``, one violation id, never ``cleared``); the opened evidence
is the main stream's full-resolution frame.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.commands.run import Detector, load
from tests.integration.rtsp_helpers import (
    REPO,
    SCENARIOS,
    MqttRecorder,
    cut_from,
    reencode,
    require_rtsp_server,
)
from tests.rtsp_server import RtspServer, free_port

pytestmark = [pytest.mark.rtsp, pytest.mark.mqtt, pytest.mark.slow]
STREAM = "cam-demo-01"
OUTAGE_S = 30.0


def model_section() -> dict[str, Any]:
    """The default model of models/manifest.yaml (``CITYWATCH_TEST_MODEL=path.pt`` overrides it)."""
    override = os.environ.get("CITYWATCH_TEST_MODEL")
    if override:
        return {"path": override, "backend": "ultralytics" if override.endswith(".pt") else None}
    from detector.contracts.manifest import ManifestError, load_manifest, resolve_path

    try:
        resolve_path(load_manifest().get(None))
    except ManifestError as err:
        pytest.fail(f"the default model is not usable: {err}")
    return {}


def write_config(tmp: Path, host: str, port: int, prefix: str, main: str, sub: str) -> Path:
    root = yaml.safe_load((REPO / "streams.yaml").read_text())
    stream = next(s for s in root["streams"] if s["id"] == STREAM)
    stream.update(
        {
            "url": main,
            "detect_url": sub,
            "file_speed": 1,
            "zones": [z for z in stream["zones"] if z["id"] == "no-parking-east"],
            # a grace shorter than the outage: an outage must not count as the car leaving
            "rules": {"illegal_parking": {"dwell_s": 20, "grace_s": 20}},
            "ingest": {"reconnect_max_s": 4, "stall_timeout_s": 10},
        }
    )
    cfg = {
        "version": 1,
        "worker_id": f"rtsp-outage-{os.getpid()}",
        "mqtt": {"host": host, "port": port, "topic_prefix": prefix},
        "model": {k: v for k, v in model_section().items() if v is not None},
        "outbox": {"dir": str(tmp / "outbox")},
        "evidence": {"dir": str(tmp / "evidence")},
        "streams": [stream],
    }
    path = tmp / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    return path


def collapsed(states: list[str]) -> list[str]:
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


def test_outage_reconnects_and_keeps_the_one_violation(
    mqtt_broker: tuple[str, int], topic_prefix: str, tmp_path: Path
) -> None:
    require_rtsp_server()
    sub = SCENARIOS / "street-demo.mp4"  # the car parks at 16 s and leaves at 150 s
    main = reencode(sub, tmp_path / "main.mp4", size=(1280, 720), seconds=120)
    port = free_port()
    servers = [RtspServer({"/main": main, "/sub": sub}, port=port, log_dir=tmp_path).start()]
    served_from = time.time()
    host, mport = mqtt_broker
    cfg = write_config(tmp_path, host, mport, topic_prefix, servers[0].url("/main"), servers[0].url("/sub"))
    rec = MqttRecorder(host, mport, [f"{topic_prefix}/violations/#", f"{topic_prefix}/streams/+/state"])
    det = Detector(load(cfg)).start(threads=2)
    try:

        def parking(event: str) -> list[dict[str, Any]]:
            return [
                v
                for v, _ in rec.of(f"violations/{STREAM}")
                if v["rule"] == "illegal_parking" and v["event"] == event
            ]

        opened = rec.wait_for(lambda: parking("opened"), 120, "the parked car's violation to open")
        evidence = opened[0]["evidence"]
        assert (evidence["width"], evidence["height"]) == (1280, 720), "evidence from the main stream"

        killed_at = time.time()
        servers[0].kill()
        rec.wait_for(
            lambda: any(s["state"] == "stalled" for s, t in rec.of("/state") if t > killed_at), 20, "stalled"
        )
        back_at = killed_at + OUTAGE_S
        offset = back_at - served_from  # the camera kept filming: serve from where it would be by now
        sub_tail = cut_from(sub, tmp_path / "sub-tail.mp4", offset)
        main_tail = cut_from(main, tmp_path / "main-tail.mp4", offset)
        time.sleep(max(0.0, back_at - time.time()))
        servers.append(
            RtspServer({"/main": main_tail, "/sub": sub_tail}, port=port, log_dir=tmp_path).start()
        )
        back_at = time.time()

        def live_again() -> float | None:
            return next((t for s, t in rec.of("/state") if s["state"] == "live" and t > back_at), None)

        live_at = rec.wait_for(live_again, 30, "the stream to be live again")
        assert live_at - back_at <= 10.0, f"live {live_at - back_at:.1f} s after the server came back"
        after_kill = collapsed([s["state"] for s, t in rec.of("/state") if t > killed_at and t <= live_at])
        assert after_kill[0] == "stalled" and after_kill[-3:] == ["stalled", "connecting", "live"], after_kill
        assert all(s in ("stalled", "connecting", "live") for s in after_kill), after_kill
        time.sleep(24)  # the car is still parked: the rules see it again after the outage
        samples_after = [s for s, t in rec.of("/state") if t > live_at]
    finally:
        det.stop()
        rec.close()
        for srv in servers:
            srv.kill()
    assert det.pipelines[STREAM].samples > 0 and samples_after
    events = [v for v, _ in rec.of(f"violations/{STREAM}") if v["rule"] == "illegal_parking"]
    ids = {e["violation_id"] for e in events}
    kinds = [e["event"] for e in events]
    assert len(ids) == 1, f"the parked car got {len(ids)} violations: {kinds}"
    assert kinds.count("opened") == 1 and "cleared" not in kinds, kinds
    last_seen = max(datetime.fromisoformat(e["last_seen"]).timestamp() for e in events)
    assert last_seen > back_at, "the violation went on after the outage (seen again, same id)"
