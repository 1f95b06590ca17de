"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


@pytest.fixture(scope="session")
def default_model_ready() -> None:
    from detector.manifest import ManifestError, load_manifest, resolve_path

    try:
        entry = load_manifest().get(None)
        resolve_path(entry)
    except ManifestError as err:
        pytest.fail(f"the default model is not usable: {err}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api(tmp_path: Path, mqtt_broker: tuple[str, int], topic_prefix: str) -> Iterator[str]:
    """The case API as its own process (dev mode: documented keys, anonymous reads), SQLite in tmp."""
    port = _free_port()
    env = dict(os.environ)
    env.update(
        {
            "CITYWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'cases.db'}",
            "CITYWATCH_EVIDENCE_DIR": str(tmp_path / "api-evidence"),
            "CITYWATCH_MQTT_HOST": mqtt_broker[0],
            "CITYWATCH_MQTT_PORT": str(mqtt_broker[1]),
            "CITYWATCH_MQTT_TOPIC_PREFIX": topic_prefix,
            "CITYWATCH_MQTT_CLIENT_ID": f"e2e-api-{uuid.uuid4().hex[:8]}",
        }
    )
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).json().get("ingest", {}).get("connected"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"API did not come up:\n{(tmp_path / 'api.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
