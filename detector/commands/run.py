"""``citywatch run``: every enabled stream → shared inference → rules → outbox → MQTT.

Start order: broker check (no broker answering is an error: ``citywatch run`` never starts one;
``citywatch demo`` does, on loopback; ``--wait-for-broker S`` waits up to S seconds for it instead, as
a service started at boot before its broker should), MQTT client + outbox publisher, model, inference service,
stream workers. Shutdown runs in
reverse, and the outbox keeps whatever the broker has not acknowledged for the next start.
A broken stream entry in the config is reported and skipped; the other streams run. An edit of the
config file while running is applied stream by stream (``live_reload_s``; ``detector.commands.live``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from detector.collect.collector import Collector
from detector.commands.live import ConfigWatcher, start_live
from detector.commands.metrics import start_metrics
from detector.commands.metrics_server import MetricsServer
from detector.config import CitywatchConfig, ConfigError, LoadedConfig, StreamConfig, load_config
from detector.contracts.detections import Detections
from detector.contracts.errors import DetectorError
from detector.contracts.logs import FORMATS, setup_logging
from detector.delivery.broker import broker_answers
from detector.delivery.mqtt import MqttSettings, PahoCommunicator
from detector.delivery.outbox import Outbox
from detector.delivery.publisher import Publisher
from detector.delivery.recheck import Rechecker
from detector.delivery.snapshots import Snapshots
from detector.inference.hotswap import ManifestWatcher, start_watch
from detector.inference.model import ModelResolveError
from detector.inference.rule_models import RuleModelSet, StreamModels, load_rule_models
from detector.inference.service import InferenceService
from detector.pipeline import StreamPipeline
from detector.sources import Frame
from detector.sources.mainstream import MainStreamPipeline, SerialHandler, main_stream_grabber
from detector.sources.worker import StreamWorker, resolve_url

log = logging.getLogger("citywatch.run")

STOP_MARGIN_S = 3.0  # of a bounded stop, kept for closing the MQTT client and the outbox after the flush


class RunError(DetectorError):
    """The detector cannot start; the message says what to fix."""


def mqtt_settings(cfg: CitywatchConfig) -> MqttSettings:
    m = cfg.mqtt
    return MqttSettings(
        host=m.host,
        port=m.port,
        worker=cfg.worker_id,
        client_id=m.client_id,
        topic_prefix=m.topic_prefix,
        username=m.username,
        password=m.password.get_secret_value() if m.password is not None else None,
        tls=m.tls,
        ca_certs=str(m.ca_file) if m.ca_file else None,
        certfile=str(m.cert_file) if m.cert_file else None,
        keyfile=str(m.key_file) if m.key_file else None,
        keepalive_s=m.keepalive,
    )


@dataclass
class Detector:
    """The running detector: owns every part and stops them in reverse start order."""

    loaded: LoadedConfig
    stop_event: threading.Event = field(default_factory=threading.Event)
    comm: PahoCommunicator | None = None
    outbox: Outbox | None = None
    publisher: Publisher | None = None
    service: InferenceService | None = None
    workers: list[StreamWorker] = field(default_factory=list)
    pipelines: dict[str, StreamPipeline] = field(default_factory=dict)
    post: dict[str, SerialHandler] = field(default_factory=dict)  # by stream id
    rechecker: Rechecker | None = None
    models: RuleModelSet | None = None
    watcher: ManifestWatcher | None = None  # swaps in a new default without a restart (models.watch_s)
    collector: Collector | None = None  # frames worth labelling (streams.yaml `collect:`)
    snapshots: Snapshots | None = None  # each stream's view, retained on streams/{id}/snapshot
    live: ConfigWatcher | None = None  # applies an edited streams.yaml stream by stream (live_reload_s)
    metrics: MetricsServer | None = None  # /metrics, /healthz, /readyz (streams.yaml `metrics:`)
    node: str | None = None  # its Ray node (`citywatch run --ray`): in each stream's state
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cfg(self) -> CitywatchConfig:
        return self.loaded.config

    def start(self, threads: int | None = None, streams: Collection[str] | None = None) -> Detector:
        """Start everything; ``streams`` (ids): only these of the enabled streams (a fleet node starts
        with none and is handed its streams by the fleet driver); None: every enabled stream."""
        cfg, base = self.cfg, self.loaded.base_dir
        first = [s for s in cfg.enabled_streams if streams is None or s.id in streams]
        if not broker_answers(cfg.mqtt.host, cfg.mqtt.port):
            raise RunError(
                f"no MQTT broker answers at {cfg.mqtt.host}:{cfg.mqtt.port}: start the broker "
                "(deploy/mosquitto/README.md) and run again; `citywatch run` never starts one "
                "(`citywatch demo` does, on loopback, to try everything on one machine)"
            )
        try:
            self.models = models = load_rule_models(cfg, threads, base)
        except ModelResolveError as err:
            raise RunError(str(err)) from err
        outbox_dir = cfg.outbox.dir if cfg.outbox.dir.is_absolute() else base / cfg.outbox.dir
        outbox_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(outbox_dir / f"{cfg.worker_id}.sqlite3", max_events=cfg.outbox.max_events)
        self.comm = PahoCommunicator(mqtt_settings(cfg)).start()
        self.publisher = Publisher(self.comm, self.outbox, topic_prefix=cfg.mqtt.topic_prefix)
        self.snapshots = Snapshots(self.comm, self._snapshot_every, topic_prefix=cfg.mqtt.topic_prefix)
        backends = {mid: m.backend for mid, m in models.models.items()}
        self.service = InferenceService(backends, self.stop_event, max_batch=models.batches)
        if cfg.collect.enabled:
            self.collector = Collector.from_config(cfg.collect, base).start()
        for stream in first:
            self.register_stream(stream, models.plan(stream))
        self.rechecker = Rechecker(self.comm, self.pipelines, cfg.mqtt.topic_prefix, cfg.worker_id).start()
        self.service.start()
        self.watcher = start_watch(
            models, self.service, self.pipelines, self.stop_event, cfg.models.watch_s, threads, base
        )
        for stream in first:
            self.start_worker(stream)
        log.info("detector %s: %d streams, models %s", cfg.worker_id, len(self.workers), models.describe())
        self.live = start_live(self)
        self.metrics = start_metrics(self)
        return self

    def register_stream(self, stream: StreamConfig, plan: StreamModels) -> None:
        """The stream's pipeline, its handler registered with the inference service."""
        if self.service is None or self.models is None:
            raise RunError("the inference service must start before the streams")
        handler = self._handler(self._pipeline(stream, plan))
        if stream.detect_url:  # main-stream evidence grabs take seconds: off the inference thread
            self.post[stream.id] = handler = SerialHandler(stream.id, handler)
        merge = plan.merge if len(self.models.models) > 1 else None
        self.service.register(stream.id, handler, plan.needed, merge)

    def start_worker(self, stream: StreamConfig, resume_after: float | None = None) -> StreamWorker:
        """Its own stop event: a stream removed while running stops alone (``stop`` stops them all).
        ``resume_after``: frames up to this frame time were judged elsewhere (a stream moved here)."""
        extra = self._extra_state(stream.id)
        base = self.loaded.base_dir
        w = StreamWorker(stream, base, self._submit, self._state, threading.Event(), extra_state=extra)
        if resume_after is not None:
            w.resume_after(resume_after)
        self.workers = [*self.workers, w]  # a new list: others iterate the old one meanwhile
        w.start()
        return w

    def _pipeline(self, stream: StreamConfig, plan: StreamModels) -> StreamPipeline:
        if self.publisher is None:
            raise RunError("the publisher must start before the pipelines")
        if stream.detect_url:
            main_url = resolve_url(stream.url, self.loaded.base_dir)
            ing = stream.ingest
            grab = main_stream_grabber(main_url, stream.id, ing.evidence_timeout_s, ing.transport)
            pipe: StreamPipeline = MainStreamPipeline(
                stream, plan.default, self.publisher, self.cfg.evidence, plan.rule_infos, grabber=grab
            )
        else:
            pipe = StreamPipeline(stream, plan.default, self.publisher, self.cfg.evidence, plan.rule_infos)
        self.pipelines[stream.id] = pipe
        if self.collector is not None:
            self.collector.attach(pipe)
        return pipe

    def _extra_state(self, stream_id: str) -> Any:
        def extra() -> dict[str, Any]:
            out = {} if self.service is None else self.service.stream_stats(stream_id)
            return out if self.node is None else {**out, "node": self.node}

        return extra

    def _handler(self, pipe: StreamPipeline) -> Any:
        def handle(frame: Frame, dets: Detections) -> None:
            pipe.process(frame.ts, frame.image, dets)
            if self.rechecker is not None:
                self.rechecker.on_frame(frame.stream_id, frame.ts, frame.image, dets)

        return handle

    def _submit(self, frame: Frame, block: bool) -> None:
        if self.snapshots is not None:
            self.snapshots.on_frame(frame.stream_id, frame.image)
        if self.service is not None:
            self.service.submit(frame, block=block)

    def _state(self, stream_id: str, state: dict[str, Any]) -> None:
        if self.snapshots is not None:
            self.snapshots.on_state(stream_id, state)
        if self.publisher is not None:
            self.publisher.publish_state(stream_id, state)

    def _snapshot_every(self, stream_id: str) -> float:
        """The stream's ``snapshot_s``, else the top-level one (the current config: edits apply)."""
        cfg = self.cfg
        own = next((s.snapshot_s for s in cfg.streams if s.id == stream_id), None)
        return cfg.snapshot_s if own is None else own

    def all_finished(self) -> bool:
        return bool(self.workers) and all(not w.is_alive() for w in self.workers)

    def stop(self, flush_s: float = 10.0, within_s: float | None = None) -> None:
        """Stop everything in reverse start order; the outbox is flushed for up to ``flush_s`` and
        whatever the broker has not acknowledged stays on disk for the next start. ``within_s``
        (SIGTERM: ``--stop-within``) bounds the whole stop: the flush gets what is left of it."""
        t0 = time.monotonic()
        if self.metrics is not None:
            self.metrics.stop()
        self.stop_event.set()
        if self.live is not None:  # first: no stream starts or stops behind this
            self.live.join(timeout=30)
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(timeout=5)
        if self.watcher is not None:  # before the service: a swap it queues is then closed by the service
            self.watcher.join(timeout=30)
        if self.service is not None:
            self.service.wake()
            self.service.join(timeout=30)
        for post in self.post.values():
            post.close()
        for pipe in self.pipelines.values():
            pipe.finish()
        dropped = self.service.dropped if self.service is not None else {}
        for w in self.workers:  # what a person checks after a run: every sample read got its detections
            sid = w.stream.id
            done, events = (p.samples, p.events_sent) if (p := self.pipelines.get(sid)) else (0, 0)
            log.info(
                "stream %s: %d samples read, %d processed, %d dropped, %d events",
                sid, w.state.samples, done, dropped.get(sid, 0), events,
            )  # fmt: skip
        if self.collector is not None:
            self.collector.stop()
        if self.publisher is not None:
            if within_s is not None:
                flush_s = max(0.0, min(flush_s, within_s - (time.monotonic() - t0) - STOP_MARGIN_S))
            if not self.publisher.flush(flush_s) and self.outbox is not None:
                log.warning(
                    "%d events kept in the outbox %s (not acknowledged by the broker): sent on next start",
                    self.outbox.count(), self.outbox.path,
                )  # fmt: skip
            self.publisher.stop()
        if self.comm is not None:
            self.comm.stop()
        if self.outbox is not None:
            self.outbox.close()


def load(path: Path) -> LoadedConfig:
    try:
        loaded = load_config(path, strict=False)
    except ConfigError as err:
        raise RunError(f"{path} has problems; run `citywatch config check {path}`:\n{err}") from err
    for issue in loaded.issues:
        log.error("config: %s", issue.format())
    for sid in loaded.skipped_streams:
        log.error("stream %s skipped: its entry in %s is broken (the other streams run)", sid, path)
    return loaded


def wait_for_broker(cfg: CitywatchConfig, wait_s: float, stop: threading.Event) -> bool:
    """True once the configured broker answers; False when ``wait_s`` ran out (said on stderr) or ``stop``
    was set first. ``wait_s`` < 0 waits as long as it takes."""
    host, port = cfg.mqtt.host, cfg.mqtt.port
    deadline = None if wait_s < 0 else time.monotonic() + wait_s
    note_at = 0.0
    while not broker_answers(host, port):
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            print(
                f"citywatch run: no MQTT broker answered at {host}:{port} within {wait_s:g} s",
                file=sys.stderr,
            )
            return False
        if now >= note_at:
            log.warning("no MQTT broker answers at %s:%d yet: waiting for it (--wait-for-broker)", host, port)
            note_at = now + 30.0
        if stop.wait(1.0):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="citywatch run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=Path("streams.yaml"))
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--exit-when-done", action="store_true", help="exit once every (file) stream has finished")
    p.add_argument(
        "--stop-within", type=float, default=10.0, metavar="S",
        help="on SIGTERM/SIGINT: stop within S seconds; the outbox is flushed for what is left of them and "
        "keeps the rest on disk for the next start (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--wait-for-broker", type=float, default=0.0, metavar="S",
        help="no broker answering at start: wait up to S seconds for it (-1: as long as it takes; SIGTERM "
        "stops the wait) instead of exiting with code 2 at once (default 0); what the outbox holds is sent "
        "once it answers",
    )  # fmt: skip
    p.add_argument(
        "--ray", metavar="ADDRESS", default=None,
        help="spread the streams over the nodes of a Ray cluster: its address (ray://host:10001, host:6379, "
        "auto) or `local` (a one-node cluster in this process); see README 'Scaling out'",
    )  # fmt: skip
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--log-format", choices=FORMATS, default=None, help="text or json lines (= $CITYWATCH_LOG_FORMAT)"
    )
    a = p.parse_args(argv)
    try:
        setup_logging(a.log_level, a.log_format)
    except ValueError as err:
        print(f"citywatch run: {err}", file=sys.stderr)
        return 2
    signalled: list[int] = []
    stops = [threading.Event()]  # what a signal sets: the broker wait's, then the detector's

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping within %g s", signum, a.stop_within)
        signalled.append(signum)
        for stop in stops:
            stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        loaded = load(a.config)
        if a.wait_for_broker != 0 and not wait_for_broker(loaded.config, a.wait_for_broker, stops[0]):
            return 0 if signalled else 2
        if a.ray is not None:
            from detector.fleet.cli import run_fleet

            return run_fleet(loaded, a, stops, signalled)
        det = Detector(loaded).start(a.threads)
    except RunError as err:
        print(f"citywatch run: {err}", file=sys.stderr)
        return 2
    stops.append(det.stop_event)
    if signalled:
        det.stop_event.set()
    try:
        while not det.stop_event.wait(0.5):
            if a.exit_when_done and det.all_finished() and det.service is not None and det.service.idle():
                time.sleep(0.5)
                break
    finally:
        det.stop(within_s=a.stop_within if signalled else None)
        log.info("detector %s stopped", det.cfg.worker_id)
    return 0
