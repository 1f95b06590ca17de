"""Publishing violation events without losing any: outbox first, then MQTT, delete on PUBACK.

:class:`Publisher` validates an event, writes it to the durable :class:`~detector.delivery.outbox.Outbox`
(fsynced) and wakes its sender thread. The sender hands pending entries to the
:class:`~detector.delivery.mqtt.Communicator` in insertion order while connected (at most ``window`` at
a time), and deletes an entry only when the broker acknowledges it. Entries the client or the
broker refused, or that got no PUBACK within ``ack_timeout_s`` of being sent on a live
connection, are retried with the outbox's exponential backoff; after a reconnect everything is
due at once. Entries left by a previous process are sent as soon as the first connection is up.

:class:`JsonlSink` has the same ``publish_event`` API and appends events to a JSONL file
(``citywatch replay --out events.jsonl``; no broker).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

from detector.contracts.errors import DetectorError
from detector.contracts.events import (
    SCHEMA_NAME,
    TOPIC_PREFIX,
    EventSchemaError,
    encode_event,
    state_topic,
    validate_event,
    validate_state,
    violations_topic,
)
from detector.delivery.mqtt import Communicator, MqttError
from detector.delivery.outbox import Outbox, OutboxEntry, OutboxError

log = logging.getLogger(__name__)

REFUSED: Final = 0x80  # MQTT 5 reason codes at or above this are failures
JSON: Final = "application/json"


class PublisherError(DetectorError):
    """An event or a state could not be accepted for publishing."""


class PublisherStoppedError(PublisherError):
    """The publisher was stopped; make a new one."""


class EventSink(Protocol):
    """What the pipeline publishes to: a :class:`Publisher` or a :class:`JsonlSink`."""

    def publish_event(self, payload: Mapping[str, Any]) -> int: ...

    def publish_state(self, stream_id: str, state: Mapping[str, Any]) -> None: ...

    def flush(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...


class Publisher:
    """Outbox-backed event publisher over a :class:`Communicator`. Thread-safe.

    The publisher does not own ``communicator`` or ``outbox``: stop / close them after
    :meth:`stop`.
    """

    def __init__(
        self,
        communicator: Communicator,
        outbox: Outbox,
        *,
        topic_prefix: str = TOPIC_PREFIX,
        window: int = 64,
        ack_timeout_s: float = 60.0,
        event_expiry_s: int | None = None,
        poll_s: float = 0.5,
        start: bool = True,
    ) -> None:
        if window < 1:
            raise PublisherError(f"window must be at least 1, got {window}")
        if ack_timeout_s <= 0 or poll_s <= 0:
            raise PublisherError("ack_timeout_s and poll_s must be positive")
        self._comm = communicator
        self._outbox = outbox
        self._prefix = topic_prefix
        self._window = window
        self._ack_timeout = ack_timeout_s
        self._expiry = event_expiry_s
        self._poll = poll_s
        self._lock = threading.Lock()
        self._inflight: dict[int, float] = {}  # outbox id -> monotonic time handed to the client
        self._acks: queue.SimpleQueue[tuple[int, int, str]] = queue.SimpleQueue()
        self._states: dict[str, bytes] = {}
        self._dirty_states: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self.published = 0  # events stored in the outbox by this publisher
        self.acked = 0
        self.retried = 0
        if start:
            self.start()

    # ------------------------------------------------------------------ API
    def start(self) -> Publisher:
        with self._lock:
            if self._stopping.is_set():
                raise PublisherStoppedError("this publisher was stopped; make a new Publisher")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="citywatch-publisher", daemon=True)
                self._thread.start()
        return self

    def publish_event(self, payload: Mapping[str, Any]) -> int:
        """Validate, store durably, and schedule sending; returns the outbox id.

        Raises :class:`~detector.contracts.events.EventSchemaError` for an invalid payload and
        :class:`~detector.delivery.outbox.OutboxFullError` when the outbox is full (nothing is dropped).
        """
        if self._stopping.is_set():
            raise PublisherStoppedError("cannot publish an event: the publisher is stopped")
        validate_event(payload)
        entry_id = self._outbox.put(
            violations_topic(payload["stream"], self._prefix), encode_event(payload), 1
        )
        with self._lock:
            self.published += 1
        self._wake.set()
        return entry_id

    def publish_state(self, stream_id: str, state: Mapping[str, Any]) -> None:
        """Publish a stream's health, retained, QoS 1; only the latest state is kept (no outbox).

        A state that breaks the ``stream-state.v1`` contract is logged and not published (the
        worker that reports it keeps running)."""
        if self._stopping.is_set():
            raise PublisherStoppedError("cannot publish a state: the publisher is stopped")
        try:
            validate_state(state)
        except EventSchemaError as exc:
            log.error("stream %s: state not published: %s", stream_id, exc)
            return
        topic = state_topic(stream_id, self._prefix)
        try:
            data = json.dumps(state, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise PublisherError(f"state of stream {stream_id} is not JSON-serialisable: {exc}") from exc
        with self._lock:
            self._states[topic] = data
            self._dirty_states.add(topic)
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every event acknowledged); ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while self._outbox.count() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            with self._progress:
                self._progress.wait(min(remaining, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sender thread (unsent events stay in the outbox for the next start)."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stats(self) -> dict[str, int]:
        with self._lock:
            inflight = len(self._inflight)
        return {
            "pending": self._outbox.count(),
            "inflight": inflight,
            "published": self.published,
            "acked": self.acked,
            "retried": self.retried,
        }

    # ------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        was_connected = False
        connected_at = 0.0
        while not self._stopping.is_set():
            self._wake.wait(self._poll)
            self._wake.clear()
            try:
                self._drain_acks()
                connected = self._comm.is_connected()
                if connected and not was_connected:
                    connected_at = time.monotonic()
                    waiting = self._outbox.reset_backoff()
                    log.info(
                        "MQTT up: %d outbox entries pending (%d were backing off)",
                        self._outbox.count(),
                        waiting,
                    )
                    with self._lock:
                        self._dirty_states.update(self._states)
                was_connected = connected
                if connected:
                    self._send_states()
                    self._expire(connected_at)
                    self._fill_window()
            except (OutboxError, MqttError, OSError):
                log.exception("publisher: sending failed; retrying in a second")
                self._stopping.wait(1.0)
            with self._progress:
                self._progress.notify_all()

    def _on_ack(self, entry_id: int, code: int, reason: str) -> None:  # paho network thread
        self._acks.put((entry_id, code, reason))
        self._wake.set()

    def _drain_acks(self) -> None:
        done: list[int] = []
        refused: list[tuple[int, str]] = []
        while True:
            try:
                entry_id, code, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._inflight.pop(entry_id, None)
            if code < REFUSED:
                done.append(entry_id)
            else:
                refused.append((entry_id, reason))
        if done:
            self.acked += self._outbox.mark_sent_many(done)
        for entry_id, reason in refused:
            log.warning("broker refused outbox entry %d: %s; will retry", entry_id, reason)
            self._retry(entry_id, f"broker refused: {reason}")

    def _retry(self, entry_id: int, error: str) -> None:
        self.retried += 1
        with contextlib.suppress(OutboxError):  # gone: a late PUBACK of an earlier copy came in
            self._outbox.attempt(entry_id, error)

    def _expire(self, connected_at: float) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [i for i, t in self._inflight.items() if now - max(t, connected_at) > self._ack_timeout]
            for entry_id in stale:
                del self._inflight[entry_id]
        for entry_id in stale:
            log.warning(
                "no PUBACK for outbox entry %d within %.0f s; will re-send", entry_id, self._ack_timeout
            )
            self._retry(entry_id, f"no PUBACK within {self._ack_timeout:.0f} s")

    def _fill_window(self) -> None:
        with self._lock:
            busy = set(self._inflight)
        free = self._window - len(busy)
        if free <= 0:
            return
        for entry in self._outbox.pending(len(busy) + free, due_before=time.time()):
            if free <= 0 or not self._comm.is_connected():
                break
            if entry.id not in busy:
                self._send(entry)
                free -= 1

    def _send(self, entry: OutboxEntry) -> None:
        with self._lock:
            self._inflight[entry.id] = time.monotonic()  # before publish: the ack may come at once
        try:
            handle = self._comm.publish(
                entry.topic,
                entry.payload,
                entry.qos,
                False,
                expiry_s=self._expiry,
                user_properties=[("schema", SCHEMA_NAME)],
                content_type=JSON,
                on_ack=functools.partial(self._on_ack, entry.id),
            )
            error = handle.error
        except MqttError as exc:
            error = str(exc)
        if error is not None:
            with self._lock:
                self._inflight.pop(entry.id, None)
            log.warning("could not hand outbox entry %d to MQTT: %s; will retry", entry.id, error)
            self._retry(entry.id, error)

    def _send_states(self) -> None:
        with self._lock:
            todo = [(t, self._states[t]) for t in self._dirty_states]
            self._dirty_states.clear()
        for topic, data in todo:
            try:
                handle = self._comm.publish(topic, data, 1, True, content_type=JSON)
                failed = handle.error is not None
            except MqttError:
                failed = True
            if failed:
                with self._lock:
                    self._dirty_states.add(topic)


class JsonlSink:
    """Writes events to a JSONL file, one validated payload per line (no broker). Thread-safe."""

    def __init__(self, path: str | Path, *, validate: bool = True, append: bool = False) -> None:
        self.path = Path(path)
        self._validate = validate
        self._lock = threading.Lock()
        self.count = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a" if append else "w", encoding="utf-8")
        except OSError as exc:
            raise PublisherError(f"cannot open {self.path} for writing events: {exc}") from exc

    def publish_event(self, payload: Mapping[str, Any]) -> int:
        if self._validate:
            validate_event(payload)
        line = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                raise PublisherStoppedError(f"the event file {self.path} is closed")
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1
            return self.count

    def publish_state(self, stream_id: str, state: Mapping[str, Any]) -> None:
        """States are live health, not events: a file sink ignores them."""

    def flush(self, timeout: float = 0.0) -> bool:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
        return True

    def stop(self) -> None:
        self.flush()
        with self._lock:
            self._file.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
