"""Ingest throughput: violation events from MQTT into the database, SQLite and PostgreSQL.

    python bench/ingest.py [--events 20000] [--dup-ratio 0.05] [--backends sqlite,postgresql]
    python bench/ingest.py --quick   # 2,000 events

For each backend: a fresh database (a SQLite file; a new PostgreSQL database, dropped after),
migrated; the API's MQTT ingest (``api.ingest.mqtt.MqttIngest``, the routing table loaded as
the API loads it) running in this process; a publisher in a child process that sends every
event at full speed, QoS 1. ``--mix lifecycle`` (default): each violation's opened (with its JPEG),
updated, updated and cleared, as the detector sends them; ``--mix opened``: every event is the
``opened`` event of a new violation with its own evidence JPEG (one file to store per event: the worst
case). ``--dup-ratio`` of the messages are copies of earlier ones (a redelivery).
``events_per_s`` = messages / (first publish -> the commit of the last one); ``lost`` = violations
without a case or whose case missed its last event; ``duplicates`` = extra cases plus extra
history rows of one (violation, seq). Prints one JSON object.

The broker is a private Mosquitto on a free port (``--broker host:port`` to use another) with
``max_queued_messages 0``: at full speed the publisher runs ahead of the database, and
Mosquitto's default (1000 queued per client) would drop the excess — size that setting for the
bursts a deployment must absorb.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
STREAMS = 50


# ---------------------------------------------------------------------------------------- events
def violation_ids(seed: str, distinct: int) -> list[str]:
    return ["v-" + hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:24] for i in range(distinct)]


def _dup_every(dup_ratio: float) -> int:
    return round(1 / dup_ratio) if dup_ratio > 0 else 0


def distinct_count(total: int, dup_ratio: float) -> int:
    """How many of ``total`` messages are originals (the rest repeat one)."""
    every = _dup_every(dup_ratio)
    return total - (total // every if every else 0)


LIFECYCLE = (("opened", 0), ("updated", 2), ("updated", 4), ("cleared", 7))
CHUNK = 100  # lifecycle: the events of 100 violations interleave


def originals(seed: str, count: int, mix: str) -> list[dict[str, Any]]:
    """``count`` distinct events in publishing order. ``opened``: one new violation each, with its
    own JPEG; ``lifecycle``: opened (with its JPEG), updated twice, cleared, 100 violations at once."""
    from api.ingest.sample import sample_event, sample_jpeg

    per = 1 if mix == "opened" else len(LIFECYCLE)
    ids = violation_ids(seed, -(-count // per))
    steps = [("opened", 0)] if mix == "opened" else list(LIFECYCLE)
    out: list[dict[str, Any]] = []
    for first in range(0, len(ids), CHUNK):
        chunk = list(enumerate(ids[first : first + CHUNK], start=first))
        for kind, seq in steps:
            for n, vid in chunk:
                stream = f"cam-{n % STREAMS:03d}"
                jpeg = sample_jpeg(vid) if kind == "opened" else None
                body = sample_event(violation_id=vid, stream=stream, event=kind, seq=seq, jpeg=jpeg)
                loc = {"lat": 30.5 + (n % 97) * 1e-3, "lon": 114.3 + (n % 89) * 1e-3}
                body["location"] = {**body["location"], **loc}
                out.append(body)
    return out[:count]


def expected(seed: str, total: int, dup_ratio: float, mix: str) -> dict[str, int]:
    """Violation id -> the seq its case must end with."""
    final: dict[str, int] = {}
    for body in originals(seed, distinct_count(total, dup_ratio), mix):
        final[body["violation_id"]] = max(final.get(body["violation_id"], 0), body["seq"])
    return final


def messages(seed: str, total: int, dup_ratio: float, prefix: str, mix: str) -> list[tuple[str, bytes]]:
    """``total`` (topic, payload) pairs: the originals, every ``1/dup_ratio``-th message a repeat."""
    from api.ingest.sample import encode

    every = _dup_every(dup_ratio)
    bodies = iter(originals(seed, distinct_count(total, dup_ratio), mix))
    out: list[tuple[str, bytes]] = []
    for n in range(total):
        if every and n % every == every - 1 and out:
            out.append(out[(n * 7919) % len(out)])  # a copy of an earlier message: a redelivery
            continue
        body = next(bodies)
        out.append((f"{prefix}/violations/{body['stream']}", encode(body)))
    return out


def publish_main(argv: list[str]) -> int:
    """Child process: publish everything at full speed, QoS 1; print the times as JSON."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    p = argparse.ArgumentParser()
    for name in ("--host", "--prefix", "--seed"):
        p.add_argument(name, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--dup-ratio", type=float, required=True)
    p.add_argument("--mix", required=True)
    a = p.parse_args(argv)
    batch = messages(a.seed, a.events, a.dup_ratio, a.prefix, a.mix)
    acked = 0
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect(a.host, a.port, keepalive=60)
    client.loop_start()
    t_first = time.time()
    for topic, payload in batch:
        client.publish(topic, payload, qos=1)
    t_sent = time.time()
    deadline = time.monotonic() + 600
    while acked < len(batch) and time.monotonic() < deadline:
        time.sleep(0.005)
    t_acked = time.time()
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"t_first": t_first, "t_sent": t_sent, "t_acked": t_acked, "acked": acked}))
    return 0 if acked == len(batch) else 1


# ---------------------------------------------------------------------------------------- services
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mosquitto(workdir: Path) -> Iterator[tuple[str, int, str]]:
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if exe is None:
        import _data

        _data.needs(Path(sys.argv[0]).name, "it needs mosquitto (make test-services) or --broker host:port")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 1000\n"
    )
    version = subprocess.run([exe, "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    log = (workdir / "mosquitto.log").open("w")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"mosquitto did not start: {(workdir / 'mosquitto.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        yield "127.0.0.1", port, f"{version}, private, max_queued_messages 0"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@contextmanager
def database(backend: str, workdir: Path, pg_admin: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg
    from psycopg import sql

    name = f"citywatch_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            base = pg_admin.rsplit("/", 1)[0].split("://", 1)[1]
            yield f"postgresql+psycopg://{base}/{name}"
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------- one run
def count_results(session_factory: Any, final: dict[str, int]) -> dict[str, int]:
    """``lost``: violations without a case or whose case missed its last event; ``duplicates``:
    extra cases of one violation plus extra history rows of one (case, seq)."""
    from sqlalchemy import func, select

    from api.models import Case, CaseEvent, DeadLetter

    with session_factory() as s:
        rows = s.execute(
            select(Case.violation_id, func.count(), func.max(Case.last_seq)).group_by(Case.violation_id)
        ).all()
        per_id = {str(v): int(n) for v, n, _seq in rows}
        last_seq = {str(v): int(seq) for v, _n, seq in rows}
        repeated = (
            select(CaseEvent.case_id)
            .where(CaseEvent.role == "detector", CaseEvent.seq.is_not(None))
            .group_by(CaseEvent.case_id, CaseEvent.seq)
            .having(func.count() > 1)
            .subquery()
        )
        extra_history = int(s.scalar(select(func.count()).select_from(repeated)) or 0)
        dead = int(s.scalar(select(func.count()).select_from(DeadLetter)) or 0)
    lost = sum(1 for v, seq in final.items() if last_seq.get(v) != seq)
    extra_cases = sum(n - 1 for n in per_id.values() if n > 1)
    return {
        "cases": sum(per_id.values()),
        "lost": lost,
        "duplicates": extra_cases + extra_history,
        "dead": dead,
    }


def run_backend(backend: str, a: argparse.Namespace, host: str, port: int, workdir: Path) -> dict[str, Any]:
    from api.core.config import Settings
    from api.core.db import create_db_engine, create_session_factory
    from api.core.evidence import EvidenceStore
    from api.core.migrate import run_migrations
    from api.ingest.mqtt import MqttIngest
    from api.services.routing import RoutingTable

    run_dir = workdir / backend
    run_dir.mkdir()
    prefix = f"citywatch-bench/{uuid.uuid4().hex[:8]}/v1"
    seed = uuid.uuid4().hex
    with database(backend, run_dir, a.pg_admin) as url:
        settings = Settings(
            database_url=url,
            evidence_dir=run_dir / "evidence",
            mqtt_host=host,
            mqtt_port=port,
            mqtt_topic_prefix=prefix,
            mqtt_client_id=f"bench-ingest-{uuid.uuid4().hex[:8]}",
            ingest_batch_max=a.batch_max,
        )
        engine = create_db_engine(url)
        try:
            run_migrations(engine)
            store = EvidenceStore(settings.evidence_dir)
            store.ensure_writable()
            session_factory = create_session_factory(engine)
            ingest = MqttIngest(
                settings, session_factory, store, routing=RoutingTable.load(settings.routing_file)
            )
            ingest.start()
            try:
                deadline = time.monotonic() + 15
                while not ingest.connected and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.5)  # the SUBACK follows the CONNACK
                cmd = [sys.executable, __file__, "_publish", "--host", host, "--port", str(port)]
                cmd += ["--prefix", prefix, "--seed", seed, "--events", str(a.events)]
                cmd += ["--dup-ratio", str(a.dup_ratio), "--mix", a.mix]
                pub = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                if pub.returncode != 0:
                    raise SystemExit(f"publisher failed: {pub.stderr[-2000:]}")
                times = json.loads(pub.stdout.strip().splitlines()[-1])
                done_at = time.monotonic() + max(120.0, a.events / 100)
                while time.monotonic() < done_at:
                    stats = ingest.stats()
                    handled = sum(
                        stats["counts"][k]
                        for k in ("created", "updated", "stale", "duplicate", "dead_letter")
                    )
                    if handled >= a.events:
                        break
                    time.sleep(0.02)
                stats = ingest.stats()
            finally:
                ingest.stop()
            final = expected(seed, a.events, a.dup_ratio, a.mix)
            counts = count_results(session_factory, final)
        finally:
            engine.dispose()
    last = stats["last_message_at"].timestamp() if stats["last_message_at"] else float("nan")
    seconds = last - times["t_first"]
    c = stats["counts"]
    return {
        "backend": backend,
        "events": a.events,
        "mix": a.mix,
        "violations": len(final),
        "events_per_s": round(a.events / seconds, 1),
        "seconds": round(seconds, 2),
        "publish_per_s": round(a.events / max(times["t_acked"] - times["t_first"], 1e-9), 1),
        "lost": counts["lost"],
        "duplicates": counts["duplicates"],
        "cases": counts["cases"],
        "dead_letters": counts["dead"],
        "handled": {k: c[k] for k in ("created", "updated", "stale", "duplicate", "dead_letter")},
        "batches": c["batches"],
        "mean_batch": round(a.events / max(c["batches"], 1), 1),
        "batch_fallbacks": c["batch_fallbacks"],
        "protocol": stats["protocol"],
    }


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_publish"]:
        return publish_main(args[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument(
        "--dup-ratio", type=float, default=0.05, help="share of messages that repeat an earlier one"
    )
    p.add_argument(
        "--mix",
        choices=["opened", "lifecycle"],
        default="lifecycle",
        help="lifecycle (default): opened + updated + updated + cleared per violation, as the detector "
        "sends them; opened: every event a new violation with its own JPEG (the worst case)",
    )
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--batch-max", type=int, default=500, help="CITYWATCH_INGEST_BATCH_MAX")
    p.add_argument(
        "--broker", default=None, help="host:port of a broker to use instead of a private mosquitto"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "var",
        help="folder for the SQLite file and the evidence store (a disk like the API's var/)",
    )
    p.add_argument("--pg-admin", default=os.environ.get("CITYWATCH_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN))
    p.add_argument("--quick", action="store_true", help="a short run: --events 2000")
    a = p.parse_args(args)
    if a.quick:
        a.events = min(a.events, 2000)
    if a.events < 1 or not 0.0 <= a.dup_ratio < 0.5:
        p.error("need --events >= 1 and 0 <= --dup-ratio < 0.5")
    logging.basicConfig(level=logging.ERROR)
    if "postgresql" in a.backends.split(","):
        import _data

        _data.require_postgres("bench/ingest.py", a.pg_admin)
    results = []
    a.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=a.workdir) as tmp:
        workdir = Path(tmp)
        if a.broker:
            host, _, port_text = a.broker.rpartition(":")
            broker_ctx: Any = contextmanager(lambda: iter([(host, int(port_text), a.broker)]))()
        else:
            broker_ctx = mosquitto(workdir)
        with broker_ctx as (host, port, broker):
            for backend in a.backends.split(","):
                results.append(run_backend(backend.strip(), a, host, port, workdir))
    print(json.dumps({"bench": "ingest", "broker": broker, "cpus": os.cpu_count(), "results": results}))
    return 0 if all(r["lost"] == 0 and r["duplicates"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
