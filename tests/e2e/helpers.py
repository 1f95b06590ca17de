"""End-to-end helpers: the bundled scenario clips, their ground truth, and a config that points the
root streams.yaml's streams at a test broker, a test outbox and a unique topic prefix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.mosquitto import account

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "training" / "synth" / "scenarios"


def scenario_truths() -> list[Path]:
    return sorted(SCENARIOS.glob("*.truth.json"))


def load_truth(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stream_for_video(video: str) -> str:
    """The root streams.yaml stream that replays a bundled clip."""
    cfg = yaml.safe_load((REPO / "streams.yaml").read_text())
    for s in cfg["streams"]:
        if Path(s["url"]).name == video:
            return str(s["id"])
    raise LookupError(f"no stream in streams.yaml replays {video}")


def make_test_config(
    tmp_path: Path,
    streams: list[str],
    *,
    host: str,
    port: int,
    prefix: str,
    worker: str,
    file_speed: float = 0.0,
    extra_streams: tuple[dict[str, Any], ...] = (),
    metrics_port: int = 0,
) -> Path:
    """The root streams.yaml with only ``streams``, absolute clip paths and test MQTT settings; the
    metrics server off unless ``metrics_port`` is given (tests run side by side)."""
    cfg = yaml.safe_load((REPO / "streams.yaml").read_text())
    cfg["worker_id"] = worker
    cfg["mqtt"].update({"host": host, "port": port, "topic_prefix": prefix})
    login = account("detector")  # CITYWATCH_TEST_BROKER=acl: the password stays in the environment
    if login is not None:
        cfg["mqtt"].update({"username": login[0], "password": f"${{{login[2]}}}"})
    cfg["outbox"]["dir"] = str(tmp_path / "outbox")
    cfg["evidence"]["dir"] = str(tmp_path / "evidence")
    cfg["metrics"] = {"host": "127.0.0.1", "port": metrics_port}
    kept = []
    for s in cfg["streams"]:
        if s["id"] in streams:
            s["url"] = str((REPO / s["url"]).resolve())
            s["file_speed"] = file_speed
            kept.append(s)
    cfg["streams"] = kept + list(extra_streams)
    path = tmp_path / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    return path
