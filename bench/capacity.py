"""Stream capacity: how many cameras one detector process sustains on this box, against a naive reader.

    python bench/capacity.py [--modes main,sub,naive] [--window 30] [--max-lag 2] [--clip-s 150]
    python bench/capacity.py --second-model [--window 20] [--max-probes 3]   # what a second model costs
    python bench/capacity.py --quick   # one probe per mode at 2 streams (1 naive), 5 s windows, 20 s clips

Cameras are H.264 files served by a real RTSP server (GStreamer's gst-rtsp-server, tests/rtsp_server.py)
on loopback, each mount its own session in real time; the server runs on this box, so its load counts.
``main``: 1920x1080, 25 fps, ~4 Mbit/s, 2 s GOP. ``sub``: the 640x360 detection substream (25 fps,
~0.5 Mbit/s, 2 s GOP). The clips are the bundled street scene scaled up, with sensor-like noise so the
encoder spends a real camera's bits; made once under ``var/bench/clips`` (the street scene is rendered
first when ``make scenarios`` has not run).

Detector (``main`` and ``sub``): the production path in one process: a ``StreamWorker`` per stream
(PyAV, key frames only when the GOP allows), the shared batched ``InferenceService`` with the manifest's
default model, backend and precision (``CITYWATCH_BENCH_MODEL='{"path": "..."}'``: another model or export),
and each stream's rules pipeline. Naive (``naive``): per stream a
thread with ``cv2.VideoCapture`` reading every frame and ``YOLO(pt).predict(frame)`` on every 50th
(0.5 samples/s), the .pt model shared under a lock.

A count is sustained when, over ``--window`` seconds after every stream is live, every stream delivers
at least 0.5 samples/s (one sample of slack) with sample lag of at most ``--max-lag`` s and no frame
dropped by inference. Sample lag is the time from when a frame was sent to when its detections were
handled. The detector's is measured from its frame timestamps, anchored when the connection was opened
(before the RTSP handshake, so it errs long); the baseline's from the moment its reader was least behind
(it errs short). Both errors favour the baseline. Each count runs in a fresh child process
(``--probe N --mode M``), so memory is measured per count. Prints one JSON object: ``streams``,
``naive_streams``, ``ratio``, ``substreams``, ``rss_mb_per_stream``, ``max_lag_s`` and every probe.

``--second-model`` (modes ``one-model`` and ``two-models``, ``bench/capacity_models.py``): main streams
with the shipped streams.yaml's models, without and with its ``rule_models``, in the same run; the JSON
gains ``second_model`` (``streams_one_model``, ``streams_two_models``, ``ms_per_frame`` per model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _common
import _data
import _search
import capacity_models
import numpy as np

CLIPS: dict[str, dict[str, Any]] = {
    "main": {"size": (1920, 1080), "kbps": 4000},
    "sub": {"size": (640, 360), "kbps": 500},
}
FPS, GOP_S, RATE = 25, 2.0, 0.5


# ------------------------------------------------------------------------------------------ clips
def make_clip(kind: str, seconds: float) -> Path:
    """The bench clip of ``kind``, encoded once (deterministic noise) and reused."""
    import av
    import cv2

    spec = CLIPS[kind]
    w, h = spec["size"]
    out_path = _common.VAR / "clips" / f"{kind}-{w}x{h}-{FPS}fps-{spec['kbps']}k-{seconds:.0f}s.mp4"
    if out_path.is_file():
        return out_path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _common.log(f"encoding {out_path.name} (once) ...")
    src = av.open(str(_data.scenario_clip("street-demo")))
    frames = [f.to_ndarray(format="bgr24") for f in src.decode(video=0)]
    src.close()
    rng = np.random.default_rng(7)
    noise = [rng.normal(0, 3.0, (h, w, 1)).astype(np.int16) for _ in range(12)]
    tmp = out_path.with_suffix(".part.mp4")
    out = av.open(str(tmp), "w")
    st = out.add_stream("libx264", rate=FPS)
    st.width, st.height, st.pix_fmt = w, h, "yuv420p"
    kbps = int(spec["kbps"])
    g = str(int(FPS * GOP_S))
    st.options = {
        "g": g, "keyint_min": g, "sc_threshold": "0", "bf": "0", "preset": "superfast", "profile": "main",
        "b": f"{kbps}k", "maxrate": f"{int(kbps * 1.2)}k", "bufsize": f"{kbps * 2}k",
    }  # fmt: skip
    per_src = FPS // 5  # the scene is rendered at 5 fps: each picture stays for 5 frames, noise changes
    for i in range(int(seconds * FPS)):
        base = cv2.resize(frames[(i // per_src) % len(frames)], (w, h), interpolation=cv2.INTER_LINEAR)
        img = np.clip(base.astype(np.int16) + noise[i % len(noise)], 0, 255).astype(np.uint8)
        vf = av.VideoFrame.from_ndarray(img, format="bgr24")
        vf.pts = i
        for pk in st.encode(vf):
            out.mux(pk)
    for pk in st.encode():
        out.mux(pk)
    out.close()
    tmp.rename(out_path)
    return out_path


# ------------------------------------------------------------------------------------------ probes
class Meter:
    """Per-stream samples and lags inside the measuring window."""

    def __init__(self, n: int) -> None:
        self.lock = threading.Lock()
        self.open_at: float | None = None
        self.samples = [0] * n
        self.lags: list[float] = []

    def record(self, index: int, lag: float) -> None:
        with self.lock:
            if self.open_at is not None:
                self.samples[index] += 1
                self.lags.append(lag)


def probe_detector(n: int, clip: Path, window: float, max_wait: float) -> dict[str, Any]:
    from detector.config import ModelConfig, StreamConfig
    from detector.delivery.publisher import JsonlSink
    from detector.inference.model import load_model
    from detector.inference.service import InferenceService
    from detector.pipeline import StreamPipeline
    from detector.sources import Frame
    from detector.sources.worker import StreamWorker
    from tests.rtsp_server import RtspServer

    # the manifest default; CITYWATCH_BENCH_MODEL='{"path": "x.onnx"}' benches another model
    model_cfg = ModelConfig.model_validate(json.loads(os.environ.get("CITYWATCH_BENCH_MODEL", "{}")))
    model = load_model(model_cfg, os.cpu_count())
    stop = threading.Event()
    svc = InferenceService(model.backend, stop, max_batch=8)
    meter = Meter(n)
    sink = JsonlSink(os.devnull, validate=False)
    workers: list[StreamWorker] = []
    with RtspServer({"/cam": clip}, copies=n) as srv:
        for i in range(n):
            stream = StreamConfig.model_validate(
                {"id": f"cam{i}", "url": srv.url(f"/cam{i}"), "sample_interval_s": 1 / RATE}
            )
            pipe = StreamPipeline(stream, model.info, sink)

            def handle(frame: Frame, dets: Any, pipe: StreamPipeline = pipe, i: int = i) -> None:
                pipe.process(frame.ts, frame.image, dets)
                meter.record(i, time.time() - frame.ts)

            svc.register(stream.id, handle)
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
        time.sleep(2 * GOP_S + 2)  # past the start-up burst
        cpu0, srv_cpu0, dropped0 = _common.cpu_s(), _common.cpu_s(srv.pid), sum(svc.dropped.values())
        with meter.lock:
            meter.open_at = time.time()
        time.sleep(window)
        with meter.lock:
            meter.open_at = None
        cpu, srv_cpu = _common.cpu_s() - cpu0, _common.cpu_s(srv.pid) - srv_cpu0
        dropped = sum(svc.dropped.values()) - dropped0
        modes = sorted({str(w.state.decode_mode) for w in workers})
        rss = _common.rss_mb()
        stop.set()
        for w in workers:
            w.stop()
        for w in workers:
            w.join(5)
        svc.wake()
        svc.join(10)
    extra = {"decode_modes": modes, "backend": model.kind, "model": model.path.name}
    return _summary(n, window, meter, live, cpu, srv_cpu, rss, dropped) | extra


def probe_naive(n: int, clip: Path, window: float, max_wait: float) -> dict[str, Any]:
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    import cv2

    from detector.inference.ultralytics_backend import prepare_ultralytics_offline
    from tests.rtsp_server import RtspServer

    prepare_ultralytics_offline()
    from ultralytics.models import YOLO

    m = _common.default_model(os.environ.get("CITYWATCH_BENCH_PT"))  # the default model's .pt (or another)
    model = YOLO(str(m.pt), task="detect")
    lock = threading.Lock()
    meter = Meter(n)
    stop = threading.Event()
    live = [False] * n
    every = int(FPS / RATE)

    def read(i: int, url: str) -> None:
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)  # OpenCV opens one capture at a time (a global lock)
        origin = float("inf")  # when frame 0 would have been read by a reader that is never behind
        k = 0
        while not stop.is_set():
            ok, frame = cap.read()
            if not ok:
                break
            live[i] = True
            origin = min(origin, time.time() - k / FPS)  # the reader's best moment: in favour of the baseline
            if k % every == 0:
                with lock:
                    model.predict(frame, imgsz=m.imgsz, conf=0.25, verbose=False)
                meter.record(i, time.time() - (origin + k / FPS))
            k += 1
        cap.release()

    with RtspServer({"/cam": clip}, copies=n) as srv:
        threads = [
            threading.Thread(target=read, args=(i, srv.url(f"/cam{i}")), daemon=True) for i in range(n)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline and not all(live):
            time.sleep(0.5)
        time.sleep(2 * GOP_S + 2)
        cpu0, srv_cpu0 = _common.cpu_s(), _common.cpu_s(srv.pid)
        with meter.lock:
            meter.open_at = time.time()
        time.sleep(window)
        with meter.lock:
            meter.open_at = None
        cpu, srv_cpu = _common.cpu_s() - cpu0, _common.cpu_s(srv.pid) - srv_cpu0
        rss = _common.rss_mb()
        stop.set()
        for t in threads:
            t.join(10)
    return _summary(n, window, meter, sum(live), cpu, srv_cpu, rss, 0)


def _summary(
    n: int, window: float, meter: Meter, live: int, cpu: float, srv_cpu: float, rss: float, dropped: int
) -> dict[str, Any]:
    rates = [s / window for s in meter.samples]
    lags = np.array(meter.lags or [float("inf")])
    return {
        "streams": n,
        "live": live,
        "min_rate": round(min(rates), 3),
        "mean_rate": round(float(np.mean(rates)), 3),
        "max_lag_s": round(float(lags.max()), 2),
        "p95_lag_s": round(float(np.percentile(lags, 95)), 2),
        "dropped": dropped,
        "cores_detector": round(cpu / window, 2),
        "cores_server": round(srv_cpu / window, 2),
        "rss_mb": round(rss, 1),
    }


def sustained(r: dict[str, Any], window: float, max_lag: float) -> bool:
    need = (RATE * window - 1) / window
    return bool(
        r["live"] == r["streams"] and r["min_rate"] >= need and r["max_lag_s"] <= max_lag and not r["dropped"]
    )


# ------------------------------------------------------------------------------------------ search
def run_probe(mode: str, n: int, clip: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--probe",
        str(n),
        "--mode",
        mode,
        "--clip",
        str(clip),
        "--window",
        str(a.window),
    ]
    _common.log(f"probe {mode} x{n} ...")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.window + 600)
    if out.returncode != 0:
        _common.log(out.stderr[-3000:])
        return {
            "mode": mode,
            "streams": n,
            "error": out.stderr.strip().splitlines()[-1:] or ["?"],
            "ok": False,
        }
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    r["ok"] = sustained(r, a.window, a.max_lag)
    r["mode"] = mode
    _common.log(f"  {r}")
    return r


def search(
    mode: str, start: int, step: float, clip: Path, a: argparse.Namespace, probes: list[dict[str, Any]]
) -> int:
    """The largest sustained count of ``mode``."""
    return search_together({mode: start}, step, clip, a, probes)[mode]


def search_together(
    starts: dict[str, int], step: float, clip: Path, a: argparse.Namespace, probes: list[dict[str, Any]]
) -> dict[str, int]:
    """Several modes searched with their probes taking turns (``_search.take_turns``)."""

    def probe(mode: str, n: int) -> bool:
        r = run_probe(mode, n, clip, a)
        probes.append(r)
        return bool(r["ok"])

    return _search.take_turns(starts, step, a.max_probes, probe)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="main,sub,naive")
    p.add_argument("--window", type=float, default=30.0, help="seconds measured per count")
    p.add_argument("--max-lag", type=float, default=2.0)
    p.add_argument("--clip-s", type=float, default=150.0, help="length of the served clips")
    p.add_argument("--start-main", type=int, default=32)
    p.add_argument("--start-sub", type=int, default=100)
    p.add_argument("--start-naive", type=int, default=6)
    p.add_argument("--max-probes", type=int, default=4)
    p.add_argument(
        "--second-model",
        action="store_true",
        help="compare the shipped one- and two-model configurations (modes one-model,two-models)",
    )
    p.add_argument("--start-models", type=int, default=40, help="first count of --second-model")
    p.add_argument("--step-models", type=float, default=1.15, help="count growth factor of --second-model")
    p.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="a short run: one small probe per mode")
    a = p.parse_args(argv)
    if a.quick:
        a.window, a.clip_s, a.max_probes = 5.0, 20.0, 1
        a.start_main = a.start_sub = 2
        a.start_naive = a.start_models = 1
    if a.probe is not None:  # child: one count
        if a.mode in capacity_models.MODES:
            args = (a.mode, a.probe, a.clip, a.window, 90.0, Meter(a.probe), _summary, GOP_S)
            _common.emit(capacity_models.probe_models(*args))
            return 0
        fn = probe_naive if a.mode == "naive" else probe_detector
        _common.emit(fn(a.probe, a.clip, a.window, 90.0))
        return 0
    from tests.rtsp_server import unavailable_reason

    reason = unavailable_reason()
    if reason:
        _data.needs("bench/capacity.py", f"it needs the GStreamer RTSP server (make test-services): {reason}")
    modes = list(capacity_models.MODES) if a.second_model else a.modes.split(",")
    main_clip = make_clip("main", a.clip_s)
    sub_clip = make_clip("sub", a.clip_s) if "sub" in modes else None
    probes: list[dict[str, Any]] = []
    best = search("main", a.start_main, 1.25, main_clip, a, probes) if "main" in modes else 0
    naive = search("naive", a.start_naive, 1.34, main_clip, a, probes) if "naive" in modes else 0
    subs = search("sub", a.start_sub, 1.25, sub_clip, a, probes) if sub_clip is not None else 0
    second = None
    if a.second_model:
        capacity_models.tune_first(_common.log)
        starts = {"one-model": a.start_models, "two-models": a.start_models}
        found = search_together(starts, a.step_models, main_clip, a, probes)
        second = capacity_models.second_model_report(found["one-model"], found["two-models"], probes)
    small = run_probe("main", 4, main_clip, a) if best > 4 else None
    at_best = next((r for r in probes if r["mode"] == "main" and r["streams"] == best), None)
    per_stream = None
    if small is not None and at_best is not None:
        per_stream = round((at_best["rss_mb"] - small["rss_mb"]) / (best - 4), 1)
        probes.append(small)
    _common.emit(
        {
            "streams": best,
            "naive_streams": naive,
            "ratio": round(best / naive, 2) if naive else None,
            "substreams": subs,
            "rss_mb_per_stream": per_stream,
            "max_lag_s": at_best["max_lag_s"] if at_best else None,
            "window_s": a.window,
            "sample_rate": RATE,
            "main": {"size": "1920x1080", "fps": FPS, "kbps": CLIPS["main"]["kbps"], "gop_s": GOP_S},
            "sub": {"size": "640x360", "fps": FPS, "kbps": CLIPS["sub"]["kbps"], "gop_s": GOP_S},
            "backend": at_best.get("backend") if at_best else None,
            "model": at_best.get("model") if at_best else None,
            "probes": probes,
        }
        | ({"second_model": second} if second is not None else {})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
