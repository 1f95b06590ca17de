"""1,000 malformed payloads interleaved with valid events, published in bursts through a real
Mosquitto into the API's ingest (SQLite and PostgreSQL): every valid event becomes its case,
every bad one is a dead letter with the reason of its kind, and the consumer keeps going."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from api.core.config import Settings
from api.ingest.sample import encode, sample_event
from api.models import DeadLetter

pytestmark = pytest.mark.mqtt

MAX_PAYLOAD = 64 * 1024
Broken = Callable[[dict[str, Any], str], tuple[str, bytes]]


def _with(**change: Any) -> Broken:
    return lambda good, stream: (stream, encode({**good, **change}))


def _evidence(**change: Any) -> Broken:
    return lambda good, stream: (stream, encode({**good, "evidence": {**good["evidence"], **change}}))


def _without(key: str) -> Broken:
    return lambda good, stream: (stream, encode({k: v for k, v in good.items() if k != key}))


def _raw(payload: bytes) -> Broken:
    return lambda _good, stream: (stream, payload)


# kind -> (how to break a valid event, a piece of the dead letter's reason)
KINDS: dict[str, tuple[Broken, str]] = {
    "bad-json": (_raw(b'{"schema": "citywatch.violation/1", "event": '), "not valid JSON: Expecting value"),
    "nan": (_raw(b'{"score_top": NaN}'), "NaN is not valid JSON"),
    "deep": (_raw(b"[" * 30_000 + b"]" * 30_000), "nested too deeply"),
    "not-utf8": (_raw(b"\xff\xfe\x00\x00" + bytes(range(256))), "not UTF-8"),
    "empty": (_raw(b""), "payload is empty"),
    "array": (lambda good, stream: (stream, json.dumps([good]).encode()), "a JSON array, expected an object"),
    "over-limit": (_raw(b'{"zone": "' + b"z" * (MAX_PAYLOAD + 10) + b'"}'), "byte limit"),
    "wrong-type": (_with(seq="seven"), "$.seq: 'seven' is not of type 'integer'"),
    "wrong-type-bbox": (_with(bbox="0.1,0.2,0.3,0.4"), "$.bbox"),
    "missing-id": (_without("violation_id"), "'violation_id' is a required property"),
    "missing-evidence": (_without("evidence"), "'evidence' is a required property"),
    "huge-string": (_with(zone="z" * 60_000), "$.zone: string of 60000 characters, over maxLength 64"),
    "extra-key": (_with(colour="red"), "Additional properties are not allowed"),
    "schema-v2": (
        _with(schema="citywatch.violation/2"),
        "unsupported schema version 'citywatch.violation/2'",
    ),
    "no-schema": (_without("schema"), "unsupported schema version missing"),
    "bad-time": (_with(first_seen="yesterday at noon"), "$.first_seen"),
    "bad-id": (_with(violation_id="v-XYZ"), "$.violation_id"),
    "nul": (_with(zone="zone\x00one"), "NUL character"),
    "sha-mismatch": (_evidence(sha256="0" * 64), "does not match the JPEG bytes"),
    "not-base64": (_evidence(jpeg="!!" + base64.b64encode(b"x").decode()), "not valid base64"),
}


class Burst:
    """Publishes everything without waiting, then waits for every PUBACK (the ingest gets batches)."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dl-pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(200)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def send(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published(), "no PUBACK from the broker"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def dl_api(api_settings: Settings, runner: Any) -> tuple[TestClient, Settings]:
    settings = api_settings.model_copy(update={"ingest_max_payload_bytes": MAX_PAYLOAD})
    return runner.start(settings), settings


def test_a_thousand_malformed_payloads_interleaved_with_valid_events(
    dl_api: tuple[TestClient, Settings], mqtt_broker: tuple[str, int], wait_until: Any
) -> None:
    api, settings = dl_api
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    prefix = settings.mqtt_topic_prefix
    messages: list[tuple[str, bytes]] = []
    expected_reasons: Counter[str] = Counter()
    valid_ids: list[str] = []
    names = sorted(KINDS)
    for i in range(1000):
        name = names[i % len(names)]
        broken, reason = KINDS[name]
        topic_stream, payload = broken(sample_event(stream=stream), stream)
        messages.append((f"{prefix}/violations/{topic_stream}", payload))
        expected_reasons[reason] += 1
        if i % 4 == 3:
            good = sample_event(stream=stream)
            valid_ids.append(good["violation_id"])
            messages.append((f"{prefix}/violations/{stream}", encode(good)))
    # a topic naming another stream than the payload: refused as well, not counted in the 1000
    elsewhere = sample_event(stream=stream)
    messages.append((f"{prefix}/violations/{stream}-other", encode(elsewhere)))

    burst = Burst(*mqtt_broker)
    try:
        burst.send(messages[:600])
        burst.send(messages[600:])
        wait_until(
            lambda: api.get("/health").json()["ingest"]["counts"]["received"] >= len(messages),
            timeout=120,
            what="every message received",
        )

        def handled() -> int:
            counts = api.get("/health").json()["ingest"]["counts"]
            return int(sum(counts[k] for k in ("created", "updated", "stale", "duplicate", "dead_letter")))

        wait_until(lambda: handled() >= len(messages), timeout=120, what="every message handled")

        # the consumer is still alive: one more valid event becomes a case
        last = sample_event(stream=stream)
        burst.send([(f"{prefix}/violations/{stream}", encode(last))])
        valid_ids.append(last["violation_id"])
        wait_until(
            lambda: any(
                c["violation_id"] == last["violation_id"]
                for c in api.get("/cases", params={"stream": stream, "page_size": 500}).json()["data"]
            ),
            timeout=60,
            what="the case of the event sent after the bad ones",
        )
    finally:
        burst.close()

    cases = api.get("/cases", params={"stream": stream, "page_size": 500}).json()["data"]
    assert sorted(c["violation_id"] for c in cases) == sorted(valid_ids)
    assert len(valid_ids) == 251

    with api.app.state.session_factory() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(DeadLetter).where(DeadLetter.topic.startswith(prefix))).all()
    assert len(rows) == 1001
    assert all(r.reason.strip() for r in rows)
    found: Counter[str] = Counter()
    for row in rows:
        matching = [reason for reason in expected_reasons if reason in row.reason]
        assert len(matching) <= 1, (row.reason, matching)
        found[matching[0] if matching else row.reason] += 1
    other = found.pop(f"topic stream '{stream}-other' does not match payload stream '{stream}'")
    assert other == 1
    assert found == expected_reasons
    oversize = [r for r in rows if r.payload_size > MAX_PAYLOAD]
    assert oversize and all(len(r.payload) <= 64 * 1024 for r in oversize)

    health = api.get("/health").json()
    assert health["ingest"]["connected"] is True
    assert health["ingest"]["dead_letters"] == 1001
    assert health["ingest"]["events_ingested"] == 251
    counts = health["ingest"]["counts"]
    assert counts["batches"] < len(messages) // 2  # messages were committed in batches ...
    assert counts["batch_fallbacks"] == 0  # ... and no bad message broke a batch
