"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_api import ingest_connected, live_api
from tests.mosquitto import account


@pytest.fixture(scope="session")
def default_model_ready() -> None:
    from detector.contracts.artifacts import verified_path
    from detector.contracts.manifest import ManifestError, load_manifest

    try:
        entry = load_manifest().get(None)
        verified_path(entry)  # present and the files the manifest lists
    except ManifestError as err:
        pytest.fail(f"the default model is not usable: {err}")


@pytest.fixture
def api(tmp_path: Path, mqtt_broker: tuple[str, int], topic_prefix: str) -> Iterator[str]:
    """The case API as its own process (dev mode: documented keys, loopback only; anonymous reads
    asked for), SQLite in tmp."""
    env = {
        "CITYWATCH_DEV_MODE": "true",
        "CITYWATCH_ANONYMOUS_READ": "true",
        "CITYWATCH_EVIDENCE_DIR": str(tmp_path / "api-evidence"),
        "CITYWATCH_MQTT_HOST": mqtt_broker[0],
        "CITYWATCH_MQTT_PORT": str(mqtt_broker[1]),
        "CITYWATCH_MQTT_TOPIC_PREFIX": topic_prefix,
        "CITYWATCH_MQTT_CLIENT_ID": f"e2e-api-{uuid.uuid4().hex[:8]}",
    }
    login = account("api")  # CITYWATCH_TEST_BROKER=acl
    if login is not None:
        env.update(CITYWATCH_MQTT_USERNAME=login[0], CITYWATCH_MQTT_PASSWORD=login[1])
    with live_api(tmp_path, env, ready=ingest_connected, cwd=tmp_path, args=()) as url:
        yield url
