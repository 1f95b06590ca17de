"""Sample violation events that satisfy the v1 contract: for tests and for a smoke test of a
running API (``python -m api.ingest.sample --stream cam-001`` publishes one ``opened`` event)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
from typing import Any

SAMPLE_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19i"
    "Z2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUF"
    "BAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVW"
    "V1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi"
    "4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAEC"
    "AxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVm"
    "Z2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq"
    "8vP09fb3+Pn6/9oADAMBAAIRAxEAPwCSiiivGPWP/9k="
)
"""An 8x8 baseline JPEG."""


def sample_jpeg(tag: str = "") -> bytes:
    """The sample JPEG, with ``tag`` in a JPEG comment segment so each tag gives other bytes."""
    if not tag:
        return SAMPLE_JPEG
    comment = tag.encode("utf-8")[:60000]
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return SAMPLE_JPEG[:2] + segment + SAMPLE_JPEG[2:]


def new_violation_id() -> str:
    return "v-" + secrets.token_hex(12)


def sample_event(
    *,
    violation_id: str | None = None,
    event: str = "opened",
    seq: int = 0,
    stream: str = "cam-001",
    jpeg: bytes | None = SAMPLE_JPEG,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid v1 event; ``overrides`` replace top-level keys (``None`` values are kept as null)."""
    body: dict[str, Any] = {
        "schema": "citywatch.violation/1",
        "event": event,
        "violation_id": violation_id or new_violation_id(),
        "seq": seq,
        "rule": "illegal_parking",
        "label": "vehicle",
        "stream": stream,
        "zone": "no-parking-1",
        "bbox": [0.1, 0.2, 0.3, 0.4],
        "score_median": 0.81,
        "score_top": 0.93,
        "first_seen": "2026-01-01T08:00:20+00:00",
        "last_seen": f"2026-01-01T08:{5 + min(seq, 50):02d}:22+00:00",
        "evidence": {
            "jpeg": base64.b64encode(jpeg).decode("ascii") if jpeg is not None else None,
            "url": None,
            "sha256": hashlib.sha256(jpeg).hexdigest() if jpeg is not None else None,
            "captured_at": "2026-01-01T08:05:22+00:00",
            "width": 8,
            "height": 8,
        },
        "model": {"name": "citywatch-synth", "version": "1.0.0", "sha256": "0" * 64},
        "location": {"lat": 30.6, "lon": 114.4, "address": "Heping Ave 1", "grid": "G-01", "road": "Heping"},
        "sent_at": "2026-01-01T08:05:23+00:00",
    }
    body.update(overrides)
    return body


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def main(argv: list[str] | None = None) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    parser = argparse.ArgumentParser(description="publish one sample violation event (QoS 1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="citywatch/v1")
    parser.add_argument("--stream", default="cam-001")
    args = parser.parse_args(argv)
    body = sample_event(stream=args.stream, jpeg=sample_jpeg(new_violation_id()))
    topic = f"{args.prefix}/violations/{args.stream}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    try:
        client.publish(topic, encode(body), qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    print(f"published {body['violation_id']} on {topic}")


if __name__ == "__main__":
    main()
