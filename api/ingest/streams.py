"""What the detectors say about their streams, kept in memory: the latest state and snapshot of each.

The MQTT ingest (``api.ingest.mqtt``) hands this board every message on the retained
``{prefix}/streams/+/state`` (``stream-state.v1`` JSON) and ``{prefix}/streams/+/snapshot`` (a JPEG)
topics. Nothing is stored in the database: the broker keeps the retained messages and sends them again
whenever the API (re)subscribes, so a restarted API knows every stream at once. Each API worker keeps
its own board. An empty retained message (the topic cleared) forgets the stream's state or snapshot,
and a ``removed`` state (taken out of the running detector's streams.yaml) forgets both.

A state that changes what the console shows (state, reason, sample rate, lag ...) is handed to
``on_change`` (``api.services.live.publish_stream``: a ``stream`` event on ``GET /live``). Snapshots are
bounded: one larger than ``max_snapshot_bytes`` or not a JPEG is ignored, and past
``max_total_bytes`` the oldest snapshots are forgotten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from api.models import utcnow
from api.services.live import publish_stream
from detector.contracts.events import EventSchemaError, parse_stream_topic, validate_state

log = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES: Final = 2 * 1024 * 1024
MAX_TOTAL_BYTES: Final = 64 * 1024 * 1024
MAX_STREAMS: Final = 10_000
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_SUMMARY_KEYS: Final = ("state", "reason", "last_error", "sample_fps", "sample_interval_s", "lag_s")


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    received_at: datetime

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.jpeg).hexdigest()[:32] + '"'


def _iso(epoch: Any) -> str | None:
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return None
    try:
        return datetime.fromtimestamp(float(epoch), UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def summary(stream_id: str, state: Mapping[str, Any], received_at: datetime) -> dict[str, Any]:
    """What the console shows of a state (``GET /streams`` and the ``stream`` events): JSON values."""
    last_seen = state.get("last_sample_at")
    if last_seen is None:
        last_seen = state.get("last_frame_ts")
    return {
        "id": stream_id,
        "state": state.get("state"),
        "reason": state.get("reason"),
        "last_error": state.get("last_error"),
        "since": _iso(state.get("since")),
        "sample_fps": state.get("sample_fps"),
        "sample_interval_s": state.get("sample_interval_s"),
        "lag_s": state.get("lag_s"),
        "last_seen": _iso(last_seen),
        "width": state.get("width"),
        "height": state.get("height"),
        "updated_at": received_at.isoformat(),
    }


class StreamBoard:
    """The latest state and snapshot of every stream. Thread-safe (paho's network thread writes)."""

    def __init__(
        self,
        *,
        on_change: Callable[[Mapping[str, Any]], Any] | None = publish_stream,
        max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        max_streams: int = MAX_STREAMS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._on_change = on_change
        self._max_snapshot = max_snapshot_bytes
        self._max_total = max_total_bytes
        self._max_streams = max_streams
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, tuple[dict[str, Any], datetime]] = {}
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()  # oldest received first
        self._total = 0
        self.ignored = 0

    # -- writing (the MQTT ingest) ----------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, prefix: str) -> bool:
        """Take a stream topic's message; ``False`` when ``topic`` is not one."""
        parsed = parse_stream_topic(topic, prefix)
        if parsed is None:
            return False
        stream_id, kind = parsed
        if kind == "state":
            self.put_state(stream_id, payload)
        else:
            self.put_snapshot(stream_id, payload)
        return True

    def put_state(self, stream_id: str, payload: bytes) -> bool:
        """Keep a state (empty: forget it); ``True`` when what the console shows changed."""
        if not payload:
            with self._lock:
                self._states.pop(stream_id, None)
            return False
        try:
            state = json.loads(payload)
            if not isinstance(state, dict) or state.get("stream") != stream_id:
                raise ValueError(f"not the state of stream {stream_id}")
            validate_state(state)
        except (ValueError, EventSchemaError) as exc:
            self.ignored += 1
            log.warning("stream %s: state ignored: %s", stream_id, str(exc)[:300])
            return False
        now = self._clock()
        if state.get("state") == "removed":
            with self._lock:
                self._states.pop(stream_id, None)
                gone = self._snapshots.pop(stream_id, None)
                self._total -= len(gone.jpeg) if gone is not None else 0
            self._hand_on(stream_id, state, now)
            return True
        with self._lock:
            before = self._states.get(stream_id)
            if before is None and len(self._states) >= self._max_streams:
                self.ignored += 1
                return False
            self._states[stream_id] = (state, now)
        changed = before is None or any(before[0].get(k) != state.get(k) for k in _SUMMARY_KEYS)
        if changed:
            self._hand_on(stream_id, state, now)
        return changed

    def _hand_on(self, stream_id: str, state: Mapping[str, Any], now: datetime) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(summary(stream_id, state, now))
        except Exception:  # a listener's bug must not stop the MQTT network thread
            log.exception("stream %s: handing the state on failed", stream_id)

    def put_snapshot(self, stream_id: str, jpeg: bytes) -> bool:
        """Keep a snapshot (empty: forget it); ``True`` when kept."""
        if jpeg and (len(jpeg) > self._max_snapshot or not jpeg.startswith(_JPEG_MAGIC)):
            self.ignored += 1
            why = "%d bytes, not a JPEG or too large"
            log.warning("stream %s: snapshot ignored (" + why + ")", stream_id, len(jpeg))
            return False
        with self._lock:
            old = self._snapshots.pop(stream_id, None)
            if old is not None:
                self._total -= len(old.jpeg)
            if not jpeg:
                return False
            self._snapshots[stream_id] = Snapshot(bytes(jpeg), self._clock())
            self._total += len(jpeg)
            while self._total > self._max_total or len(self._snapshots) > self._max_streams:
                _, dropped = self._snapshots.popitem(last=False)
                self._total -= len(dropped.jpeg)
        return True

    # -- reading (the routes) ---------------------------------------------------------------
    def states(self) -> dict[str, dict[str, Any]]:
        """Every stream's summary, by id."""
        with self._lock:
            items = list(self._states.items())
        return {sid: summary(sid, state, at) for sid, (state, at) in items}

    def snapshot(self, stream_id: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(stream_id)

    def snapshot_times(self) -> dict[str, datetime]:
        with self._lock:
            return {sid: snap.received_at for sid, snap in self._snapshots.items()}
