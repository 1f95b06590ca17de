"""The fleet's side of ``bench/fleet.py``: a local Ray cluster and ``FleetDriver`` over it (the throughput
run, then a node's death), the CPU time of the cluster's processes, the measuring window both sides use
(``Window``: the single detector's run too), and the cores ``detector.fleet.plan.stream_cost`` declares.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common

NODE_TITLE = "ray::FleetNodeActor"  # Ray's process title of a fleet node's actor


# ------------------------------------------------------------------------------------------ CPU time
def _processes() -> dict[int, tuple[int, float, float, str]]:
    """pid -> (parent pid, CPU seconds, RSS MB, command line) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / _common.CLK_TCK
        out[int(d.name)] = (int(fields[1]), cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20, cmd)
    return out


def tree_cpu() -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """CPU seconds of this process (the driver) and its descendants (the local Ray cluster; not the private
    broker, uncounted for the single detector too), split into the fleet nodes' detectors and the rest; and
    each node detector's RSS (MB)."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in procs.items():
        children.setdefault(ppid, []).append(pid)
    nodes, rest, rss = {}, {}, {}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid not in procs:
            continue
        _, cpu, mb, cmd = procs[pid]
        if "mosquitto" in cmd.split(" ", 1)[0]:
            continue
        if cmd.startswith(NODE_TITLE):
            nodes[pid], rss[pid] = cpu, mb
        else:
            rest[pid] = cpu
    return nodes, rest, rss


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings (a process started meanwhile counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# ------------------------------------------------------------------------------------------ measures
def all_live(states: dict[str, dict[str, Any]], ids: list[str]) -> bool:
    return all(states.get(sid, {}).get("state") in ("live", "finished") for sid in ids)


class Window:
    """What the streams did from the first moment every one of them is live (the first samples are read,
    the inference batches are full) to the last stream's last sample: samples and seconds. ``cpu`` reads
    the CPU seconds that count (a number, or per-process numbers) at both ends."""

    def __init__(self, ids: list[str], cpu: Callable[[], Any]) -> None:
        self.ids, self.cpu = ids, cpu
        self.live_at: float | None = None  # monotonic
        self.wall0 = 0.0
        self.samples0: dict[str, int] = {}
        self.cpu0: Any = None

    def check(self, states: dict[str, dict[str, Any]]) -> bool:
        """Opens the window once every stream is live; True from then on."""
        if self.live_at is None and all_live(states, self.ids):
            self.live_at, self.wall0, self.cpu0 = time.monotonic(), time.time(), self.cpu()
            self.samples0 = {sid: int(s.get("samples") or 0) for sid, s in states.items()}
        return self.live_at is not None

    def close(self, states: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The figures at the end (every stream finished); ``cpu_end`` is read now, when the end is seen (a
        little after the last sample): ``cpu_seconds`` since the start."""
        assert self.live_at is not None
        per_stream = {
            sid: int(s.get("samples") or 0) - self.samples0.get(sid, 0) for sid, s in states.items()
        }
        last = max(
            (float(s["last_sample_at"]) for s in states.values() if s.get("last_sample_at")), default=0.0
        )
        return {
            "samples": sum(per_stream.values()),
            "seconds": max(0.0, last - self.wall0),
            "cpu_end": self.cpu(),
            "cpu_seconds": time.monotonic() - self.live_at,
            "per_stream": per_stream,
        }


def rate(samples: int, seconds: float) -> float | None:
    return round(samples / seconds, 2) if seconds > 0 else None


# ------------------------------------------------------------------------------------------ the fleet
def make_cluster(workers: int, cpus: int) -> tuple[Any, float]:
    from ray.cluster_utils import Cluster

    t = time.monotonic()
    store = 100 * 2**20  # the fleet passes configs and checkpoints only
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": store})
    for _ in range(workers):
        cluster.add_node(num_cpus=cpus, object_store_memory=store)
    cluster.wait_for_nodes()
    return cluster, time.monotonic() - t


def pace(driver: Any, until: Callable[[], bool], timeout: float, what: str, poll_s: float = 1.0) -> float:
    """Poll the driver every ``poll_s`` (as ``citywatch run --ray`` does) and check ``until`` every 0.25 s;
    returns the moment it held."""
    t0 = time.monotonic()
    next_poll = t0 + poll_s
    while True:
        if until():
            return time.monotonic()
        now = time.monotonic()
        if now - t0 > timeout:
            raise SystemExit(f"bench/fleet.py: {what} not within {timeout:g} s")
        if now >= next_poll:
            driver.poll()
            next_poll = time.monotonic() + poll_s
        time.sleep(0.25)


def run_fleet(cluster: Any, config: Path, threads: int, wait_s: float, log_level: str) -> dict[str, Any]:
    """The same streams over the cluster's worker nodes, until all finished."""
    from detector.commands.run import load
    from detector.fleet.driver import FleetDriver

    loaded = load(config)
    ids = [s.id for s in loaded.config.enabled_streams]
    driver = FleetDriver(loaded, cluster.address, threads=threads, log_level=log_level)
    begin = time.monotonic()
    driver.start()
    win = Window(ids, tree_cpu)  # every process of the local cluster, and the driver (this one)
    try:
        pace(driver, lambda: win.check(driver.states()), wait_s, "every stream live on the fleet")
        pace(driver, driver.all_finished, wait_s - (time.monotonic() - begin), "every fleet stream finished")
        st = driver.states()
        end = win.close(st)
        per_node: dict[str, int] = {}
        for s in st.values():
            per_node[str(s.get("node"))] = per_node.get(str(s.get("node")), 0) + 1
    finally:
        driver.stop()
    (nodes0, rest0, _), (nodes1, rest1, rss) = win.cpu0, end["cpu_end"]
    node_cpu, rest_cpu = spent(nodes0, nodes1), spent(rest0, rest1)
    assert win.live_at is not None
    return {
        "samples": end["samples"],
        "seconds": round(end["seconds"], 2),
        "samples_per_s": rate(end["samples"], end["seconds"]),
        "place_s": round(win.live_at - begin, 2),
        "cores_nodes": round(node_cpu / end["cpu_seconds"], 2),
        "cores_ray_and_driver": round(rest_cpu / end["cpu_seconds"], 2),
        "core_s_per_sample": round(node_cpu / end["samples"], 4) if end["samples"] else None,
        "core_s_per_sample_all": round((node_cpu + rest_cpu) / end["samples"], 4) if end["samples"] else None,
        "rss_mb_per_node": round(sum(rss.values()) / len(rss), 1) if rss else None,
        "streams_per_node": dict(sorted(per_node.items())),
        "moves": driver.moves,
        "_per_stream": end["per_stream"],
        "_node_cpu": node_cpu,
    }


class LeftStamp(logging.Handler):
    """When the driver logged that a node left, and why (``detector.fleet.driver``: "node X left (why)")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.at: float | None = None
        self.why: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if self.at is None and msg.startswith("node ") and " left (" in msg:
            self.at, self.why = time.monotonic(), msg.split(" left (", 1)[1].split("):", 1)[0]


def run_move(cluster: Any, config: Path, threads: int, wait_s: float, log_level: str) -> dict[str, Any]:
    """Paced streams over the fleet; one worker node removed without grace; until its streams are live
    on another node."""
    import ray

    from detector.commands.run import load
    from detector.fleet.driver import FleetDriver

    deadline = time.monotonic() + 30  # the first driver's actors (their names) are gone
    while any(n.startswith("citywatch-node-") for n in ray.util.list_named_actors()):
        if time.monotonic() > deadline:
            raise SystemExit("bench/fleet.py: the throughput run's fleet nodes did not go away")
        time.sleep(0.25)
    loaded = load(config)
    ids = [s.id for s in loaded.config.enabled_streams]
    driver = FleetDriver(loaded, cluster.address, threads=threads, log_level=log_level)
    driver.start()
    left = LeftStamp()
    logging.getLogger("citywatch.fleet").addHandler(left)
    restarted: list[float] = []
    driver.on_change = lambda _assignment: restarted.append(time.monotonic())
    try:
        pace(driver, lambda: all_live(driver.states(), ids), wait_s, "every paced stream live")
        # the driver holds a checkpoint of every stream (the nodes send them every few seconds of frames)
        pace(driver, lambda: set(ids) <= set(driver.checkpoints), wait_s, "a checkpoint of every stream")
        by_node = driver.assignment()
        victim = max(cluster.worker_nodes, key=lambda n: sum(v == n.node_id for v in by_node.values()))
        gone = f"node-{victim.node_id[:8]}"
        moving = sorted(sid for sid, nid in by_node.items() if nid == victim.node_id)
        checkpointed = sum(sid in driver.checkpoints for sid in moving)
        restarted.clear()
        killed = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)

        def moved() -> bool:
            if victim.node_id in driver.nodes:
                return False
            st = driver.states()
            return all(  # finished there: it went live there first (a short clip may end meanwhile)
                st.get(sid, {}).get("state") in ("live", "finished") and st[sid].get("node") != gone
                for sid in moving
            )

        done = pace(driver, moved, wait_s, f"the streams of {gone} live on another node")
    finally:
        logging.getLogger("citywatch.fleet").removeHandler(left)
        driver.stop(within_s=15.0)
    return {
        "streams_moved": len(moving),
        "checkpointed": checkpointed,
        "left_because": left.why,
        "detect_s": round(left.at - killed, 2) if left.at is not None else None,
        "restart_s": round(restarted[0] - killed, 2) if restarted else None,
        "move_s": round(done - killed, 2),
        "file_speed": 1.0,
    }


def on_cluster(
    a: argparse.Namespace, config: Callable[[float, str], Path], kill: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The fleet's runs on a local Ray cluster made for them: throughput, then (``kill``) a node's death."""
    import ray

    _common.log(f"a Ray cluster: a head and {a.workers} worker nodes of {a.cpus_per_worker} CPU ...")
    with contextlib.redirect_stdout(sys.stderr):  # Ray prints its nodes' deaths on stdout: not ours
        cluster, cluster_s = make_cluster(a.workers, a.cpus_per_worker)
        try:
            fleet = run_fleet(cluster, config(0.0, "fleet"), a.node_threads, a.wait, a.log_level)
            fleet["threads_per_node"] = a.node_threads
            fleet["cluster_s"] = round(cluster_s, 2)
            _common.log(
                f"  fleet: {fleet['samples']} samples in {fleet['seconds']} s = {fleet['samples_per_s']}/s"
            )
            move = None
            if kill:
                _common.log("move: paced streams (file_speed 1), one worker node removed without grace ...")
                move = run_move(cluster, config(1.0, "paced"), a.node_threads, a.wait, a.log_level)
        finally:
            ray.shutdown()
            cluster.shutdown()
    return fleet, move


# ------------------------------------------------------------------------------------------ declared cost
def declared_core_s(cfg: Any, per_stream: dict[str, int], models: dict[str, int] | None = None) -> float:
    """Core-seconds ``detector.fleet.plan.stream_cost`` declares for these samples of these streams, with
    the models ``detector.fleet.driver.models_of`` counts (or ``models``: stream id -> models)."""
    from detector.fleet.driver import models_of
    from detector.fleet.plan import stream_cost

    streams = {s.id: s for s in cfg.enabled_streams}
    total = 0.0
    for sid, n in per_stream.items():
        s = streams[sid]
        m = models[sid] if models is not None else models_of(cfg, s, None)
        total += n * stream_cost(s, m) * s.sample_interval_s
    return total


def declared_costs(cfg: Any, running: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per kind of stream (one per clip): the cores ``stream_cost`` declares, the models it counts
    (``detector.fleet.driver.models_of``) and the models the detector runs for it (``running``)."""
    from detector.fleet.driver import models_of
    from detector.fleet.plan import stream_cost

    out: dict[str, dict[str, Any]] = {}
    for s in cfg.enabled_streams:
        declared = models_of(cfg, s, None)
        out.setdefault(
            s.id.rsplit("-", 1)[0],
            {
                "cores": round(stream_cost(s, declared), 4),
                "models": declared,
                "models_running": running.get(s.id),
            },
        )
    return out
