"""One fleet node: a :class:`~detector.commands.run.Detector` that runs the streams the driver hands it.

``citywatch run --ray`` starts one :class:`FleetNode` per Ray node, as an actor pinned to that node
(:mod:`detector.fleet.driver`). It is the single-process detector with its streams coming and going:
one inference service per node (one instance of each model, batching across the node's streams), its
own MQTT client and outbox (``<worker_id>-<node>.sqlite3``), and every stream's state saying which node
runs it (``node``). It knows nothing of Ray: the tests drive it directly as well.

A stream that leaves (moved to another node, the fleet stopping) leaves as at shutdown: its worker stops,
the frames it submitted are inferred and judged, and :meth:`FleetNode.stop_streams` returns its
checkpoint (tracker and rule state: an active violation keeps its ``violation_id`` on the next node) after
the outbox was flushed to the broker. A stream that arrives with a checkpoint goes on from it.

The outbox of a node that died is on its disk: :meth:`FleetNode.adopt_orphans` moves the events of an
outbox no living node owns into this node's outbox (a node on the same disk, or the dead node's machine
joining again), so what a dead node had not delivered is delivered once the file is reachable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from detector.commands.live import ConfigWatcher, plan_running
from detector.commands.run import Detector
from detector.config import LoadedConfig, StreamConfig
from detector.contracts.errors import DetectorError
from detector.contracts.events import status_topic
from detector.delivery.outbox import Outbox

log = logging.getLogger("citywatch.fleet")

FLUSH_S = 10.0  # a stream leaving: how long its events may take to reach the broker before it moves
CHECKPOINT_S = 4.0  # frame seconds between the checkpoints of one stream sent to the driver
NODE_PREFIX = "node-"  # a fleet node's name: node-<the start of its Ray node id>
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
CLAIMED = ".adopted-by-"  # an orphaned outbox claimed by a node: <owner>.adopted-by-<node's worker>.sqlite3


class FleetNodeError(DetectorError):
    """A fleet node cannot do what the driver asked (a stream it does not run, models not loaded)."""


def worker_name(worker_id: str, node: str) -> str:
    """The worker id of ``node``'s detector: its MQTT client, status topic and outbox file name."""
    return f"{worker_id}-{_SLUG.sub('-', node)}"


class FleetNode:
    """The detector of one node; every method is safe to call from several threads at once."""

    def __init__(self, loaded: LoadedConfig, node: str, threads: int | None = None) -> None:
        cfg = loaded.config
        self.node = node
        self.name = worker_name(cfg.worker_id, node)
        self.base_worker = cfg.worker_id
        update: dict[str, Any] = {"worker_id": self.name, "live_reload_s": 0.0}
        if cfg.mqtt.client_id is not None:  # one client id per node: the broker drops a second connection
            update["mqtt"] = cfg.mqtt.model_copy(update={"client_id": worker_name(cfg.mqtt.client_id, node)})
        cfg = cfg.model_copy(update=update)
        self.det = Detector(LoadedConfig(loaded.path, cfg), node=node)
        self.det.start(threads, streams=())
        self._control = ConfigWatcher(self.det, 0.0)  # its stream start/stop, never its file polling
        self._control.running = {}
        self._lock = threading.Lock()
        self._sent: dict[str, float] = {}  # frame time of each stream's last checkpoint sent
        log.info("fleet node %s: detector %s ready, models %s", node, self.name, self._models())

    def _models(self) -> str:
        return self.det.models.describe() if self.det.models is not None else "-"

    # ------------------------------------------------------------------ what the driver calls
    def ping(self) -> str:
        return self.name

    def streams(self) -> list[str]:
        return sorted(self._control.running)

    def start_streams(self, streams: list[tuple[StreamConfig, bytes | None]]) -> list[str]:
        """Start each stream, going on from its checkpoint when it has one; returns the ids that run here now
        (one that already ran here is not started twice; one that failed to start is not among them)."""
        started = []
        with self._lock:
            for stream, checkpoint in streams:
                if stream.id in self._control.running:
                    started.append(stream.id)
                    continue
                try:
                    self._start(stream, checkpoint)
                except Exception:  # this stream only: the driver places it again at its next look
                    log.exception("stream %s: could not start on node %s", stream.id, self.node)
                    continue
                started.append(stream.id)
        return started

    def _start(self, stream: StreamConfig, checkpoint: bytes | None) -> None:
        det = self.det
        if det.models is None or det.rechecker is None:
            raise FleetNodeError(f"fleet node {self.node} is not started")
        plan = plan_running(det.models, det.cfg, stream, det.loaded.base_dir)
        det.models.plans[stream.id] = plan
        det.register_stream(stream, plan)
        resume = det.pipelines[stream.id].restore(checkpoint) if checkpoint is not None else None
        det.rechecker.watch(stream.id)
        det.start_worker(stream, resume_after=resume)
        self._control.running[stream.id] = stream
        log.info(
            "stream %s: started on node %s%s", stream.id, self.node,
            f" from its checkpoint (frames after {resume:.3f})" if resume is not None else "",
        )  # fmt: skip

    def stop_streams(self, ids: list[str], flush_s: float = FLUSH_S) -> dict[str, bytes | None]:
        """Stop these streams as at shutdown and flush the outbox; returns each one's checkpoint."""
        out: dict[str, bytes | None] = {}
        with self._lock:
            for w in self.det.workers:  # all stop at once: each then joins at once
                if w.stream.id in ids:
                    w.stop()
            for sid in ids:
                pipe = self.det.pipelines.get(sid)
                if sid in self._control.running:
                    self._control.stop_stream(sid)
                out[sid] = pipe.checkpoint() if pipe is not None and pipe.last_ts is not None else None
                self._sent.pop(sid, None)
        if ids and self.det.publisher is not None and not self.det.publisher.flush(flush_s):
            log.warning("fleet node %s: events left in its outbox after %gs (sent later)", self.node, flush_s)
        return out

    def checkpoints(self, every_s: float = CHECKPOINT_S) -> dict[str, bytes]:
        """The checkpoint of each running stream that judged a frame since its last one, at most one per
        ``every_s`` seconds of frame time (the driver keeps the latest, for when this node dies). A
        violation opens only after its dwell, so a checkpoint that old still holds its track and entry:
        restored, it opens again under the same ``violation_id`` and the API updates the case it has."""
        out = {}
        for sid, pipe in list(self.det.pipelines.items()):
            last = self._sent.get(sid)
            if pipe.last_ts is not None and (last is None or pipe.last_ts >= last + every_s):
                out[sid] = pipe.checkpoint()
                self._sent[sid] = pipe.last_ts
        return out

    def forget(self, workers: list[str]) -> None:
        """Clear the retained ``status/{worker}`` of dead nodes (``citywatch status`` lists them no more)."""
        comm, prefix = self.det.comm, self.det.cfg.mqtt.topic_prefix
        if comm is None:
            return
        for name in workers:
            comm.publish(status_topic(name, prefix), b"", qos=1, retain=True)

    def states(self) -> dict[str, dict[str, Any]]:
        """Each running stream's state, as published on ``streams/{id}/state``."""
        return {w.stream.id: w.snapshot() for w in self.det.workers}

    def finished(self) -> list[str]:
        """Streams whose source ended (a file read to its end) and whose frames are all judged."""
        service = self.det.service
        if service is not None and not service.idle():
            return []
        return [w.stream.id for w in self.det.workers if not w.is_alive() and w.state.state == "finished"]

    def adopt_orphans(self, living: list[str]) -> int:
        """Move the events of fleet outboxes on this node's disk that no living node owns (``living``:
        worker names) into this node's outbox; returns how many. Each file is claimed by renaming it first,
        so two nodes on one disk never both send it. A claim whose adoption stopped part-way (this node's,
        or one of a node that died meanwhile) is taken up again."""
        det = self.det
        if det.outbox is None:
            return 0
        moved = 0
        for path in sorted(det.outbox.path.parent.glob(f"{self.base_worker}-{NODE_PREFIX}*.sqlite3")):
            owner, _, claimant = path.stem.partition(CLAIMED)
            if path == det.outbox.path or owner in living or claimant in set(living) - {"", self.name}:
                continue  # a living node's own outbox, or one that another living node adopts
            claimed = path.with_name(f"{owner}{CLAIMED}{self.name}.sqlite3")
            if path != claimed:
                try:
                    os.replace(path, claimed)
                except FileNotFoundError:
                    continue  # another node claimed it first
                for side in ("-wal", "-shm"):  # SQLite's WAL travels with its database (same name + suffix)
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{path}{side}", f"{claimed}{side}")
            moved += self._adopt(claimed)
        return moved

    def _adopt(self, path: Path) -> int:
        det = self.det
        assert det.outbox is not None
        orphan = Outbox(path, max_events=det.cfg.outbox.max_events)
        moved = 0
        try:
            while batch := orphan.pending(limit=500):
                for entry in batch:
                    det.outbox.put(entry.topic, entry.payload, entry.qos)
                moved += orphan.mark_sent_many(e.id for e in batch)
        finally:
            orphan.close()
        for leftover in path.parent.glob(f"{path.name}*"):
            leftover.unlink(missing_ok=True)
        if moved:
            log.warning("fleet node %s: %d events of the orphaned outbox %s sent", self.node, moved, path)
        return moved

    def shutdown(self, within_s: float | None = None) -> None:
        """Stop everything (the fleet stops): as ``citywatch run`` stops."""
        with self._lock:
            self.det.stop(within_s=within_s)
