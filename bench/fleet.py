"""Fleet: streams sustained per worker node of ``citywatch run --ray``, and what the fleet machinery costs
against the single-process detector, in the same run on the same machine.

    python bench/fleet.py [--streams 16] [--workers 2] [--cpus-per-worker 1] [--no-kill] [--broker HOST:PORT]
    python bench/fleet.py --quick   # 4 streams of 30 s clips over 2 workers, one single run, no kill

Streams: ``--streams`` copies of the shipped streams.yaml's two streams (their rules, zones and models:
street-demo runs two models, street-dusk one), alternating, each its own id, replaying the bundled
scenario clips (640x360, 5 fps, 2 s GOP; rendered first when ``make scenarios`` has not run; ``--clip-s``:
only their first seconds) with the clips' resolution declared (``resolution:``, what the fleet's cost
model reads), sampled every 2 s (key frames only).

- ``single``: ``detector.commands.run.Detector`` in this process with every stream, inference threads on
  every core, the files read as fast as possible (``file_speed: 0``) until every stream finished; once
  before the fleet's run and once after (``--single-runs 2``, the default: the load of a shared machine
  changes), the two pooled.
- ``fleet``: a local Ray cluster (``ray.cluster_utils.Cluster``: a head with no CPU and ``--workers``
  worker nodes of ``--cpus-per-worker`` CPUs, all on this machine) and ``detector.fleet.driver.FleetDriver``
  as ``citywatch run --ray`` runs it (one detector per node with ``--node-threads`` inference threads, by
  default ``--cpus-per-worker``: each node as a machine of that many cores; polled every second) with the
  same streams, as fast as possible, until every stream finished.

``samples_per_s``: samples read from the first moment every stream is live to the last stream's last
sample. ``overhead`` = 1 - fleet / single samples per second; ``overhead_cpu`` = 1 - single / fleet
core-seconds per sample (the fleet's: node detectors, Ray's processes and the driver). The worker nodes
share this machine's cores, so this is the price of the fleet machinery (Ray, one detector and one set of
models per node, smaller inference batches), not scale-out; on a shared machine ``overhead`` moves with
the load of others, ``overhead_cpu`` much less. ``place_s``: ``FleetDriver.start()`` called (cluster
up) → every stream live (the driver starts a detector with its models on each node, then the streams).

``streams_per_worker``: what one worker node sustained at 0.5 samples/s per stream (one sample every
2 s): the fleet's samples per second / ``--workers`` / 0.5. ``streams_per_core``: the same from the CPU
time the node detectors used: 1 / (0.5 x core-seconds per sample). ``declared_cost``: what
``detector.fleet.plan.stream_cost`` declares per stream, with the models ``models_of`` counts and the
models the detector runs for it; ``ratio`` = measured / declared core-seconds for the samples the fleet
read (``ratio_models_running``: declared with the models run). The single detector's parts, next to
``DECODE_CORE_S_PER_MP`` and ``INFER_CORE_S`` of ``detector.fleet.plan``: ``decode_s_per_mp``, wall seconds
in the decoder (and the samples' colour conversion) per megapixel decoded, and ``infer_ms_per_frame`` per
model, the inference thread's wall milliseconds per frame (batched; on every core).

``--kill`` (the full run's default): then the same streams run paced as live cameras (``file_speed: 1``);
once all are live and the driver has their checkpoints, the worker node with most streams is removed
without grace (``cluster.remove_node(node, allow_graceful=False)``). From that moment: ``detect_s``, the
driver logged that the node left (``left_because``: why it decided so); ``restart_s``, its streams were
started on the other node; ``move_s`` (also top level), every one of them is live there.

A private Mosquitto on a free port carries the detectors' MQTT (``--broker HOST:PORT`` to use another);
without ``mosquitto`` the broker on 127.0.0.1:1883 is used when it answers, else the bench exits 2.
Prints one JSON object (top-level keys: ``KEYS``); a summary on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common
import _data
import yaml
from _fleet import Window, declared_core_s, declared_costs, on_cluster, rate

RATE = 0.5  # samples per second of a stream sampled every 2 s (streams.yaml's sample_interval_s)
CLIPS = ("cam-demo-01", "cam-demo-02")  # the shipped streams.yaml's streams: street-demo and street-dusk
KEYS = ("bench", "cpu", "cores", "streams", "workers", "cpus_per_worker", "sample_interval_s", "clip_s",
        "single", "fleet", "overhead", "overhead_cpu", "streams_per_worker", "streams_per_core", "place_s",
        "move_s", "declared_cost", "move")  # fmt: skip


# ------------------------------------------------------------------------------------------ set-up
def clip_size(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return f"{st.width}x{st.height}"


def cut(clip: Path, seconds: float, out_dir: Path) -> Path:
    """The first ``seconds`` of ``clip`` up to a key frame, copied without re-encoding (``--clip-s``)."""
    import av

    out_path = out_dir / f"{clip.stem}-{seconds:g}s.mp4"
    if out_path.is_file():
        return out_path
    with av.open(str(clip)) as inp, av.open(str(out_path), "w") as out:
        out.metadata.update(inp.metadata)  # creation_time: the frames' wall times stay the clip's
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for pkt in inp.demux(ist):
            if pkt.dts is None:
                continue
            if pkt.is_keyframe and pkt.pts is not None and pkt.pts * (ist.time_base or 0) >= seconds:
                break
            pkt.stream = ost
            out.mux(pkt)
    return out_path


def make_config(
    work: Path, n: int, broker: tuple[str, int], file_speed: float, tag: str, clip_s: float | None
) -> Path:
    """streams.yaml with ``n`` copies of its streams (alternating), this run's broker, prefix and dirs."""
    cfg = yaml.safe_load((_common.REPO / "streams.yaml").read_text())
    cfg["worker_id"] = f"bench-fleet-{tag}-{uuid.uuid4().hex[:6]}"
    cfg["live_reload_s"] = 0  # as a fleet node runs (its streams come from the driver)
    cfg["mqtt"].update(
        {"host": broker[0], "port": broker[1], "topic_prefix": f"bench-fleet/{uuid.uuid4().hex[:10]}/v1"}
    )
    for key in ("outbox", "evidence", "collect"):
        cfg[key]["dir"] = str(work / tag / key)
    cfg["metrics"] = {"host": "127.0.0.1", "port": 0}
    base = {s["id"]: s for s in cfg["streams"]}
    for sid in CLIPS:
        clip = _data.scenario_clip(Path(base[sid]["url"]).stem)
        if clip_s:
            clip = cut(clip, clip_s, work)
        base[sid].update({"url": str(clip), "file_speed": file_speed, "resolution": clip_size(clip)})
    cfg["streams"] = [{**base[CLIPS[i % 2]], "id": f"{CLIPS[i % 2]}-{i // 2 + 1:02d}"} for i in range(n)]
    path = work / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    return path


@contextlib.contextmanager
def broker(given: str | None, work: Path) -> Iterator[tuple[str, int, str]]:
    from detector.delivery.broker import broker_answers

    if given:
        host, _, port_text = given.rpartition(":")
        if not broker_answers(host, int(port_text)):
            _data.needs("bench/fleet.py", f"no MQTT broker answers at {given}")
        yield host, int(port_text), f"{given} (given)"
        return
    if shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin"):
        from ingest import mosquitto

        with mosquitto(work) as (host, port, what):
            yield host, port, what
        return
    if broker_answers("127.0.0.1", 1883):
        yield "127.0.0.1", 1883, "127.0.0.1:1883 (no mosquitto to start a private one)"
        return
    _data.needs("bench/fleet.py", "it needs mosquitto (make test-services) or --broker HOST:PORT")


# ------------------------------------------------------------------------------------ the single detector
def run_single(config: Path, wait_s: float) -> dict[str, Any]:
    """The single-process detector with every stream, until all finished."""
    from detector.commands.run import Detector, load

    loaded = load(config)
    ids = [s.id for s in loaded.config.enabled_streams]
    det = Detector(loaded)
    begin = time.monotonic()
    det.start()
    win = Window(ids, _common.cpu_s)  # this process: the detector and nothing else

    def states() -> dict[str, dict[str, Any]]:
        return {w.stream.id: w.snapshot() for w in det.workers}

    try:
        while not (win.check(states()) and det.all_finished() and det.service and not det.service.pending()):
            if time.monotonic() - begin > wait_s:
                raise SystemExit(f"bench/fleet.py: the single detector did not finish within {wait_s:g} s")
            time.sleep(0.1)
        end = win.close(states())
        rss = _common.rss_mb()
        running = {sid: len(det.models.plan(sid).needed) for sid in ids} if det.models is not None else {}
        decode = (  # wall seconds in the decoder (and the samples' colour conversion), megapixels decoded
            sum(w.state.decode_s for w in det.workers),
            sum(w.state.decoded * (w.state.width or 0) * (w.state.height or 0) / 1e6 for w in det.workers),
        )
        _, per_model = det.service.counters_now() if det.service is not None else ({}, {})
        infer = {m: (c.busy_s, c.frames) for m, c in per_model.items()}
        models = det.models.describe() if det.models is not None else None
    finally:
        det.stop()
    cpu = end["cpu_end"] - win.cpu0
    assert win.live_at is not None
    return {
        "samples": end["samples"],
        "seconds": round(end["seconds"], 2),
        "samples_per_s": rate(end["samples"], end["seconds"]),
        "start_s": round(win.live_at - begin, 2),
        "cores": round(cpu / end["cpu_seconds"], 2),
        "core_s_per_sample": round(cpu / end["samples"], 4) if end["samples"] else None,
        "rss_mb": round(rss, 1),
        "models": models,
        "_models_running": running,
        "_cpu": (cpu, end["cpu_seconds"], end["seconds"]),
        "_decode": decode,
        "_infer": infer,
    }


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The single detector's runs (before and after the fleet's) as one: samples and seconds added up."""
    out = dict(runs[-1])
    cpu, cpu_seconds, seconds = (sum(r["_cpu"][i] for r in runs) for i in range(3))
    samples = sum(r["samples"] for r in runs)
    out.update(
        samples=samples,
        seconds=round(seconds, 2),
        samples_per_s=rate(samples, seconds),
        cores=round(cpu / cpu_seconds, 2),
        core_s_per_sample=round(cpu / samples, 4) if samples else None,
        runs_samples_per_s=[r["samples_per_s"] for r in runs],
    )
    decode_s, mp = (sum(r["_decode"][i] for r in runs) for i in range(2))
    out["decode_s_per_mp"] = round(decode_s / mp, 5) if mp else None
    infer: dict[str, list[float]] = {}
    for r in runs:
        for m, (busy, frames) in r["_infer"].items():
            infer.setdefault(m, [0.0, 0.0])
            infer[m][0] += busy
            infer[m][1] += frames
    out["infer_ms_per_frame"] = {m: round(1000 * b / f, 2) for m, (b, f) in infer.items() if f}
    for key in ("_cpu", "_decode", "_infer"):
        out.pop(key)
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=16, help="streams (copies of streams.yaml's two)")
    p.add_argument("--workers", type=int, default=2, help="Ray worker nodes on this machine")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="each worker node's CPUs (Ray resources)")
    p.add_argument(
        "--node-threads", type=int, default=None,
        help="inference threads of each node's detector (default: --cpus-per-worker, as on a machine of that "
        "many cores; `citywatch run --ray` uses all of the node's machine)",
    )  # fmt: skip
    p.add_argument("--clip-s", type=float, default=None, help="replay only the clips' first S seconds")
    p.add_argument("--kill", action=argparse.BooleanOptionalAction, default=None,
                   help="measure a node's death (default: on, off with --quick)")  # fmt: skip
    p.add_argument("--broker", help="HOST:PORT of an MQTT broker (default: a private mosquitto)")
    p.add_argument("--wait", type=float, default=600.0, help="longest wait for a run to finish (s)")
    p.add_argument("--log-level", default="WARNING", help="the detectors' log level (stderr)")
    p.add_argument(
        "--single-runs", type=int, choices=(1, 2), default=2,
        help="2: the single detector runs before and after the fleet (a shared machine's load changes)",
    )  # fmt: skip
    p.add_argument(
        "--quick", action="store_true", help="a short run: 4 streams of 30 s clips, no kill, one single run"
    )
    a = p.parse_args(argv)
    if a.quick:
        a.streams, a.clip_s, a.single_runs = min(a.streams, 4), a.clip_s or 30.0, 1
    a.node_threads = a.node_threads or a.cpus_per_worker
    kill = (not a.quick) if a.kill is None else a.kill
    try:
        import ray  # noqa: F401
    except ImportError:
        _data.needs("bench/fleet.py", "it needs Ray: pip install 'citywatch[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from detector.commands.run import load
    from detector.contracts.logs import setup_logging

    setup_logging(a.log_level, None)
    with (
        tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp,
        broker(a.broker, Path(tmp)) as (h, port, what),
    ):
        work = Path(tmp)

        def config(file_speed: float, tag: str) -> Path:
            return make_config(work, a.streams, (h, port), file_speed, tag, a.clip_s)

        fast = config(0.0, "single")
        _common.log(f"broker: {what}; {a.streams} streams")
        runs = []
        for k in range(a.single_runs):
            if k == 1:  # the fleet runs between the single detector's first and second run
                fleet, move = on_cluster(a, config, kill)
            _common.log("the single detector ...")
            runs.append(run_single(fast, a.wait))
            _common.log(f"  single: {runs[-1]['samples']} samples in {runs[-1]['seconds']} s")
        if a.single_runs < 2:
            fleet, move = on_cluster(a, config, kill)
        single = pooled(runs)
        cfg = load(fast).config
    per_stream, running = fleet.pop("_per_stream"), single.pop("_models_running")
    declared, declared_running = declared_core_s(cfg, per_stream), declared_core_s(cfg, per_stream, running)
    node_cpu = fleet.pop("_node_cpu")
    costs = declared_costs(cfg, running)
    overhead = overhead_cpu = None
    if single["samples_per_s"] and fleet["samples_per_s"]:
        overhead = round(1 - fleet["samples_per_s"] / single["samples_per_s"], 3)
    if single["core_s_per_sample"] and fleet["core_s_per_sample_all"]:
        overhead_cpu = round(1 - single["core_s_per_sample"] / fleet["core_s_per_sample_all"], 3)
    per_worker = round(fleet["samples_per_s"] / a.workers / RATE, 1) if fleet["samples_per_s"] else None
    per_core = round(1 / (RATE * fleet["core_s_per_sample"]), 1) if fleet["core_s_per_sample"] else None
    result = {
        "bench": "fleet",
        "cpu": _common.cpu_model(),
        "cores": os.cpu_count(),
        "streams": a.streams,
        "workers": a.workers,
        "cpus_per_worker": a.cpus_per_worker,
        "sample_interval_s": 1 / RATE,
        "clip_s": a.clip_s,
        "single": single,
        "fleet": fleet,
        "overhead": overhead,
        "overhead_cpu": overhead_cpu,
        "streams_per_worker": per_worker,
        "streams_per_core": per_core,
        "place_s": fleet["place_s"],
        "move_s": move["move_s"] if move else None,
        "declared_cost": {
            "per_stream": costs,
            "streams_per_core": round(len(costs) / sum(c["cores"] for c in costs.values()), 1),
            "core_s": round(declared, 2),
            "measured_core_s": round(node_cpu, 2),
            "ratio": round(node_cpu / declared, 2) if declared else None,
            "core_s_models_running": round(declared_running, 2),
            "ratio_models_running": round(node_cpu / declared_running, 2) if declared_running else None,
        },
        "move": move,
    }
    assert tuple(result) == KEYS
    _summary(result)
    _common.emit(result)
    return 0


def _summary(r: dict[str, Any]) -> None:
    s, f, d, m = r["single"], r["fleet"], r["declared_cost"], r["move"]
    lines = [
        f"{r['cpu']}, {r['cores']} cores; {r['streams']} streams; {r['workers']} worker nodes of "
        f"{r['cpus_per_worker']} CPU on this machine",
        f"  single detector: {s['samples_per_s']} samples/s {s['runs_samples_per_s']}, {s['cores']} cores, "
        f"{s['core_s_per_sample']} core-s per sample; decoding {s['decode_s_per_mp']} s/MP, inference "
        f"{s['infer_ms_per_frame']} ms/frame",
        f"  fleet:           {f['samples_per_s']} samples/s, nodes {f['cores_nodes']} cores + Ray and driver "
        f"{f['cores_ray_and_driver']} cores, {f['core_s_per_sample']} core-s per sample in the nodes",
        f"  overhead: {r['overhead']} in samples/s, {r['overhead_cpu']} in CPU per sample",
        f"  streams per worker at 0.5 samples/s: {r['streams_per_worker']}; per core from CPU time: "
        f"{r['streams_per_core']}, declared {d['streams_per_core']}",
        f"  measured / declared core-s: {d['ratio']} ({d['ratio_models_running']} counting the models run)",
        f"  placed in {r['place_s']} s (cluster up in {f['cluster_s']} s)",
    ]
    if m:
        lines.append(
            f"  a node killed: dropped after {m['detect_s']} s ({m['left_because']}), its "
            f"{m['streams_moved']} streams restarted after {m['restart_s']} s, live elsewhere after "
            f"{m['move_s']} s"
        )
    _common.log("\n".join(["", *lines]))


if __name__ == "__main__":
    sys.exit(main())
