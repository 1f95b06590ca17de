"""``citywatch run --ray ADDRESS|local``: the streams of streams.yaml spread over the nodes of a Ray cluster.

The driver (this process) places one :class:`~detector.fleet.node.FleetNode` actor on each living Ray
node that offers a CPU (``NodeAffinitySchedulingStrategy``, not soft: the actor dies with its node) and
gives each node streams by their declared cost and the node's cores (:mod:`detector.fleet.plan`). Every
``poll_s`` it asks each node for its streams' checkpoints and looks at Ray's node table:

- a node that left (Ray says it is dead, its actor is gone, or it missed ``dead_after`` polls in a row):
  its streams start on the other nodes from their latest checkpoint, so an open violation keeps its
  ``violation_id``; the outboxes it left on a shared disk are sent by a living node (``adopt_orphans``);
- a node that joined: it gets an actor and a share of the streams; a stream moves as at shutdown
  (stopped, its frames judged, the outbox flushed, its checkpoint handed over), and only the streams
  that the new spread moves stop at all;
- streams whose file ended stay where they finished.

Ray is imported here only: ``citywatch run`` without ``--ray`` never needs it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.config import LoadedConfig, StreamConfig
from detector.contracts.errors import DetectorError
from detector.fleet.node import NODE_PREFIX, FleetNode, worker_name
from detector.fleet.plan import PlanError, node_capacity, spread, stream_cost
from detector.inference.model import ModelResolveError
from detector.inference.rule_models import enabled_rules, manifest_ref, model_key, rule_model_configs

log = logging.getLogger("citywatch.fleet")

NAMESPACE = "citywatch"
RefOf = Callable[[str | None], str]
JOIN_TIMEOUT_S = (
    180.0  # a node's detector must answer within this (loading its models) or the node is not used
)
STOP_TIMEOUT_S = 120.0  # streams stopping (joined, judged, flushed) or starting on a node


class FleetError(DetectorError):
    """The fleet cannot start or go on (no Ray, no cluster at the address, no node with a CPU)."""


def models_of(cfg: Any, stream: StreamConfig, base_dir: Path | None, ref_of: RefOf = manifest_ref) -> int:
    """How many distinct models serve ``stream``'s enabled rules (each costs an inference per sample): the
    same model under two spellings (``name: null`` and the default's name) counts once, as it loads once."""
    rule_cfgs = rule_model_configs(cfg, stream)
    wanted = [rule_cfgs[r] for r in enabled_rules(stream)] or [cfg.model]
    try:
        return len({model_key(mc, base_dir, ref_of) for mc in wanted})
    except ModelResolveError:  # the node says what is wrong when it loads them
        return len(wanted)


@dataclass
class NodeSlot:
    """What the driver knows of one node."""

    node_id: str
    capacity: float
    actor: Any
    name: str
    ready: Any = None  # the first ping's reference until the actor answered it (models loaded), then None
    started: float = 0.0
    misses: int = 0
    streams: set[str] = field(default_factory=set)


class FleetDriver:
    """Places the streams on the nodes and keeps them placed (see the module docstring); ``on_change`` is
    called with the new assignment after every placement that moved a stream (the bench times moves by it)."""

    def __init__(
        self,
        loaded: LoadedConfig,
        address: str,
        *,
        threads: int | None = None,
        poll_s: float = 1.0,
        call_timeout_s: float = 3.0,
        dead_after: int = 3,
        log_level: str = "INFO",
        log_format: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.address = address
        self.threads = threads
        self.poll_s = poll_s
        self.call_timeout_s = call_timeout_s
        self.dead_after = dead_after
        self.log_setup = (log_level, log_format)
        cfg = loaded.config
        self.streams = {s.id: s for s in cfg.enabled_streams}
        ref_of = functools.cache(manifest_ref)
        self.costs = {
            sid: stream_cost(s, models_of(cfg, s, loaded.base_dir, ref_of)) for sid, s in self.streams.items()
        }
        self.nodes: dict[str, NodeSlot] = {}
        self.checkpoints: dict[str, bytes] = {}
        self.finished: set[str] = set()
        self.stop_event = threading.Event()
        self.moves = 0  # streams started on another node than before (a node left or joined)
        self.on_change: Callable[[dict[str, str]], None] | None = None
        self._ray: Any = None
        self._generation = 0
        self._token = uuid.uuid4().hex[:8]  # actor names of two drivers on one cluster never meet
        self._placed: set[str] = set()  # streams placed at least once
        self._gone: set[str] = set()  # nodes declared dead: never used again (a node back gets a new id)
        self._forget: list[str] = []  # worker names of dead nodes whose retained status is to be cleared

    # ------------------------------------------------------------------ start
    def start(self) -> FleetDriver:
        try:
            import ray
        except ImportError as err:
            raise FleetError("--ray needs Ray: pip install 'citywatch[ray]'") from err
        self._ray = ray
        if not ray.is_initialized():
            try:
                ray.init(
                    address=None if self.address == "local" else self.address,
                    namespace=NAMESPACE,
                    log_to_driver=True,
                    include_dashboard=False if self.address == "local" else None,
                )
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise FleetError(f"no Ray cluster at {self.address}: {err}") from err
        self._sync_nodes()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while any(s.ready is not None for s in self.nodes.values()) and time.monotonic() < deadline:
            self._check_joins(wait_s=1.0)
        if not self._ready():
            raise FleetError("the Ray cluster has no living node with a CPU whose detector started")
        self._place(rebalance=True)
        self._adopt([])  # outboxes an earlier fleet left behind
        return self

    def assignment(self) -> dict[str, str]:
        """Stream → node id, as running now."""
        return {sid: nid for nid, slot in self.nodes.items() for sid in slot.streams}

    def _ready(self) -> dict[str, NodeSlot]:
        return {nid: s for nid, s in self.nodes.items() if s.ready is None}

    # ------------------------------------------------------------------ nodes
    def _living_nodes(self) -> dict[str, float]:
        out = {}
        for n in self._ray.nodes():
            if n.get("Alive") and (cap := node_capacity(n.get("Resources", {}))) > 0:
                out[str(n["NodeID"])] = cap
        return out

    def _sync_nodes(self) -> tuple[list[str], list[str]]:
        """Actors for new nodes, slots of dead ones dropped; returns (joined, left) node ids."""
        living = self._living_nodes()
        left = [nid for nid in self.nodes if nid not in living]
        for nid, cap in living.items():
            if nid not in self.nodes and nid not in self._gone:
                self.nodes[nid] = self._new_slot(nid, cap)
        for nid in left:
            self._drop(nid, "Ray says it is dead")
        return self._check_joins(), left

    def _check_joins(self, wait_s: float = 0.0) -> list[str]:
        """Nodes whose detector answered its first ping since the last look (its models loaded)."""
        pending = {s.ready: nid for nid, s in self.nodes.items() if s.ready is not None}
        if not pending:
            return []
        done, _ = self._ray.wait(list(pending), num_returns=len(pending), timeout=wait_s)
        joined = []
        for ref in done:
            nid = pending[ref]
            slot = self.nodes[nid]
            try:
                slot.name = self._ray.get(ref)
            except Exception as err:  # the node died meanwhile, or the actor failed to load its models
                self._drop(nid, f"its detector did not start: {err}")
                continue
            slot.ready = None
            joined.append(nid)
            log.info("node %s joined (%g cores): detector %s", nid[:8], slot.capacity, slot.name)
        for ref, nid in pending.items():
            if ref not in done and time.monotonic() - self.nodes[nid].started > JOIN_TIMEOUT_S:
                self._drop(nid, f"its detector did not start within {JOIN_TIMEOUT_S:g} s")
        return joined

    def _new_slot(self, nid: str, cap: float) -> NodeSlot:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        short = nid[:8]
        self._generation += 1
        remote = self._ray.remote(FleetNodeActor)
        actor = remote.options(
            name=f"citywatch-node-{nid}-{self._token}-{self._generation}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False),
            num_cpus=0,
            max_concurrency=8,
            max_restarts=0,
        ).remote(self.loaded, f"{NODE_PREFIX}{short}", self.threads, self.log_setup)
        log.info("node %s: starting its detector", short)
        name = worker_name(self.loaded.config.worker_id, f"{NODE_PREFIX}{short}")  # what its ping answers
        return NodeSlot(nid, cap, actor, name, ready=actor.ping.remote(), started=time.monotonic())

    def _drop(self, nid: str, why: str) -> None:
        slot = self.nodes.pop(nid, None)
        self._gone.add(nid)
        if slot is None:
            return
        log.warning("node %s left (%s): its %d streams move", nid[:8], why, len(slot.streams))
        self._kill(slot.actor)
        if slot.name:
            self._forget.append(slot.name)

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            log.debug("kill of a fleet actor failed", exc_info=True)

    # ------------------------------------------------------------------ placing streams
    def _place(self, rebalance: bool) -> None:
        ray = self._ray
        costs = {sid: c for sid, c in self.costs.items() if sid not in self.finished}
        current = self.assignment()
        try:
            capacity = {nid: s.capacity for nid, s in self._ready().items()}
            plan = spread(costs, capacity, current, rebalance=rebalance)
        except PlanError as err:
            log.error("%s; the streams wait for a node", err)
            return
        leaving: dict[str, list[str]] = {}
        for sid, (src, _dst) in plan.moves.items():
            if src is not None and src in self.nodes:
                leaving.setdefault(src, []).append(sid)
        stuck: set[str] = set()
        for src, ids in leaving.items():  # stopped where they run, judged to their last frame, flushed
            slot = self.nodes[src]
            try:
                got = ray.get(slot.actor.stop_streams.remote(ids), timeout=STOP_TIMEOUT_S)
            except Exception as err:  # they may still run there: never twice (a dead node is noticed apart)
                log.error("node %s: stopping %s failed (%s): they stay there", src[:8], ids, err)
                stuck |= set(ids)
                continue
            self.checkpoints.update({k: v for k, v in got.items() if v is not None})
            slot.streams -= set(ids)
        arriving: dict[str, list[str]] = {}
        for sid, (_src, dst) in plan.moves.items():
            if sid not in stuck:
                arriving.setdefault(dst, []).append(sid)
        calls = {}
        for dst, ids in arriving.items():
            batch = [(self.streams[sid], self.checkpoints.get(sid)) for sid in ids]
            calls[dst] = (ids, self.nodes[dst].actor.start_streams.remote(batch))
        running: set[str] = set()
        for dst, (ids, ref) in calls.items():
            try:
                started = set(ray.get(ref, timeout=STOP_TIMEOUT_S))
            except Exception as err:
                log.error("node %s: starting streams failed: %s", dst[:8], err)
                continue
            self.nodes[dst].streams |= started
            running |= started
            if set(ids) - started:  # placed again at the next look
                log.error("node %s could not start %s", dst[:8], sorted(set(ids) - started))
        self.moves += len(running & self._placed)  # one that failed to start moves when it starts
        self._placed |= running
        for sid, (src, dst) in sorted(plan.moves.items()):
            if sid in running:
                log.info("stream %s: %s → node %s", sid, f"node {src[:8]}" if src else "placed", dst[:8])
        if plan.moves and self.on_change is not None:
            self.on_change(self.assignment())

    # ------------------------------------------------------------------ the loop
    def poll(self) -> None:
        """One look: checkpoints and finished streams from every node, dead and new nodes handled."""
        ray = self._ray
        ready = self._ready()
        refs = {n: (s.actor.checkpoints.remote(), s.actor.finished.remote()) for n, s in ready.items()}
        dead: list[tuple[str, str]] = []
        deadline = time.monotonic() + self.call_timeout_s  # asked at once: hung nodes' waits do not add up
        for nid, (ckpt_ref, fin_ref) in refs.items():
            slot = self.nodes[nid]
            try:
                ckpts, fin = ray.get([ckpt_ref, fin_ref], timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                slot.misses += 1
                if slot.misses >= self.dead_after:
                    dead.append((nid, f"no answer to {slot.misses} polls in a row"))
                continue
            except ray.exceptions.RayError as err:
                dead.append((nid, f"its actor died: {type(err).__name__}"))
                continue
            slot.misses = 0
            self.checkpoints.update(ckpts)
            self.finished |= set(fin)
        for nid, why in dead:
            self._drop(nid, why)
        joined, left = self._sync_nodes()
        unplaced = set(self.costs) - set(self.assignment()) - self.finished
        if dead or left or (unplaced and not joined):
            self._place(rebalance=False)
        if joined:
            self._place(rebalance=True)
        if dead or left or joined:  # a node joining may be a dead node's machine back, its outbox on its disk
            self._forget = self._adopt(self._forget)

    def _adopt(self, forget: list[str]) -> list[str]:
        """Outboxes of dead nodes delivered by living ones; their retained status cleared. Returns the
        worker names left to forget (no node lives to clear them: the next one that joins does)."""
        living = [s.name for s in self.nodes.values()]  # a starting node's outbox is its own already
        for slot in self._ready().values():
            if forget:
                slot.actor.forget.remote(forget)
                forget = []
            try:
                n = self._ray.get(slot.actor.adopt_orphans.remote(living), timeout=60)
            except Exception as err:
                log.error("node %s: adopting orphaned outboxes failed: %s", slot.node_id[:8], err)
                continue
            if n:
                log.warning("node %s delivers %d events a dead node left in its outbox", slot.node_id[:8], n)
        return forget

    def all_finished(self) -> bool:
        return bool(self.streams) and self.finished >= set(self.streams)

    def run(self, exit_when_done: bool = False) -> None:
        while not self.stop_event.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # Ray's control plane unreachable for a moment: the nodes run on meanwhile
                log.exception("fleet: one look at the nodes failed; trying again in %g s", self.poll_s)
            if exit_when_done and self.all_finished():
                break

    def states(self) -> dict[str, dict[str, Any]]:
        """Every stream's state, from the node that runs it."""
        out: dict[str, dict[str, Any]] = {}
        for slot in list(self._ready().values()):  # a node still loading its models runs no stream
            try:
                out.update(self._ray.get(slot.actor.states.remote(), timeout=self.call_timeout_s))
            except Exception as err:
                log.warning("node %s did not say its streams' states: %s", slot.node_id[:8], err)
        return out

    def stop(self, within_s: float | None = None) -> None:
        """Stop every node's detector (each flushes its outbox), then let go of the actors."""
        refs = []
        for slot in self.nodes.values():
            refs.append(slot.actor.shutdown.remote(within_s))
        deadline = time.monotonic() + (within_s or 30.0) + 5.0  # they stop together: one wait for all
        for ref in refs:
            try:
                self._ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except Exception as err:
                log.warning("a fleet node did not stop cleanly: %s", err)
        for slot in list(self.nodes.values()):
            self._kill(slot.actor)
        self.nodes.clear()


class FleetNodeActor(FleetNode):
    """The actor form: sets up this process's logging first (a Ray worker starts with none)."""

    def __init__(
        self, loaded: LoadedConfig, node: str, threads: int | None, log_setup: tuple[str, str | None]
    ) -> None:
        from detector.contracts.logs import setup_logging

        setup_logging(*log_setup)
        super().__init__(loaded, node, threads)


__all__ = ["FleetDriver", "FleetError", "FleetNodeActor", "worker_name"]
