"""Helpers of the RTSP integration tests: clips to serve (re-encoded, cut without re-encoding), a server
fixture factory that skips with the reason when GStreamer's RTSP server cannot run here, a TCP "camera"
that answers with garbage, and an MQTT recorder."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.rtsp_server import unavailable_reason

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "training" / "synth" / "scenarios"


def require_rtsp_server() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no real RTSP server here: {reason} (or run `make test-services`)")


def reencode(src: Path, dst: Path, *, size: tuple[int, int], seconds: float, gop_s: float = 2.0) -> Path:
    """``src`` scaled to ``size`` (w, h), its first ``seconds``, H.264 with a fixed GOP, no B-frames."""
    inp = av.open(str(src))
    ist = inp.streams.video[0]
    fps = ist.average_rate or Fraction(5)
    out = av.open(str(dst), "w")
    ost = out.add_stream("libx264", rate=fps)
    ost.width, ost.height, ost.pix_fmt = size[0], size[1], "yuv420p"
    g = max(1, round(float(fps) * gop_s))
    ost.options = {"g": str(g), "keyint_min": str(g), "sc_threshold": "0", "bf": "0", "preset": "ultrafast"}
    for n, frame in enumerate(inp.decode(ist)):
        if n >= float(fps) * seconds:
            break
        img = cv2.resize(frame.to_ndarray(format="bgr24"), size, interpolation=cv2.INTER_LINEAR)
        vf = av.VideoFrame.from_ndarray(img, format="bgr24")
        vf.pts = n
        for pk in ost.encode(vf):
            out.mux(pk)
    for pk in ost.encode():
        out.mux(pk)
    out.close()
    inp.close()
    return dst


def cut_from(src: Path, dst: Path, start_s: float) -> Path:
    """``src`` from its first key frame at or after ``start_s``, packets copied (no re-encode), timestamps
    moved to start at 0: what a camera that kept filming sends after a restart."""
    inp = av.open(str(src))
    ist = inp.streams.video[0]
    tb = ist.time_base or Fraction(1, 1)
    out = av.open(str(dst), "w")
    ost = out.add_stream_from_template(ist)
    origin: int | None = None
    for pk in inp.demux(ist):
        if pk.pts is None or pk.dts is None:
            continue
        if origin is None:
            if not pk.is_keyframe or float(pk.pts * tb) < start_s:
                continue
            origin = pk.dts
        pk.pts -= origin
        pk.dts -= origin
        pk.stream = ost
        out.mux(pk)
    out.close()
    inp.close()
    if origin is None:
        raise ValueError(f"{src} has no key frame after {start_s} s")
    return dst


class GarbageCamera:
    """A TCP server on loopback that answers every connection with random bytes (not RTSP at all)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        rng = np.random.default_rng(1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(
                target=self._spew, args=(conn, rng.integers(0, 256, 1 << 20, np.uint8)), daemon=True
            ).start()

    def _spew(self, conn: socket.socket, noise: np.ndarray) -> None:
        with conn:
            try:
                for k in range(0, len(noise), 4096):
                    conn.sendall(noise[k : k + 4096].tobytes())
                    time.sleep(0.01)
            except OSError:
                pass

    def url(self, path: str = "/live") -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class MqttRecorder:
    """Subscribes to topic filters and keeps every message (topic, decoded JSON or text, arrival time)."""

    def __init__(self, host: str, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, Any, float]] = []
        self.lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"cw-rtsp-test-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"could not subscribe to {topics} on {host}:{port}")

    def _on_message(self, _c: Any, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        text = bytes(msg.payload).decode("utf-8", "replace")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        with self.lock:
            self.messages.append((msg.topic, value, time.time()))

    def of(self, suffix: str) -> list[tuple[Any, float]]:
        with self.lock:
            return [(v, t) for topic, v, t in self.messages if topic.endswith(suffix)]

    def wait_for(self, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
