"""The shared inference service: batching across streams, fairness, drops, blocking files, lag, errors.

The backend is a small real :class:`InferenceBackend` that records its batches (no model needed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from detector.contracts.detections import Detections
from detector.inference import InferenceBackend, InferenceError
from detector.inference.service import InferenceService, InferenceServiceError
from detector.sources import Frame


class RecordingBackend(InferenceBackend):
    name = "onnx"

    def __init__(self, delay_s: float = 0.0, fail_on: int | None = None) -> None:
        self.class_names = ["vehicle"]
        self.imgsz, self.conf, self.iou = 32, 0.25, 0.5
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()

    def infer(self, images: Sequence[np.ndarray]) -> list[Detections]:
        self.gate.wait(10)
        self.batches.append([f"{int(img[0, 0, 0])}" for img in images])
        time.sleep(self.delay_s)
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise InferenceError("the runtime failed")
        return [Detections.empty() for _ in images]


def frame(stream: str, i: int, ts: float | None = None) -> Frame:
    img = np.full((8, 8, 3), i % 256, np.uint8)
    return Frame(stream, float(i) if ts is None else ts, float(i), img, i)


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def collect(service: InferenceService, streams: list[str]) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {s: [] for s in streams}
    lock = threading.Lock()

    def handler_for(sid: str):  # type: ignore[no-untyped-def]
        def handle(f: Frame, _d: Detections) -> None:
            with lock:
                got[sid].append(f.index)

        return handle

    for s in streams:
        service.register(s, handler_for(s))
    return got


def wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_batches_frames_of_many_streams_and_keeps_each_streams_order(stop: threading.Event) -> None:
    backend = RecordingBackend()
    backend.gate.clear()  # hold the first batch so the queues fill up
    svc = InferenceService(backend, stop, max_batch=8, per_stream=4, gather_s=0.05)
    got = collect(svc, ["a", "b", "c"])
    svc.start()
    for i in range(4):
        for s in "abc":
            svc.submit(frame(s, i), block=True)
    backend.gate.set()
    wait_for(lambda: sum(map(len, got.values())) == 12)
    assert all(v == [0, 1, 2, 3] for v in got.values())
    assert max(len(b) for b in backend.batches) > 1, "frames of several streams share a batch"
    assert svc.stats()["frames"] == 12 and svc.dropped == {"a": 0, "b": 0, "c": 0}


class SourceBackend(RecordingBackend):
    """Records the (stream id, frame time) the service hands to ``infer_streams`` with each image."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[tuple[str, float]] = []

    def infer_streams(
        self, images: Sequence[np.ndarray], sources: Sequence[tuple[str, float]], wait: bool = True
    ) -> list[Detections]:
        assert len(images) == len(sources) and not wait  # live: optional work may go to the background
        self.sources += list(sources)
        return self.infer(images)


def test_the_backend_is_told_each_frames_stream_and_time(stop: threading.Event) -> None:
    """A backend with per-stream state (the zoomed pass's memory) gets each image's stream and frame time."""
    backend = SourceBackend()
    svc = InferenceService(backend, stop, max_batch=4, per_stream=4, gather_s=0.02)
    got = collect(svc, ["a", "b"])
    svc.start()
    for i in range(3):
        for s in "ab":
            svc.submit(frame(s, i, ts=100.0 + 2 * i), block=True)
    wait_for(lambda: sum(map(len, got.values())) == 6)
    assert sorted(backend.sources) == sorted((s, 100.0 + 2 * i) for i in range(3) for s in "ab")
    assert [t for s, t in backend.sources if s == "a"] == [100.0, 102.0, 104.0]  # in each stream's order


def test_live_stream_drops_its_oldest_frame_and_counts_it(stop: threading.Event) -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    svc = InferenceService(backend, stop, max_batch=1, per_stream=2, gather_s=0.0)
    got = collect(svc, ["live"])
    svc.start()
    svc.submit(frame("live", 0))
    wait_for(lambda: svc.pending() == 0)  # frame 0 is inside the (held) backend
    assert not svc.idle(), "a frame being inferred is not judged yet"
    for i in range(1, 6):
        svc.submit(frame("live", i))
    assert svc.dropped["live"] == 3 and svc.pending() == 2
    backend.gate.set()
    wait_for(lambda: len(got["live"]) == 3)
    assert got["live"] == [0, 4, 5]  # the newest frames survive; nothing is made up for 1..3
    wait_for(svc.idle)  # handed out: nothing queued, nothing in hand
    assert svc.stream_stats("live")["inference_dropped"] == 3


def test_file_stream_waits_instead_of_dropping(stop: threading.Event) -> None:
    svc = InferenceService(RecordingBackend(delay_s=0.01), stop, max_batch=1, per_stream=1, gather_s=0.0)
    got = collect(svc, ["file"])
    svc.start()
    for i in range(20):
        svc.submit(frame("file", i), block=True)
    wait_for(lambda: len(got["file"]) == 20)
    assert got["file"] == list(range(20)) and svc.dropped["file"] == 0


def test_round_robin_serves_every_stream_under_overload(stop: threading.Event) -> None:
    """Every stream offers a new frame each round, the model takes two a round: a fixed start would
    serve s0 and s1 forever; the rotating start serves all six within six rounds."""
    svc = InferenceService(RecordingBackend(), stop, max_batch=2, per_stream=1, gather_s=0.0)
    streams = [f"s{i}" for i in range(6)]
    collect(svc, streams)
    served: dict[str, int] = dict.fromkeys(streams, 0)
    for rnd in range(6):
        for k, s in enumerate(streams):
            svc.submit(frame(s, rnd * 10 + k))
        _model, jobs = svc._take()
        for job in jobs:
            served[job.frame.stream_id] += 1
    assert min(served.values()) >= 1, f"a stream was starved: {served}"
    assert sum(svc.dropped.values()) == 6 * 6 - 12 - svc.pending()


def test_handler_error_and_inference_error_do_not_stop_the_service(
    stop: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RecordingBackend(fail_on=1)
    svc = InferenceService(backend, stop, max_batch=1, per_stream=8, gather_s=0.0)
    ok: list[int] = []

    def bad(_f: Frame, _d: Detections) -> None:
        raise RuntimeError("bug in one stream")

    svc.register("bad", bad)
    svc.register("good", lambda f, _d: ok.append(f.index))
    svc.start()
    svc.submit(frame("good", 0), block=True)  # the first batch fails in the runtime
    wait_for(lambda: svc.errors == 1)
    svc.submit(frame("bad", 1), block=True)
    svc.submit(frame("good", 2), block=True)
    # the two streams' queues are served in turn, so "good" 2 may be handled before "bad" 1
    wait_for(lambda: ok == [2] and "stream bad: processing a frame failed" in caplog.text)
    assert "inference failed" in caplog.text
    assert svc.is_alive()


def test_lag_is_measured_from_the_frame_timestamp(stop: threading.Event) -> None:
    now = [1000.0]
    svc = InferenceService(RecordingBackend(), stop, max_batch=1, gather_s=0.0, clock=lambda: now[0])
    got = collect(svc, ["cam"])
    svc.start()
    svc.submit(frame("cam", 1, ts=998.5))
    wait_for(lambda: got["cam"] == [1])
    assert svc.stream_stats("cam")["lag_s"] == pytest.approx(1.5)
    assert svc.stats()["max_lag_s"] == pytest.approx(1.5)
    svc.reset_lag()
    assert svc.stats()["max_lag_s"] == 0.0


def test_unknown_stream_and_bad_settings(stop: threading.Event) -> None:
    svc = InferenceService(RecordingBackend(), stop)
    with pytest.raises(InferenceServiceError, match="not registered"):
        svc.submit(frame("nobody", 0))
    with pytest.raises(ValueError, match="bad batching"):
        InferenceService(RecordingBackend(), stop, max_batch=0)


def test_stop_drains_what_is_queued(stop: threading.Event) -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    svc = InferenceService(backend, stop, max_batch=2, per_stream=4, gather_s=0.0)
    got = collect(svc, ["a"])
    svc.start()
    for i in range(4):
        svc.submit(frame("a", i))
    stop.set()
    backend.gate.set()
    svc.wake()
    svc.join(5)
    assert not svc.is_alive() and got["a"] == [0, 1, 2, 3]


# ---------------------------------------------------------------------- several models


def merge_names(results: Mapping[str, Detections]) -> Detections:
    """Records which models answered: one detection per model, named after it."""
    names = sorted(results)
    n = len(names)
    return Detections.from_arrays(np.zeros((n, 4)), np.ones(n), list(range(n)), names)


def two_models(
    stop: threading.Event, *, per_stream: int = 2, max_batch: int = 8, gather_s: float = 0.05
) -> tuple[InferenceService, RecordingBackend, RecordingBackend]:
    a, b = RecordingBackend(), RecordingBackend()
    svc = InferenceService(
        {"a": a, "b": b}, stop, max_batch={"a": max_batch, "b": max_batch}, per_stream=per_stream,
        gather_s=gather_s,
    )  # fmt: skip
    return svc, a, b


def test_a_frame_two_models_need_goes_to_each_once_and_is_handled_once_merged(stop: threading.Event) -> None:
    svc, a, b = two_models(stop, per_stream=4)
    a.gate.clear()
    got: dict[str, list[tuple[int, list[str]]]] = {"both": [], "only_a": []}

    def handler(sid: str):  # type: ignore[no-untyped-def]
        return lambda f, d: got[sid].append((f.index, list(d.class_name)))

    svc.register("both", handler("both"), ["a", "b"], merge_names)
    svc.register("only_a", handler("only_a"), ["a"])
    svc.start()
    for i in range(3):
        svc.submit(frame("both", i), block=True)
        svc.submit(frame("only_a", 10 + i), block=True)
    a.gate.set()
    wait_for(lambda: len(got["both"]) == 3 and len(got["only_a"]) == 3)
    assert got["both"] == [(i, ["a", "b"]) for i in range(3)]  # in frame order, after both models
    assert [i for i, _ in got["only_a"]] == [10, 11, 12]
    seen_a = sorted(int(x) for batch in a.batches for x in batch)
    seen_b = sorted(int(x) for batch in b.batches for x in batch)
    assert seen_a == [0, 1, 2, 10, 11, 12] and seen_b == [0, 1, 2]  # each model once per frame it needs
    assert max(len(batch) for batch in a.batches) > 1, "model a batches frames of both streams"
    stats = svc.stats()
    assert stats["models"]["a"]["frames"] == 6 and stats["models"]["b"]["frames"] == 3
    assert svc.counters["both"].done == 3 and svc.dropped == {"both": 0, "only_a": 0}


def test_a_frame_one_model_has_taken_is_dropped_once_and_never_reaches_the_other(
    stop: threading.Event,
) -> None:
    svc, a, b = two_models(stop, per_stream=2, max_batch=1, gather_s=0.0)
    a.gate.clear()  # model a hangs on frame 0; frame 0 still waits for model b
    got: list[int] = []
    svc.register("live", lambda f, _d: got.append(f.index), ["a", "b"], merge_names)
    svc.start()
    svc.submit(frame("live", 0))
    wait_for(lambda: svc.pending() == 1)  # frame 0: inside model a, queued for model b
    for i in range(1, 4):
        svc.submit(frame("live", i))
    assert svc.dropped["live"] == 2  # frames 0 and 1, once each, although model a has frame 0
    a.gate.set()
    wait_for(lambda: len(got) == 2)
    assert got == [2, 3]
    assert [x for batch in b.batches for x in batch] == ["2", "3"]  # b never ran the dropped frames
    assert [x for batch in a.batches for x in batch] == ["0", "2", "3"]
    assert svc.counters["live"].submitted == 4 and svc.counters["live"].done == 2


def test_a_failing_model_loses_the_frame_for_every_model(stop: threading.Event) -> None:
    a, b = RecordingBackend(), RecordingBackend(fail_on=1)
    svc = InferenceService({"a": a, "b": b}, stop, max_batch=1, per_stream=8, gather_s=0.0)
    got: list[int] = []
    svc.register("cam", lambda f, _d: got.append(f.index), ["a", "b"], merge_names)
    svc.start()
    svc.submit(frame("cam", 0), block=True)
    wait_for(lambda: svc.errors == 1)
    svc.submit(frame("cam", 1), block=True)
    wait_for(lambda: got == [1])
    assert svc.stats()["models"]["b"]["errors"] == 1 and svc.is_alive()


@pytest.mark.parametrize(
    ("models", "merge", "message"),
    [
        (["c"], None, "unknown model"),
        (["a", "b"], None, "no merge"),
    ],
)
def test_register_checks_the_models(
    stop: threading.Event, models: list[str], merge: Any, message: str
) -> None:
    svc, _, _ = two_models(stop)
    with pytest.raises(InferenceServiceError, match=message):
        svc.register("cam", lambda f, d: None, models, merge)


def test_models_and_batch_sizes_must_match(stop: threading.Event) -> None:
    with pytest.raises(ValueError, match="bad batching"):
        InferenceService({"a": RecordingBackend()}, stop, max_batch={"b": 8})
