"""Each stream's latest view as a retained JPEG on ``{prefix}/streams/{id}/snapshot``.

The case API keeps the latest one per stream and the web console draws the zones on it. A stream's
snapshot is taken from the first frame after it goes live, then every ``snapshot_s`` seconds
(``streams.yaml``, per stream or for all; 0 turns it off), scaled down to at most
:data:`MAX_WIDTH` px wide. It is published QoS 1 and retained, so a console that opens later still
gets it. While the broker is away only the latest snapshot of each stream waits (no outbox: an old
view is worth nothing once a newer one exists); all of them are sent again after a reconnect, so a
broker that lost its retained messages gets them back. A stream taken out of the running config
(state ``removed``) has its retained snapshot cleared (an empty retained message).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from detector.contracts.events import TOPIC_PREFIX, snapshot_topic
from detector.delivery.mqtt import Communicator, MqttError

log = logging.getLogger(__name__)

MAX_WIDTH: Final = 640
JPEG_QUALITY: Final = 80
JPEG: Final = "image/jpeg"


def encode_snapshot(
    image: npt.NDArray[np.uint8], max_width: int = MAX_WIDTH, quality: int = JPEG_QUALITY
) -> bytes:
    """A BGR frame as a JPEG at most ``max_width`` px wide (aspect ratio kept)."""
    height, width = image.shape[:2]
    if width > max_width:
        size = (max_width, max(1, round(height * max_width / width)))
        image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a {width}x{height} frame as JPEG")
    return bytes(buf.tobytes())


class Snapshots:
    """Decides when each stream's snapshot is due, encodes it and publishes it. Thread-safe: the
    stream workers call :meth:`on_frame` and :meth:`on_state` from their own threads.

    ``every_s(stream_id)`` gives the stream's current ``snapshot_s`` (read at each frame, so an
    edited config applies at once; ``0``: no snapshots of that stream)."""

    def __init__(
        self,
        comm: Communicator,
        every_s: Callable[[str], float],
        *,
        topic_prefix: str = TOPIC_PREFIX,
        max_width: int = MAX_WIDTH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._comm = comm
        self._every = every_s
        self._prefix = topic_prefix
        self._max_width = max_width
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, bool] = {}
        self._due: set[str] = set()
        self._taken: dict[str, float] = {}
        self._latest: dict[str, bytes] = {}  # topic -> JPEG
        self._dirty: set[str] = set()
        self._was_connected = False
        self.published = 0

    def on_state(self, stream_id: str, state: Mapping[str, Any]) -> None:
        """A stream that goes live has its next frame taken, however recent the last snapshot; a
        removed stream's snapshot is cleared."""
        live = state.get("state") == "live"
        with self._lock:
            if live and not self._live.get(stream_id, False):
                self._due.add(stream_id)
            self._live[stream_id] = live
            if state.get("state") == "removed":
                topic = snapshot_topic(stream_id, self._prefix)
                self._latest[topic] = b""  # an empty retained message clears the broker's
                self._dirty.add(topic)
                self._taken.pop(stream_id, None)
        if state.get("state") == "removed":
            self.send()

    def on_frame(self, stream_id: str, image: npt.NDArray[np.uint8]) -> bool:
        """Take a snapshot of ``image`` when one is due; ``True`` when it was taken."""
        every = self._every(stream_id)
        now = self._clock()
        with self._lock:
            last = self._taken.get(stream_id)
            due = every > 0 and (stream_id in self._due or last is None or now - last >= every)
            if due:
                self._due.discard(stream_id)
                self._taken[stream_id] = now
        if due:
            try:
                jpeg = encode_snapshot(image, self._max_width)
            except (ValueError, cv2.error) as exc:
                log.warning("stream %s: no snapshot: %s", stream_id, exc)
                due = False
            else:
                topic = snapshot_topic(stream_id, self._prefix)
                with self._lock:
                    self._latest[topic] = jpeg
                    self._dirty.add(topic)
        self.send()
        return due

    def send(self) -> None:
        """Publish what waits (everything again after a reconnect), when connected."""
        connected = self._comm.is_connected()
        with self._lock:
            if connected and not self._was_connected:
                self._dirty.update(self._latest)
            self._was_connected = connected
            if not connected or not self._dirty:
                return
            todo = [(topic, self._latest[topic]) for topic in self._dirty]
            self._dirty.clear()
        failed: list[str] = []
        for topic, jpeg in todo:
            try:
                handle = self._comm.publish(topic, jpeg, 1, True, content_type=JPEG)
                if handle.error is not None:
                    failed.append(topic)
            except MqttError:
                failed.append(topic)
        with self._lock:
            self._dirty.update(failed)
            self.published += len(todo) - len(failed)
