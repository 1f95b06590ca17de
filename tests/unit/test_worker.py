"""Stream workers: states and their order, reconnects with backoff, stall watchdog, masked credentials.

Sources are real: video files encoded here with PyAV and a local HTTP server that plays a live MPEG-TS
feed which drops, hangs, or sends garbage (the RTSP cases run against a real RTSP server in
tests/integration/test_rtsp_*.py).
"""

from __future__ import annotations

import functools
import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from detector.config import StreamConfig
from detector.contracts.events import validate_state
from detector.sources import Frame
from detector.sources.worker import StreamWorker

FPS, SECONDS, GOP = 10, 6, 20


def encode(path: Path, fmt: str | None = None) -> Path:
    out = av.open(str(path), "w", format=fmt)
    st = out.add_stream("libx264", rate=FPS)
    st.width, st.height, st.pix_fmt = 160, 96, "yuv420p"
    st.options = {
        "g": str(GOP),
        "keyint_min": str(GOP),
        "sc_threshold": "0",
        "bf": "0",
        "preset": "ultrafast",
    }
    for i in range(FPS * SECONDS):
        img = np.full((96, 160, 3), 50, np.uint8)
        img[30:60, (i * 2) % 120 : (i * 2) % 120 + 30] = (0, 0, 255)
        f = av.VideoFrame.from_ndarray(img, format="bgr24")
        f.pts = i
        for pk in st.encode(f):
            out.mux(pk)
    for pk in st.encode():
        out.mux(pk)
    out.close()
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    junk = d / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 512)
    return {"mp4": encode(d / "clip.mp4"), "ts": encode(d / "clip.ts", "mpegts"), "junk": junk}


class Recorder:
    """Collects frames and published states; ``wait`` polls for a condition."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.blocking: list[bool] = []
        self.states: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def on_frame(self, frame: Frame, block: bool) -> None:
        with self.lock:
            self.frames.append(frame)
            self.blocking.append(block)

    def on_state(self, _sid: str, state: dict[str, Any]) -> None:
        validate_state(state)  # every published state keeps the stream-state.v1 contract
        with self.lock:
            self.states.append(state)

    def names(self) -> list[str]:
        with self.lock:
            names = [s["state"] for s in self.states]
        return [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]

    def wait(self, pred: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; states so far: {self.names()}")
            time.sleep(0.02)


def make_worker(url: str, rec: Recorder, tmp: Path, **ingest: Any) -> StreamWorker:
    stream = StreamConfig.model_validate(
        {"id": "cam-t", "url": url, "sample_interval_s": 1.0, "file_speed": 0, "ingest": ingest}
    )
    return StreamWorker(stream, tmp, rec.on_frame, rec.on_state, threading.Event(), state_every_s=0.2)


@pytest.fixture
def run_worker() -> Iterator[Callable[[StreamWorker], StreamWorker]]:
    started: list[StreamWorker] = []

    def run(w: StreamWorker) -> StreamWorker:
        started.append(w)
        w.start()
        return w

    yield run
    for w in started:
        w.stop()
        w.join(10)
        assert not w.is_alive(), "a worker did not stop within 10 s"


# ------------------------------------------------------------------------------------------ files
def test_file_goes_live_then_finishes(clips: dict[str, Path], tmp_path: Path, run_worker: Any) -> None:
    rec = Recorder()
    w = run_worker(make_worker(str(clips["mp4"]), rec, tmp_path))
    w.join(20)
    assert rec.names() == ["connecting", "live", "finished"]
    assert [f.pts_s for f in rec.frames] == pytest.approx([0.0, 2.0, 4.0]) or len(rec.frames) == SECONDS
    assert all(rec.blocking), "file frames wait for inference instead of being dropped"
    live = next(s for s in rec.states if s["state"] == "live")
    assert (live["width"], live["height"], live["gop_s"]) == (160, 96, pytest.approx(2.0))
    assert live["decode_mode"] == "all" and live["input"] == "url"


def test_corrupt_file_fails_clearly_and_retries_slowly(
    clips: dict[str, Path], tmp_path: Path, run_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    with caplog.at_level(logging.INFO, logger="detector.sources.worker"):
        w = run_worker(
            make_worker(str(clips["junk"]), rec, tmp_path, failed_retry_s=0.3, reconnect_min_s=0.1)
        )
        rec.wait(lambda: w.state.reconnects >= 2)
    failed = next(s for s in rec.states if s["state"] == "failed")
    assert failed["reason"] == "invalid" and "junk.mp4" in failed["last_error"]
    assert "not readable as video" in failed["last_error"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
    assert len(warnings) == 1, "the same failure is logged once as a warning, not at every retry"
    assert "stream cam-t: failed (cannot open video file" in warnings[0].getMessage()
    assert "live" not in rec.names()


# ------------------------------------------------------------------------------------------ network
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_refused_stream_fails_and_never_shows_the_password(
    tmp_path: Path, run_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    url = f"rtsp://admin:Hunter2pw@127.0.0.1:{closed_port()}/Streaming/101"
    with caplog.at_level(logging.DEBUG):
        w = run_worker(make_worker(url, rec, tmp_path, reconnect_min_s=0.05, reconnect_max_s=0.1))
        rec.wait(lambda: w.state.reconnects >= 3)
        w.stop()
        w.join(5)
    assert rec.names()[:2] == ["connecting", "failed"] and rec.names()[-1] == "stopped"
    assert rec.states[1]["reason"] == "refused"
    assert rec.states[1]["url"] == url.replace("Hunter2pw", "***")
    shown = repr(rec.states) + caplog.text + repr(w) + str(w.snapshot())
    assert "Hunter2pw" not in shown


class LiveHandler(http.server.BaseHTTPRequestHandler):
    """/drop.ts: a live feed that plays the clip and closes; /hang.ts: sends the first half, then goes quiet;
    /garbage.ts: random bytes."""

    clip: bytes = b""
    hang_s: float = 30.0

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        try:
            if self.path == "/garbage.ts":  # a "camera" that streams noise until the client hangs up
                rng = np.random.default_rng(0)
                for _ in range(200):
                    self.wfile.write(rng.integers(0, 256, 65536, dtype=np.uint8).tobytes())
                    time.sleep(0.05)
            elif self.path == "/hang.ts":
                self.wfile.write(self.clip[: len(self.clip) // 2])
                self.wfile.flush()
                time.sleep(self.hang_s)
            else:  # in real time (roughly): a tenth of the clip every tenth of its duration
                step = len(self.clip) // 10 + 1
                for k in range(0, len(self.clip), step):
                    self.wfile.write(self.clip[k : k + step])
                    self.wfile.flush()
                    time.sleep(SECONDS / 10)
        except OSError:
            pass  # the client went away
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base(clips: dict[str, Path]) -> Iterator[str]:
    handler = type("H", (LiveHandler,), {"clip": clips["ts"].read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_live_stream_that_drops_goes_stalled_connecting_live(
    http_base: str, tmp_path: Path, run_worker: Any
) -> None:
    rec = Recorder()
    w = run_worker(make_worker(f"{http_base}/drop.ts", rec, tmp_path, reconnect_min_s=0.1))
    rec.wait(lambda: rec.names().count("live") >= 2)
    names = rec.names()
    i = names.index("stalled")
    assert names[: i + 3] == ["connecting", "live", "stalled", "connecting", "live"][: i + 3]
    stalled = next(s for s in rec.states if s["state"] == "stalled")
    assert stalled["reason"] in ("ended", "lost") and stalled["last_error"]
    assert w.state.reconnects >= 1
    ts = [f.ts for f in rec.frames]
    assert ts == sorted(ts) and len(set(ts)) == len(ts), "timestamps never go back across a reconnect"


def test_stall_watchdog_fires_when_data_stops(http_base: str, tmp_path: Path, run_worker: Any) -> None:
    rec = Recorder()
    w = run_worker(make_worker(f"{http_base}/hang.ts", rec, tmp_path, stall_timeout_s=1.5))
    rec.wait(lambda: "stalled" in rec.names(), timeout=15)
    stalled = next(s for s in rec.states if s["state"] == "stalled")
    assert stalled["reason"] in ("timeout", "stalled"), stalled
    assert rec.frames, "the half that arrived was read"
    assert w.is_alive()


def test_garbage_bytes_fail_clearly(http_base: str, tmp_path: Path, run_worker: Any) -> None:
    rec = Recorder()
    w = run_worker(make_worker(f"{http_base}/garbage.ts", rec, tmp_path, failed_retry_s=5))
    rec.wait(lambda: w.state.state in ("failed", "stalled"))
    st = w.snapshot()
    assert st["reason"] in ("invalid", "unsupported", "corrupt", "stalled"), st
    assert st["last_error"] and "garbage.ts" in st["last_error"]
    assert not rec.frames


@pytest.mark.parametrize(
    ("ingest", "message"),
    [
        ({"reconnect_min_s": 10, "reconnect_max_s": 4}, "longer than reconnect_max_s"),
        ({"transport": "http"}, "transport"),
        ({"stall_timeout_s": 0}, "stall_timeout_s"),
    ],
)
def test_ingest_settings_are_checked(ingest: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamConfig.model_validate({"id": "c", "url": "rtsp://192.0.2.1/x", "ingest": ingest})
