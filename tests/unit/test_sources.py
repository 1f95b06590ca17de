"""Video sources: sampling by frame timestamp, decode modes, wall-clock anchoring, broken inputs, errors.

Test videos are encoded here with PyAV: 320x180, 10 fps, 10 s, a key frame every 2 s, a red square moving
3 px a frame, so every decoded frame can be compared with what was encoded at its index.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import math
import os
import re
import socket
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from detector.sources import FileSource, Frame, SourceOpenError, SourceReadError, VideoSource, mask_url
from detector.sources.base import GopEstimator, SampleClock, choose_decode_mode, parse_creation_time

W, H, FPS, SECONDS, GOP = 320, 180, 10, 10, 20
CREATED = "2026-01-01T08:00:00.000000Z"
CREATED_EPOCH = 1767254400.0
X264: dict[str, object] = {
    "g": str(GOP),
    "keyint_min": str(GOP),
    "sc_threshold": "0",
    "bf": "0",
    "preset": "ultrafast",
}


def render(i: int) -> np.ndarray:
    img = np.full((H, W, 3), 60, np.uint8)
    x = (i * 3) % (W - 40)
    img[60:100, x : x + 40] = (0, 0, 255)
    return img


def make_video(
    path: Path, *, fmt: str | None = None, created: str | None = CREATED, skip: range = range(0)
) -> Path:
    out = av.open(str(path), "w", format=fmt)
    if created:
        out.metadata["creation_time"] = created
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    stream.options = X264
    for i in range(FPS * SECONDS):
        if i in skip:
            continue
        frame = av.VideoFrame.from_ndarray(render(i), format="bgr24")
        frame.pts = i
        for pk in stream.encode(frame):
            out.mux(pk)
    for pk in stream.encode():
        out.mux(pk)
    out.close()
    return path


def assert_genuine(frames: list[Frame]) -> None:
    """Every frame is the one encoded at its index: no black, grey or smeared stand-ins."""
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        diff = np.abs(f.image.astype(np.int16) - render(f.index).astype(np.int16)).mean()
        assert diff < 10, f"frame at {f.pts_s:.1f} s differs from the encoded one by {diff:.1f}"
    pts = [f.pts_s for f in frames]
    assert pts == sorted(set(pts)), "timestamps must increase"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4": make_video(d / "clip.mp4"),
        "ts": make_video(d / "clip.ts", fmt="mpegts", created=None),
        "gap": make_video(d / "gap.mp4", skip=range(30, 60)),
    }


# ------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize(
    ("interval", "mode", "expected_pts"),
    [
        (0.5, "all", [i * 0.5 for i in range(20)]),
        (1.0, "all", [float(i) for i in range(10)]),
        (2.0, "keyframes", [0.0, 2.0, 4.0, 6.0, 8.0]),
        (5.0, "keyframes", [0.0, 6.0]),  # due at 0, 5, 10: the first key frame at or after each
    ],
)
@pytest.mark.parametrize("kind", ["mp4", "ts"])
def test_samples_follow_interval_and_mode(
    videos: dict[str, Path], kind: str, interval: float, mode: str, expected_pts: list[float]
) -> None:
    src = VideoSource(videos[kind], "cam-1", start_time=1000.0)
    frames = list(src.iter_samples(interval))
    assert src.decode_mode == mode
    assert src.gop_s == pytest.approx(2.0)
    assert [f.pts_s for f in frames] == pytest.approx(expected_pts, abs=1e-6)
    assert [f.ts for f in frames] == pytest.approx([1000.0 + p for p in expected_pts])
    assert [f.index for f in frames] == [round(p * FPS) for p in expected_pts]
    assert {f.stream_id for f in frames} == {"cam-1"}
    # key-frame mode decodes only the due key frames; "all" decodes all 100 and converts only the samples
    assert src.stats.decoded == (len(expected_pts) if mode == "keyframes" else 100)
    assert_genuine(frames)


@pytest.mark.parametrize(("kind", "anchor"), [("mp4", CREATED_EPOCH), ("ts", 1_800_000_000.0)])
def test_ts_anchor_without_start_time(videos: dict[str, Path], kind: str, anchor: float) -> None:
    os.utime(videos["ts"], (1_800_000_000, 1_800_000_000))  # no creation_time in the .ts: its mtime counts
    frames = list(VideoSource(videos[kind]).iter_samples(2.0))
    assert [f.ts - anchor for f in frames] == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])


def test_gap_yields_no_fake_frames(videos: dict[str, Path]) -> None:
    frames = list(VideoSource(videos["gap"], start_time=0.0).iter_samples(1.0))
    # frames 3.0 .. 5.9 s were never recorded: their samples are missing, not filled in
    assert [f.pts_s for f in frames] == pytest.approx([0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 9.0])
    assert_genuine(frames)


def test_probe(videos: dict[str, Path]) -> None:
    width, height, fps, duration, gop_s = FileSource.probe(videos["mp4"])
    assert (width, height) == (W, H)
    assert (fps, duration, gop_s) == pytest.approx((10.0, 10.0, 2.0))


def test_stop_ends_iteration(videos: dict[str, Path]) -> None:
    src = VideoSource(videos["mp4"])
    got = []
    for frame in src.iter_samples(0.5):
        got.append(frame)
        src.stop()
    assert 1 <= len(got) <= 2


@pytest.mark.parametrize("interval", [0.0, -1.0, math.nan, math.inf])
def test_bad_interval(videos: dict[str, Path], interval: float) -> None:
    with pytest.raises(ValueError, match="sample interval"):
        next(VideoSource(videos["mp4"]).iter_samples(interval))


# ------------------------------------------------------------------------------------------ broken files
def test_truncated_ts_ends_cleanly_with_warning(
    videos: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = videos["ts"].read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="detector.sources"):
        frames = list(VideoSource(cut).iter_samples(0.5))
    assert 5 <= len(frames) < 20
    assert_genuine(frames)
    assert any("end of" in r.getMessage() and "cut.ts" in r.getMessage() for r in caplog.records)


def test_truncated_mp4_without_index_fails_to_open(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the moov index is written at the end
    with pytest.raises(SourceOpenError) as err:
        next(VideoSource(cut).iter_samples(1.0))
    assert err.value.reason == "invalid" and str(cut) in str(err.value)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("interval", [0.5, 2.0])
def test_corrupt_ts_never_yields_fake_frames(
    videos: dict[str, Path], tmp_path: Path, seed: int, interval: float
) -> None:
    rng = np.random.default_rng(seed)
    data = bytearray(videos["ts"].read_bytes())
    n = len(data) // 188
    for k in rng.choice(np.arange(n // 3, 2 * n // 3), 8, replace=False):  # garble 8 TS packets mid-file
        data[k * 188 + 20 : k * 188 + 188] = rng.integers(0, 255, 168, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.ts"
    bad.write_bytes(bytes(data))
    src = VideoSource(bad)
    frames: list[Frame] = []
    with contextlib.suppress(SourceReadError):  # either outcome is fine; a fake frame is not
        frames.extend(src.iter_samples(interval))
    assert frames, "the intact start of the file must still be read"
    assert_genuine(frames)


@pytest.mark.parametrize(
    ("name", "content", "reason"), [("nope/cam.mp4", None, "not_found"), ("junk.mp4", b"x" * 4096, "invalid")]
)
def test_unopenable_file(tmp_path: Path, name: str, content: bytes | None, reason: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceOpenError) as err:
        next(VideoSource(path).iter_samples(1.0))
    assert err.value.reason == reason and str(path) in str(err.value)
    with pytest.raises(SourceOpenError):
        FileSource.probe(path)


# ------------------------------------------------------------------------------------------ network
@pytest.fixture
def tcp_server() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    yield srv, conns
    for c in conns:
        c.close()
    srv.close()


def serve_rtsp_401(srv: socket.socket, conns: list[socket.socket]) -> None:
    """A camera that answers every RTSP request with 401 Unauthorized."""
    reply = b'RTSP/1.0 401 Unauthorized\r\nCSeq: %s\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n'
    with contextlib.suppress(OSError):
        while True:
            conn, _ = srv.accept()
            conns.append(conn)
            while request := conn.recv(4096):
                cseq = re.search(rb"CSeq:\s*(\d+)", request, re.IGNORECASE)
                conn.sendall(reply % (cseq.group(1) if cseq else b"1"))


def test_rtsp_wrong_password_is_unauthorized_and_masked(
    tcp_server: tuple[socket.socket, list[socket.socket]],
) -> None:
    srv, conns = tcp_server
    threading.Thread(target=serve_rtsp_401, args=(srv, conns), daemon=True).start()
    url = f"rtsp://admin:hunter2@127.0.0.1:{srv.getsockname()[1]}/stream1"
    with pytest.raises(SourceOpenError) as err:
        next(VideoSource(url, "cam-3", open_timeout_s=5).iter_samples(1.0))
    assert err.value.reason == "unauthorized"
    assert "admin:***@127.0.0.1" in str(err.value) and "hunter2" not in err.value.url
    assert "hunter2" not in "".join(traceback.format_exception(err.value))


def test_refused_is_masked() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # a port nobody listens on once the socket is closed
        url = f"rtsp://admin:s3cret@127.0.0.1:{closed.getsockname()[1]}/live?token=abc123"
    src = VideoSource(url, transport="udp")
    with pytest.raises(SourceOpenError) as err:
        next(src.iter_samples(1.0))
    assert err.value.reason == "refused"
    shown = "".join(traceback.format_exception(err.value)) + repr(src) + src.url
    assert "s3cret" not in shown and "abc123" not in shown


def test_open_timeout(tcp_server: tuple[socket.socket, list[socket.socket]]) -> None:
    srv, conns = tcp_server
    threading.Thread(target=lambda: conns.append(srv.accept()[0]), daemon=True).start()
    with pytest.raises(SourceOpenError) as err:
        next(VideoSource(f"rtsp://127.0.0.1:{srv.getsockname()[1]}/x", open_timeout_s=1.0).iter_samples(1.0))
    assert err.value.reason == "timeout"


class _Handler(http.server.SimpleHTTPRequestHandler):
    clip: bytes = b""

    def do_GET(self) -> None:
        if self.path == "/private.m3u8":
            self.send_error(401)
        elif self.path == "/cut.ts":  # a live feed that drops half way
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            self.wfile.write(self.clip[: len(self.clip) // 2])
            self.close_connection = True
        else:
            super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base(videos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("hls")
    src = av.open(str(videos["ts"]))
    out = av.open(
        str(d / "index.m3u8"), "w", format="hls", options={"hls_time": "2", "hls_playlist_type": "vod"}
    )
    ost = out.add_stream_from_template(src.streams.video[0])
    for pk in src.demux(src.streams.video[0]):
        if pk.dts is not None:
            pk.stream = ost
            out.mux(pk)
    out.close()
    src.close()
    handler = type("H", (_Handler,), {"clip": videos["ts"].read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(d)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hls_vod(http_base: str) -> None:
    src = VideoSource(f"{http_base}/index.m3u8", "hls", start_time=0.0)
    frames = list(src.iter_samples(2.0))
    assert src.is_live is False and src.decode_mode == "keyframes"
    assert [f.pts_s for f in frames] == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])
    assert_genuine(frames)


@pytest.mark.parametrize(
    ("path", "reason"), [("/missing.m3u8", "not_found"), ("/private.m3u8", "unauthorized")]
)
def test_http_open_errors(http_base: str, path: str, reason: str) -> None:
    with pytest.raises(SourceOpenError) as err:
        next(VideoSource(http_base.replace("http://", "http://u:pw@") + path).iter_samples(1.0))
    assert err.value.reason == reason and ":pw@" not in str(err.value)


def test_live_stream_loss_raises_read_error(http_base: str) -> None:
    src = VideoSource(f"{http_base}/cut.ts", "live", read_timeout_s=3)
    frames: list[Frame] = []
    with pytest.raises(SourceReadError) as err:
        frames.extend(src.iter_samples(1.0))
    assert src.is_live and err.value.reason in ("lost", "ended")
    assert frames and max(f.pts_s for f in frames) < 5.5
    assert_genuine(frames)


# ------------------------------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:pa:ss@10.0.0.5:554/Streaming/101", "rtsp://admin:***@10.0.0.5:554/Streaming/101"),
        ("rtsps://user@cam.local/live", "rtsps://user@cam.local/live"),
        ("http://cam/video.cgi?user=a&password=x1&ch=2", "http://cam/video.cgi?user=a&password=***&ch=2"),
        ("https://h/l.m3u8?token=abc", "https://h/l.m3u8?token=***"),
        ("/data/videos/cam 1.mp4", "/data/videos/cam 1.mp4"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("interval", "pts", "taken"),
    [
        (1.0, [0.0, 0.1, 0.9, 1.0, 1.1, 2.05], [0.0, 1.0, 2.05]),
        (0.1, [0.0, 0.1, 0.2, 0.30000000000000004, 0.4], [0.0, 0.1, 0.2, 0.30000000000000004, 0.4]),
        (2.0, [0.5, 1.0, 7.0, 7.5, 8.0], [0.5, 7.0, 8.0]),  # a gap skips the grid points inside it
        (5.0, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0], [0.0, 6.0, 10.0]),
    ],
)
def test_sample_clock(interval: float, pts: list[float], taken: list[float]) -> None:
    clock = SampleClock(interval)
    assert [p for p in pts if clock.take(p)] == taken


@pytest.mark.parametrize(
    ("keys", "gop"),
    [
        ([0.0], None),
        ([0.0, 2.0, 4.0], 2.0),
        ([0.0, 1.0, 3.0, 4.0], 2.0),  # the largest recent gap
        ([0.0, 2.0, 75874.5, 6.0, 8.0], 2.0),  # a wild pts from a corrupt header is a discontinuity
    ],
)
def test_gop_estimator(keys: list[float], gop: float | None) -> None:
    est = GopEstimator()
    for k in keys:
        est.add_key(k)
    assert est.gop_s == gop


@pytest.mark.parametrize(
    ("interval", "gop", "mode"),
    [(0.5, 2.0, "all"), (2.0, 2.0, "keyframes"), (5.0, 2.0, "keyframes"), (5.0, None, "all")],
)
def test_choose_decode_mode(interval: float, gop: float | None, mode: str) -> None:
    assert choose_decode_mode(interval, gop) == mode


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        (CREATED, CREATED_EPOCH),
        ("2026-01-01 08:00:00", CREATED_EPOCH),
        ("2026-01-01T16:00:00+08:00", CREATED_EPOCH),
        ("1970-01-01T00:00:00.000000Z", None),  # placeholder written by devices without a clock
        ("not a date", None),
        (None, None),
    ],
)
def test_parse_creation_time(value: str | None, epoch: float | None) -> None:
    assert parse_creation_time(value) == epoch
