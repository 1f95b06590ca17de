"""``citywatch status``: each stream's health as the detectors last published it.

Reads the retained ``{prefix}/streams/+/state`` and ``{prefix}/status/+`` topics from the broker named in
the config (no detector needs to be reachable, only the broker), prints one line per stream (with the Ray
node that runs it under ``citywatch run --ray``) and exits 0
when every enabled stream is live (or a finished file), 1 when one is connecting, stalled or failed, or
has published no state, 2 when the broker cannot be reached. URLs and errors are shown as published:
the detector masks passwords before publishing.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from detector.config import ConfigError, MqttConfig, load_config
from detector.contracts.errors import DetectorError

HEALTHY = frozenset({"live", "finished"})


class StatusError(DetectorError):
    """The broker cannot be reached or refused the connection."""


def collect(mqtt: MqttConfig, *, wait_s: float = 3.0, quiet_s: float = 0.5) -> dict[str, Any]:
    """``{"streams": {id: state}, "workers": {name: online|offline}}`` from the retained messages."""
    streams: dict[str, Any] = {}
    workers: dict[str, str] = {}
    prefix = mqtt.topic_prefix
    connected = threading.Event()
    refused: list[str] = []
    last = [time.monotonic()]

    def on_connect(client: paho.Client, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
            connected.set()
            return
        client.subscribe([(f"{prefix}/streams/+/state", 1), (f"{prefix}/status/+", 1)])
        connected.set()

    def on_message(_client: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
        last[0] = time.monotonic()
        parts = msg.topic[len(prefix) + 1 :].split("/")
        text = bytes(msg.payload).decode("utf-8", "replace")
        if parts[0] == "status" and len(parts) == 2:
            workers[parts[1]] = text
        elif parts[0] == "streams" and len(parts) == 3:
            try:
                streams[parts[1]] = json.loads(text)
            except json.JSONDecodeError:
                streams[parts[1]] = {"state": "?", "last_error": f"unreadable state: {text[:80]}"}

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"citywatch-status-{uuid.uuid4().hex[:8]}")
    if mqtt.username is not None:
        password = mqtt.password.get_secret_value() if mqtt.password is not None else None
        client.username_pw_set(mqtt.username, password)
    if mqtt.tls:
        ca = str(mqtt.ca_file) if mqtt.ca_file else None
        cert = str(mqtt.cert_file) if mqtt.cert_file else None
        key = str(mqtt.key_file) if mqtt.key_file else None
        client.tls_set(ca, cert, key, ssl.CERT_REQUIRED, ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise StatusError(f"no MQTT broker at {mqtt.host}:{mqtt.port}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(wait_s) or refused:
            why = refused[0] if refused else "no CONNACK"
            raise StatusError(f"MQTT broker {mqtt.host}:{mqtt.port} refused the connection ({why})")
        deadline = time.monotonic() + wait_s
        last[0] = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last[0] < quiet_s:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    return {"streams": streams, "workers": workers}


def _ago(epoch: Any, now: float) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    s = max(0.0, now - float(epoch))
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.1f}h ago"


def rows(found: dict[str, Any], expected: list[str], now: float) -> list[dict[str, Any]]:
    """One row per stream: the configured ones first (``missing`` when none was published), then others."""
    streams: dict[str, Any] = found["streams"]
    out: list[dict[str, Any]] = []
    for sid in [*expected, *sorted(set(streams) - set(expected))]:
        st = streams.get(sid)
        if st is None:
            out.append(
                {"stream": sid, "state": "missing", "last_error": "no state published (detector down?)"}
            )
            continue
        out.append({"stream": sid, **st, "configured": sid in expected, "age": _ago(st.get("since"), now)})
    return out


def format_table(table: list[dict[str, Any]], workers: dict[str, str], now: float) -> str:
    head = f"{'STREAM':<20} {'STATE':<10} {'SINCE':<9} {'SAMPLES/S':>9} {'LAST SAMPLE':<12} {'DECODE':<9} "
    head += f"{'INPUT':<6} {'LAG':>6}  "
    fleet = any(r.get("node") for r in table)  # `citywatch run --ray`: which node runs each stream
    head += f"{'NODE':<14} ERROR" if fleet else "ERROR"
    lines = [head]
    for r in table:
        fps = r.get("sample_fps")
        lag = r.get("lag_s")
        decode = r.get("decode_mode") or "-"
        err = (r.get("last_error") or "") if r.get("state") != "live" else ""
        lines.append(
            f"{r['stream']:<20} {r.get('state', '?'):<10} {_ago(r.get('since'), now):<9} "
            f"{(f'{fps:.2f}' if isinstance(fps, int | float) else '-'):>9} "
            f"{_ago(r.get('last_sample_at'), now):<12} {decode:<9} "
            f"{'sub' if r.get('input') == 'detect_url' else 'main' if r.get('input') else '-':<6} "
            f"{(f'{lag:.1f}s' if isinstance(lag, int | float) else '-'):>6}  "
            + (f"{r.get('node') or '-'!s:<14} " if fleet else "")
            + err[:120]
        )
    for name, status in sorted(workers.items()):
        lines.append(f"worker {name}: {status}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="citywatch status", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=Path("streams.yaml"), help="streams.yaml (broker, streams)")
    p.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the broker (default 3)")
    p.add_argument("--json", action="store_true", help="print the states as one JSON object")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config, strict=False).config
    except ConfigError as err:
        print(f"citywatch status: {a.config} has problems:\n{err}", file=sys.stderr)
        return 2
    try:
        found = collect(cfg.mqtt, wait_s=a.wait)
    except StatusError as err:
        print(f"citywatch status: {err}", file=sys.stderr)
        return 2
    now = time.time()
    table = rows(found, [s.id for s in cfg.enabled_streams], now)
    if a.json:
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        print(json.dumps({"at": stamp, "streams": table, "workers": found["workers"]}, ensure_ascii=False))
    else:
        print(format_table(table, found["workers"], now))
    configured = [r for r in table if r.get("configured", r["state"] == "missing")]
    return 0 if all(r.get("state") in HEALTHY for r in configured) else 1


if __name__ == "__main__":
    sys.exit(main())
