"""The detector's metrics and health checks (detector/commands/metrics*.py) on made-up figures: what each
metric family says, when ``/readyz`` refuses and why, the HTTP server's paths, and the counters the
collector reads (figures of a detector's parts, the outbox's depth, each stream's inference seconds)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.commands.metrics import (
    DetectorCollector,
    Figures,
    ModelFigures,
    StreamFigures,
    figures_of,
    not_ready,
    start_metrics,
)
from detector.commands.metrics_server import MetricsServer, MetricsServerError
from detector.config.metrics import MetricsConfig
from detector.contracts.detections import Detections
from detector.delivery.outbox import Outbox
from detector.inference import InferenceBackend
from detector.inference.service import InferenceService
from detector.sources import Frame
from detector.sources.worker import StreamState

READY = Figures(
    streams=(StreamFigures("cam-1", "live"),),
    models=(ModelFigures("default"),),
    models_loaded=True,
    inference_running=True,
    broker_connected=True,
)


def with_(fig: Figures, **changes: Any) -> Figures:
    return Figures(**{**fig.__dict__, **changes})


@pytest.mark.parametrize(
    ("fig", "reasons"),
    [
        (READY, []),
        (
            with_(READY, streams=(StreamFigures("cam-1", "finished"),)),
            [],
        ),  # a file that ended is not a failure
        (with_(READY, streams=(StreamFigures("a", "failed"), StreamFigures("b", "stalled"))), []),
        (with_(READY, broker_connected=False), ["MQTT broker is not connected"]),
        (with_(READY, models_loaded=False), ["no model is loaded"]),
        (with_(READY, inference_running=False), ["inference service is not running"]),
        (with_(READY, streams=()), ["no stream runs"]),
        (
            with_(
                READY, streams=(StreamFigures("a", "failed", "unauthorized"), StreamFigures("b", "failed"))
            ),
            ["every stream failed: a (unauthorized), b (failed)"],
        ),
        (Figures(), ["MQTT broker", "no model is loaded", "no stream runs"]),  # nothing started yet
    ],
)
def test_readiness(fig: Figures, reasons: list[str]) -> None:
    got = not_ready(fig)
    assert len(got) == len(reasons), got
    for text, want in zip(got, reasons, strict=True):
        assert want in text


def scrape(fig: Figures) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DetectorCollector(lambda: fig))
    return registry


BUSY = Figures(
    streams=(
        StreamFigures(
            "cam-1",
            "live",
            None,
            samples=40,
            dropped=2,
            reconnects=1,
            events=3,
            lag_s=0.25,
            decoded=400,
            decode_s=1.5,
            inferred=38,
            infer_s=3.8,
        ),
        StreamFigures("cam-2", "failed", "not_found"),
    ),
    models=(ModelFigures("default", batches=10, frames=38, busy_s=3.8, errors=1),),
    models_loaded=True,
    inference_running=True,
    broker_connected=True,
    outbox_depth=4,
    outbox_oldest_age_s=12.5,
    outbox_max_events=1000,
    published=7,
    acked=3,
    retried=2,
)


@pytest.mark.parametrize(
    ("fig", "name", "labels", "value"),
    [
        (BUSY, "citywatch_stream_samples_total", {"stream": "cam-1"}, 40),
        (BUSY, "citywatch_stream_dropped_samples_total", {"stream": "cam-1"}, 2),
        (BUSY, "citywatch_stream_reconnects_total", {"stream": "cam-1"}, 1),
        (BUSY, "citywatch_stream_events_total", {"stream": "cam-1"}, 3),
        (BUSY, "citywatch_stream_lag_seconds", {"stream": "cam-1"}, 0.25),
        (BUSY, "citywatch_stream_lag_seconds", {"stream": "cam-2"}, None),  # no sample yet: no lag
        (BUSY, "citywatch_stream_decode_seconds_count", {"stream": "cam-1"}, 400),
        (BUSY, "citywatch_stream_decode_seconds_sum", {"stream": "cam-1"}, 1.5),
        (BUSY, "citywatch_stream_inference_seconds_count", {"stream": "cam-1"}, 38),
        (BUSY, "citywatch_stream_inference_seconds_sum", {"stream": "cam-1"}, 3.8),
        (BUSY, "citywatch_stream_state", {"stream": "cam-1", "state": "live"}, 1),
        (BUSY, "citywatch_stream_state", {"stream": "cam-1", "state": "failed"}, 0),
        (BUSY, "citywatch_stream_state", {"stream": "cam-2", "state": "failed"}, 1),
        (BUSY, "citywatch_stream_state", {"stream": "cam-2", "state": "stopped"}, 0),
        (BUSY, "citywatch_model_batches_total", {"model": "default"}, 10),
        (BUSY, "citywatch_model_errors_total", {"model": "default"}, 1),
        (BUSY, "citywatch_model_batch_size_count", {"model": "default"}, 10),
        (BUSY, "citywatch_model_batch_size_sum", {"model": "default"}, 38),
        (BUSY, "citywatch_model_batch_seconds_sum", {"model": "default"}, 3.8),
        (BUSY, "citywatch_outbox_depth", {}, 4),
        (BUSY, "citywatch_outbox_oldest_age_seconds", {}, 12.5),
        (BUSY, "citywatch_outbox_max_events", {}, 1000),
        (BUSY, "citywatch_events_published_total", {}, 7),
        (BUSY, "citywatch_events_acked_total", {}, 3),
        (BUSY, "citywatch_events_retried_total", {}, 2),
        (BUSY, "citywatch_mqtt_connected", {}, 1),
        (BUSY, "citywatch_models_loaded", {}, 1),
        (Figures(), "citywatch_outbox_oldest_age_seconds", {}, 0),  # empty outbox
        (Figures(), "citywatch_mqtt_connected", {}, 0),
        (Figures(), "citywatch_models_loaded", {}, 0),
        (Figures(), "citywatch_stream_samples_total", {"stream": "cam-1"}, None),
    ],
)
def test_collector(fig: Figures, name: str, labels: dict[str, str], value: float | None) -> None:
    assert scrape(fig).get_sample_value(name, labels) == value


def test_every_state_is_a_label_of_each_stream() -> None:
    registry = scrape(BUSY)
    states = {
        s.labels["state"]
        for m in registry.collect()
        if m.name == "citywatch_stream_state"
        for s in m.samples
        if s.labels["stream"] == "cam-1"
    }
    assert states == {"connecting", "live", "stalled", "failed", "finished", "stopped"}


@pytest.fixture
def server() -> Iterator[tuple[MetricsServer, dict[str, Any]]]:
    """A server on a free port whose figures and readiness the test changes."""
    holder: dict[str, Any] = {"fig": READY, "ready": lambda: not_ready(holder["fig"])}
    srv = MetricsServer("127.0.0.1", 0).serve(
        DetectorCollector(lambda: holder["fig"]), lambda: holder["ready"]()
    )
    yield srv, holder
    srv.stop()


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def boom() -> list[str]:
    raise RuntimeError("kaputt")


@pytest.mark.parametrize(
    ("path", "method", "changes", "status", "body"),
    [
        ("/healthz", "GET", {}, 200, {"status": "alive"}),
        ("/healthz", "GET", {"fig": Figures()}, 200, {"status": "alive"}),  # alive even when not ready
        ("/readyz", "GET", {}, 200, {"ready": True, "reasons": []}),
        (
            "/readyz",
            "GET",
            {"fig": with_(READY, broker_connected=False)},
            503,
            {"ready": False, "reasons": ["the MQTT broker is not connected (events wait in the outbox)"]},
        ),
        (
            "/readyz",
            "GET",
            {"ready": boom},
            503,
            {"ready": False, "reasons": ["the readiness check failed: RuntimeError: kaputt"]},
        ),
        ("/nothing", "GET", {}, 404, None),
        ("/metrics", "POST", {}, 405, None),
    ],
)
def test_server_paths(
    server: tuple[MetricsServer, dict[str, Any]],
    path: str,
    method: str,
    changes: dict[str, Any],
    status: int,
    body: dict[str, Any] | None,
) -> None:
    srv, holder = server
    holder.update(changes)
    got, ctype, data = get(srv.url + path, method)
    assert got == status
    assert ctype == "application/json"
    if body is not None:
        assert json.loads(data) == body


def test_server_metrics_in_the_text_format(server: tuple[MetricsServer, dict[str, Any]]) -> None:
    srv, holder = server
    holder["fig"] = BUSY
    status, ctype, data = get(srv.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert 'citywatch_stream_samples_total{stream="cam-1"} 40.0' in data.decode()
    assert "python_gc" not in data.decode()  # its own registry, not the process-global one


def test_a_port_in_use_is_an_error_that_says_what_to_do(server: tuple[MetricsServer, dict[str, Any]]) -> None:
    srv, _ = server
    with pytest.raises(
        MetricsServerError, match=r"127\.0\.0\.1:\d+: .*in use; set metrics\.port .*\(0 turns"
    ):
        MetricsServer("127.0.0.1", srv.port)


@pytest.mark.parametrize(("port", "logged"), [("off", ""), ("taken", "metrics and health checks are off")])
def test_start_metrics_off_or_on_a_taken_port_lets_the_detector_run(
    server: tuple[MetricsServer, dict[str, Any]], caplog: pytest.LogCaptureFixture, port: str, logged: str
) -> None:
    cfg = MetricsConfig(port=0 if port == "off" else server[0].port)
    with caplog.at_level(logging.ERROR):
        assert start_metrics(SimpleNamespace(cfg=SimpleNamespace(metrics=cfg))) is None  # type: ignore[arg-type]
    assert logged in caplog.text and (bool(logged) == bool(caplog.records))


class Backend(InferenceBackend):
    name = "onnx"

    def __init__(self, delay_s: float) -> None:
        self.class_names = ["vehicle"]
        self.imgsz, self.conf, self.iou = 32, 0.25, 0.5
        self.delay_s = delay_s

    def infer(self, images: Sequence[np.ndarray]) -> list[Detections]:
        time.sleep(self.delay_s)
        return [Detections.empty() for _ in images]


def wait_for(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(("streams", "frames"), [(["a"], 3), (["a", "b", "c"], 4)])
def test_each_streams_inference_seconds_add_up_to_the_models(streams: list[str], frames: int) -> None:
    stop = threading.Event()
    svc = InferenceService(Backend(0.01), stop, max_batch=8, per_stream=frames, gather_s=0.02)
    for s in streams:
        svc.register(s, lambda _f, _d: None)
    svc.start()
    try:
        for i in range(frames):
            for s in streams:
                svc.submit(Frame(s, float(i), float(i), np.zeros((8, 8, 3), np.uint8), i), block=True)
        wait_for(lambda: all(c.done == frames for c in svc.counters_now()[0].values()))
    finally:
        stop.set()
        svc.join(5)
    per_stream, per_model = svc.counters_now()
    model = per_model["default"]
    assert model.frames == frames * len(streams)
    assert sum(c.infer_s for c in per_stream.values()) == pytest.approx(model.busy_s)
    assert all(c.infer_s > 0 for c in per_stream.values())


@pytest.mark.parametrize(
    ("stored", "acked", "depth"),
    [
        ([], [], (0, None)),
        ([100.0, 105.0, 111.0], [], (3, 100.0)),
        ([100.0, 105.0, 111.0], [0], (2, 105.0)),
        ([100.0, 105.0], [0, 1], (0, None)),
    ],
)
def test_outbox_depth_and_oldest(
    tmp_path: Path, stored: list[float], acked: list[int], depth: tuple[int, float | None]
) -> None:
    times = iter(stored)
    with Outbox(tmp_path / "o.sqlite3", clock=lambda: next(times)) as box:
        ids = [box.put("t", b"{}") for _ in stored]
        box.mark_sent_many(ids[i] for i in acked)
        assert box.depth() == depth


def worker(sid: str, **state: Any) -> SimpleNamespace:
    return SimpleNamespace(stream=SimpleNamespace(id=sid), state=StreamState(**state))


def test_figures_of_a_detectors_parts(tmp_path: Path) -> None:
    stop = threading.Event()
    svc = InferenceService(Backend(0.0), stop)
    svc.register("cam-1", lambda _f, _d: None)
    svc.counters["cam-1"].dropped = 2
    svc.counters["cam-1"].last_lag_s = 0.5
    outbox = Outbox(tmp_path / "o.sqlite3", max_events=50, clock=lambda: 1000.0)
    outbox.put("t", b"{}")
    det = SimpleNamespace(
        service=svc,
        publisher=SimpleNamespace(published=5, acked=4, retried=1),
        outbox=outbox,
        comm=SimpleNamespace(is_connected=lambda: True),
        models=SimpleNamespace(models={"default": object()}),
        workers=[worker("cam-1", state="live", samples=9, reconnects=2, decoded=90, decode_s=0.9)],
        pipelines={"cam-1": SimpleNamespace(events_sent=3)},
    )
    try:
        fig = figures_of(det, clock=lambda: 1010.0)  # type: ignore[arg-type]
    finally:
        outbox.close()
    assert fig.streams == (
        StreamFigures(
            "cam-1", "live", None, samples=9, dropped=2, reconnects=2, events=3, lag_s=0.5,
            decoded=90, decode_s=0.9, inferred=0, infer_s=0.0,
        ),
    )  # fmt: skip
    assert fig.models == (ModelFigures("default"),)
    assert (fig.outbox_depth, fig.outbox_oldest_age_s, fig.outbox_max_events) == (1, 10.0, 50)
    assert (fig.published, fig.acked, fig.retried) == (5, 4, 1)
    assert fig.broker_connected and fig.models_loaded and not fig.inference_running  # never started
    assert not_ready(fig) == ["the inference service is not running"]


def test_figures_of_a_detector_not_started() -> None:
    det = SimpleNamespace(
        service=None, publisher=None, outbox=None, comm=None, models=None, workers=[], pipelines={}
    )
    assert figures_of(det) == Figures()  # type: ignore[arg-type]
