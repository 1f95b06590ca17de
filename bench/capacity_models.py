"""What the second model costs: ``bench/capacity.py --second-model``.

The shipped ``streams.yaml`` serves illegal_parking from the COCO model and the other rules from the
bureau's model (its global ``model:`` and ``rule_models:``). The capacity search runs twice in the same
run: ``one-model`` (``model:`` only) and ``two-models`` (with ``rule_models``), every stream with one zone
over the whole frame that enforces all four rules, so every model of the configuration sees every frame.
Each model is loaded once and batched across streams, as in ``citywatch run``; the inference service
reports each model's frames and seconds, hence its cost per frame at the sustained count.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import _common
import yaml

MODES = ("one-model", "two-models")
FULL_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
RULES = ["illegal_parking", "street_vending", "illegal_structure", "unclean_road"]


def shipped_models(config: Path | None = None) -> dict[str, Any]:
    """``model`` and ``rule_models`` of the shipped streams.yaml (the global ones)."""
    data = yaml.safe_load((config or _common.REPO / "streams.yaml").read_text(encoding="utf-8"))
    return {"model": data.get("model") or {}, "rule_models": data.get("rule_models") or {}}


def bench_config(mode: str, urls: list[str], rate: float) -> Any:
    """A CitywatchConfig of ``urls`` with the shipped models: ``two-models`` keeps its rule_models."""
    from detector.config.schema import CitywatchConfig

    models = shipped_models()
    streams = [
        {
            "id": f"cam{i}",
            "url": url,
            "sample_interval_s": 1 / rate,
            "zones": [{"id": "all", "polygon": FULL_FRAME, "rules": RULES}],
        }
        for i, url in enumerate(urls)
    ]
    rule_models = models["rule_models"] if mode == "two-models" else {}
    if mode == "two-models" and not rule_models:
        raise SystemExit("streams.yaml has no rule_models: nothing to compare")
    return CitywatchConfig.model_validate(
        {"version": 1, "model": models["model"], "rule_models": rule_models, "streams": streams}
    )


def tune_first(log: Any) -> None:
    """Measure the configuration's models on this host before any probe (``citywatch models tune``),
    so no probe measures at start-up while RTSP sessions load the box; a valid cache is kept."""
    from detector.contracts.manifest import load_manifest
    from detector.inference.tune import tune_and_cache
    from detector.inference.tune_cache import cache_path, host_info, lookup

    host, manifest = host_info(), load_manifest()
    models = shipped_models()
    sections = [models["model"], *models["rule_models"].values()]
    for ref in dict.fromkeys(s.get("name") for s in sections if not s.get("path") and not s.get("backend")):
        entry = manifest.get(ref)
        if lookup(entry, host, cache_path(host)) is None:
            log(f"tuning {entry.ref} on this host first ...")
            tune_and_cache(entry, batch=8, host=host)


def probe_models(
    mode: str, n: int, clip: Path, window: float, max_wait: float, meter: Any, summary: Any, gop_s: float
) -> dict[str, Any]:
    """One count of ``mode``: like ``capacity.probe_detector`` with the configuration's models."""
    from detector.delivery.publisher import JsonlSink
    from detector.inference.rule_models import load_rule_models
    from detector.inference.service import InferenceService
    from detector.sources import Frame
    from detector.sources.worker import StreamWorker
    from tests.rtsp_server import RtspServer

    stop = threading.Event()
    sink = JsonlSink(os.devnull, validate=False)
    workers: list[StreamWorker] = []
    with RtspServer({"/cam": clip}, copies=n) as srv:
        cfg = bench_config(mode, [srv.url(f"/cam{i}") for i in range(n)], 0.5)
        models = load_rule_models(cfg, os.cpu_count(), _common.REPO)
        svc = InferenceService(models.backends, stop, max_batch=models.batches)
        for i, stream in enumerate(cfg.streams):
            plan = models.plan(stream)
            pipe = models.pipeline(stream, sink)

            def handle(frame: Frame, dets: Any, pipe: Any = pipe, i: int = i) -> None:
                pipe.process(frame.ts, frame.image, dets)
                meter.record(i, time.time() - frame.ts)

            merge = plan.merge if len(models.models) > 1 else None
            svc.register(stream.id, handle, plan.needed, merge)
            workers.append(
                StreamWorker(stream, _common.REPO, lambda f, b: svc.submit(f, block=b), lambda *_: None, stop)
            )
        svc.start()
        for w in workers:
            w.start()
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline and not all(w.state.state == "live" for w in workers):
            time.sleep(0.5)
        live = sum(w.state.state == "live" for w in workers)
        time.sleep(2 * gop_s + 2)  # past the start-up burst
        cpu0, srv_cpu0, dropped0 = _common.cpu_s(), _common.cpu_s(srv.pid), sum(svc.dropped.values())
        before = {m: (c.frames, c.busy_s, c.batches) for m, c in svc.model_counters.items()}
        with meter.lock:
            meter.open_at = time.time()
        time.sleep(window)
        with meter.lock:
            meter.open_at = None
        cpu, srv_cpu = _common.cpu_s() - cpu0, _common.cpu_s(srv.pid) - srv_cpu0
        dropped = sum(svc.dropped.values()) - dropped0
        per_model = {}
        for m, c in svc.model_counters.items():
            frames, busy, batches = c.frames - before[m][0], c.busy_s - before[m][1], c.batches - before[m][2]
            per_model[m] = {
                "backend": f"{models.models[m].kind} {models.models[m].precision}",
                "frames": frames,
                "ms_per_frame": round(1000 * busy / frames, 2) if frames else None,
                "mean_batch": round(frames / batches, 2) if batches else None,
            }
        rss = _common.rss_mb()
        stop.set()
        for w in workers:
            w.stop()
        for w in workers:
            w.join(5)
        svc.wake()
        svc.join(10)
    out: dict[str, Any] = summary(n, window, meter, live, cpu, srv_cpu, rss, dropped)
    return out | {"models": per_model}


def _section(section: dict[str, Any]) -> str:
    """A rule_models section in a few words: its model, and the zoomed pass that confirms it, if any."""
    name = section.get("name") or str(section.get("path"))
    if section.get("zoom_imgsz"):
        name += f" + zoomed pass at {section['zoom_imgsz']} px by {section.get('zoom_model') or 'itself'}"
    return name


def second_model_report(one: int, two: int, probes: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``second_model`` key of capacity.py's JSON: streams sustained and each model's cost."""

    def at(mode: str, count: int) -> dict[str, Any] | None:
        return next((r for r in probes if r["mode"] == mode and r["streams"] == count and r["ok"]), None)

    best_one, best_two = at("one-model", one), at("two-models", two)
    return {
        "config": "streams.yaml: model + rule_models (global)",
        "rule_models": {k: _section(v) for k, v in shipped_models()["rule_models"].items()},
        "streams_one_model": one,
        "streams_two_models": two,
        "ratio": round(two / one, 2) if one else None,
        "ms_per_frame": {m: r["ms_per_frame"] for m, r in (best_two or {}).get("models", {}).items()},
        "ms_per_frame_one_model": {
            m: r["ms_per_frame"] for m, r in (best_one or {}).get("models", {}).items()
        },
        "models": (best_two or {}).get("models"),
    }
