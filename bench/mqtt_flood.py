"""MQTT ingest memory under a flood: the API's resident memory while the database is blocked.

    python bench/mqtt_flood.py [--events 50000] [--payload-kib 2] [--scenarios flood_qos1,oversized]
    python bench/mqtt_flood.py --quick   # 2,000 events

A private Mosquitto (``max_queued_messages 0``: the broker keeps whatever the API does not take).
Each scenario runs in its own child process (so ``ru_maxrss`` is that scenario's peak), twice:
``bounded`` (the API's defaults: ``ingest_queue_max`` 1000 messages, ``ingest_queue_max_bytes``
128 MiB) and ``unbounded`` (both bounds lifted: what an unbounded queue would hold). The child runs
the API's MQTT ingest (``api.ingest.mqtt.MqttIngest``, SQLite) with every database write blocked;
a publisher process sends the flood at full speed; 3 s after its last PUBACK the database opens and
everything drains.

- ``flood_qos1``: ``--events`` violation events of ``--payload-kib`` each, QoS 1. The MQTT 5
  receive window (``mqtt_receive_maximum`` 1000) holds them while nothing is acked, but Mosquitto
  2.0.11 sends a whole new window for each PUBACK, so once acks flow only the inbox bounds them.
- ``flood_qos0``: the same at QoS 0: no receive window; only the inbox bounds them.
- ``oversized``: 30 messages of 9 MiB (over the 8 MiB payload limit: dead-lettered with the
  reason; 270 MiB in all, over the 128 MiB byte bound) and 3 of 20 MiB (over the 16 MiB Maximum
  Packet Size: the broker never sends them).

Prints one JSON object: per scenario and mode the RSS (MB) at rest, the peak while blocked, the
peak overall (``ru_maxrss``), the inbox's high water, the outcome counts, and the CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import REPO, cpu_model, emit, log, rss_mb
from ingest import mosquitto

MIB = 1024 * 1024
UNBOUNDED = {"ingest_queue_max": 1_000_000, "ingest_queue_max_bytes": 1 << 40}
SCENARIOS = ("flood_qos1", "flood_qos0", "oversized")
OVERSIZED = 30


def flood(prefix: str, scenario: str, events: int, payload_kib: float) -> list[tuple[str, bytes, int]]:
    from api.ingest.sample import encode, sample_event, sample_jpeg

    stream = f"cam-{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}/violations/{stream}"
    if scenario == "oversized":
        big = [encode({**sample_event(stream=stream), "pad": "x" * 9 * MIB}) for _ in range(OVERSIZED)]
        huge = [encode({**sample_event(stream=stream), "pad": "x" * 20 * MIB}) for _ in range(3)]
        return [(topic, p, 1) for p in big + huge]
    jpeg = sample_jpeg("x" * max(0, int(payload_kib * 1024 * 0.75) - 700))  # base64: 4/3
    qos = 0 if scenario == "flood_qos0" else 1
    return [(topic, encode(sample_event(stream=stream, jpeg=jpeg)), qos) for _ in range(events)]


def publish_main(a: argparse.Namespace) -> int:
    """Grandchild: publish the flood at full speed; exit once the broker has taken all of it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    batch = flood(a.prefix, a.scenario, a.events, a.payload_kib)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(a.host, a.port, keepalive=60)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=qos) for topic, payload, qos in batch]
    for info in infos:
        info.wait_for_publish(timeout=600)
    client.disconnect()
    client.loop_stop()
    return 0


def child_main(a: argparse.Namespace) -> int:
    """One scenario, one mode: the ingest in this process, the database blocked, RSS sampled."""
    from paho.mqtt.publish import single

    import api.ingest.mqtt as api_mqtt
    from api.core.config import Settings
    from api.core.db import create_db_engine, create_session_factory
    from api.core.evidence import EvidenceStore
    from api.core.migrate import run_migrations
    from api.ingest.sample import encode, sample_event

    gate = threading.Event()
    for name in ("commit_batch", "ingest_event"):
        real = getattr(api_mqtt, name)

        def gated(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            gate.wait()
            return _real(*args, **kwargs)

        setattr(api_mqtt, name, gated)
    work = Path(a.workdir)
    prefix = f"bench-flood/{uuid.uuid4().hex[:8]}/v1"
    overrides: dict[str, Any] = dict(UNBOUNDED) if a.mode == "unbounded" else {}
    settings = Settings(
        database_url=f"sqlite:///{work / 'api.db'}",
        evidence_dir=work / "evidence",
        mqtt_host=a.host,
        mqtt_port=a.port,
        mqtt_topic_prefix=prefix,
        mqtt_client_id=f"flood-api-{uuid.uuid4().hex[:8]}",
        **overrides,
    )
    engine = create_db_engine(settings.database_url)
    run_migrations(engine)
    store = EvidenceStore(settings.evidence_dir)
    store.ensure_writable()
    ingest = api_mqtt.MqttIngest(settings, create_session_factory(engine), store)
    ingest.start()
    while not ingest.connected:
        time.sleep(0.05)
    time.sleep(0.5)
    gate.set()  # warm up: one event through every stage (validators compiled, pools started)
    warm = encode(sample_event(stream="cam-warm"))
    single(f"{prefix}/violations/cam-warm", warm, qos=1, hostname=a.host, port=a.port)
    while ingest.stats()["counts"]["created"] < 1:
        time.sleep(0.05)
    gate.clear()
    at_rest = rss_mb()
    peak_blocked, peak_held = at_rest, 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_blocked, peak_held
        while not stop.wait(0.05):
            if not gate.is_set():
                peak_blocked = max(peak_blocked, rss_mb())
            peak_held = max(peak_held, ingest.stats()["inbox"]["held"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    cmd = [sys.executable, __file__, "--publish", "--host", a.host, "--port", str(a.port),
           "--prefix", prefix, "--scenario", a.scenario, "--events", str(a.events),
           "--payload-kib", str(a.payload_kib)]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO)
    published_s = time.monotonic() - t0
    time.sleep(3.0)  # the broker pushes what it can while the database stays blocked
    received_blocked = ingest.stats()["counts"]["received"] - 1  # the warm-up event
    gate.set()
    want = OVERSIZED if a.scenario == "oversized" else (a.events if a.scenario == "flood_qos1" else 0)
    deadline = time.monotonic() + a.drain_timeout_s
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        c = ingest.stats()["counts"]
        done = c["created"] - 1 + c["dead_letter"]
        if want and done >= want:
            break
        if c["received"] != last:
            last, quiet_since = c["received"], time.monotonic()
        elif not want and ingest.stats()["inbox"]["held"] == 0 and time.monotonic() - quiet_since > 5:
            break  # QoS 0: whatever the broker delivered, handled; nothing came for 5 s
        time.sleep(0.1)
    drain_s = time.monotonic() - t0 - published_s - 3.0
    stop.set()
    sampler.join()
    stats = ingest.stats()
    ingest.stop()
    c = stats["counts"]
    emit(
        {
            "scenario": a.scenario,
            "mode": a.mode,
            "queue_max": settings.ingest_queue_max,
            "queue_max_mib": round(settings.ingest_queue_max_bytes / MIB, 1),
            "rss_at_rest_mb": round(at_rest, 1),
            "rss_peak_while_blocked_mb": round(peak_blocked, 1),
            "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "inbox_high_water": stats["inbox"]["high_water"],
            "inbox_high_water_mib": round(stats["inbox"]["high_water_bytes"] / MIB, 1),
            "received_while_blocked": received_blocked,
            "received": c["received"] - 1,
            "created": c["created"] - 1,
            "dead_letter": c["dead_letter"],
            "publish_s": round(published_s, 1),
            "drain_s": round(drain_s, 1),
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--payload-kib", type=float, default=2.0)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--modes", default="bounded,unbounded")
    p.add_argument("--drain-timeout-s", type=float, default=600.0)
    p.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--host", "--prefix", "--scenario", "--mode", "--workdir"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="a short run: --events 2000")
    a = p.parse_args(argv)
    if a.quick:
        a.events = min(a.events, 2000)
    if a.publish:
        return publish_main(a)
    if a.child:
        return child_main(a)
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="citywatch-flood-") as tmp,
        mosquitto(Path(tmp)) as (host, port, broker),
    ):
        for scenario in a.scenarios.split(","):
            for mode in a.modes.split(","):
                work = Path(tmp) / f"{scenario}-{mode}"
                work.mkdir()
                log(f"{scenario} / {mode} ...")
                cmd = [sys.executable, __file__, "--child", "--host", host, "--port", str(port),
                       "--scenario", scenario, "--mode", mode, "--workdir", str(work),
                       "--events", str(a.events), "--payload-kib", str(a.payload_kib),
                       "--drain-timeout-s", str(a.drain_timeout_s)]  # fmt: skip
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                log(json.dumps(results[-1]))
    emit(
        {
            "bench": "mqtt_flood",
            "cpu": cpu_model(),
            "broker": broker,
            "events": a.events,
            "payload_kib": a.payload_kib,
            "results": results,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
