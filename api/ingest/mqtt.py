"""The MQTT consumer: paho-mqtt 2.x, one worker thread, ack after commit.

- ``clean_session=False`` with a stable client id: the broker keeps the subscription and the
  QoS 1 messages that arrive while the API is down, and delivers them on reconnect.
- ``manual_ack=True``: the network thread only queues a message; the worker runs
  ``ingest_event`` in its own session, commits, and only then sends the PUBACK. A crash before
  the commit means the broker delivers the message again (the upsert is idempotent).
- Messages are handled one at a time, in arrival order, so PUBACKs go out in order too. A message
  received on an earlier connection is processed but not acked: the broker redelivers it on the
  new connection, where its packet id may now name another message.
- Database outages: the same message is retried with backoff, never dropped, never acked early.
- Reconnects forever with backoff (paho ``loop_start`` + ``reconnect_delay_set``).
The queue needs no bound of its own: the broker sends at most its in-flight window of unacked
QoS 1 messages (Mosquitto ``max_inflight_messages``, 20 by default).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.core.evidence import EvidenceStore
from api.errors import IngestUnavailableError
from api.ingest.service import IngestOutcome, IngestResult, ingest_event, record_dead_letter

log = logging.getLogger(__name__)

_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 30.0
_INGESTED = (IngestOutcome.created, IngestOutcome.updated, IngestOutcome.stale)


@dataclass(frozen=True, slots=True)
class _Received:
    message: mqtt.MQTTMessage
    generation: int


class MqttIngest:
    """Subscribe to ``<prefix>/violations/+`` and turn every message into a case or a dead letter."""

    def __init__(
        self,
        settings: Settings,
        session_factory: Callable[[], Session],
        evidence_store: EvidenceStore,
    ) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._store = evidence_store
        self._queue: queue.Queue[_Received] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._worker: threading.Thread | None = None
        self._counts: dict[str, int] = {o.value: 0 for o in IngestOutcome}
        self._counts.update(received=0, retries=0, acked=0, not_acked=0)
        self._last_error: str | None = None
        self._last_message_at: datetime | None = None
        self._client = self._make_client()

    # -- paho -------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self._settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.mqtt_client_id,
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        if s.mqtt_username is not None:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password is not None else None
            client.username_pw_set(s.mqtt_username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=s.mqtt_reconnect_max_delay_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            with self._lock:
                self._last_error = f"broker refused the connection: {reason}"
            s = self._settings
            log.error("MQTT connect to %s:%d refused: %s", s.mqtt_host, s.mqtt_port, reason)
            return
        with self._lock:
            self._connected = True
            self._generation += 1
        topic = self._settings.violations_topic_filter
        client.subscribe(topic, qos=1)
        log.info("MQTT connected (session present: %s); subscribing %s", flags.session_present, topic)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        with self._lock:
            self._connected = False
            self._generation += 1
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _props: Any
    ) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            with self._lock:
                self._last_error = f"subscription refused by the broker: {', '.join(failed)}"
            log.error("MQTT subscription to %s refused: %s", self._settings.violations_topic_filter, failed)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._counts["received"] += 1
            self._queue.put(_Received(message, self._generation))

    # -- worker -----------------------------------------------------------------------------
    def _ingest(self, message: mqtt.MQTTMessage) -> IngestResult:
        s = self._settings
        try:
            with self._session_factory() as session:
                return ingest_event(
                    session,
                    message.topic,
                    bytes(message.payload),
                    self._store,
                    topic_prefix=s.mqtt_topic_prefix,
                    max_payload_bytes=s.ingest_max_payload_bytes,
                )
        except IngestUnavailableError:
            raise
        except Exception as exc:  # the consumer's boundary: a bug must not stall the queue
            log.exception("ingest failed unexpectedly on %s", message.topic)
            reason = f"internal error while ingesting: {type(exc).__name__}: {exc}"
            with self._session_factory() as session:
                dl_id = record_dead_letter(session, message.topic, bytes(message.payload), reason)
            return IngestResult(IngestOutcome.dead_letter, reason=reason, dead_letter_id=dl_id)

    def _process(self, message: mqtt.MQTTMessage) -> bool:
        """Ingest until committed; False when asked to stop first (the message stays unacked)."""
        delay = _RETRY_MIN_S
        while True:
            try:
                result = self._ingest(message)
            except IngestUnavailableError as exc:
                with self._lock:
                    self._counts["retries"] += 1
                    self._last_error = str(exc)[:500]
                log.warning("ingest unavailable, retrying in %.1fs: %s", delay, exc)
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            with self._lock:
                self._counts[result.outcome.value] += 1
                self._last_message_at = datetime.now(UTC)
            return True

    def _ack(self, item: _Received) -> None:
        if item.message.qos == 0:
            return
        with self._lock:
            current = self._connected and item.generation == self._generation
            self._counts["acked" if current else "not_acked"] += 1
        if current:
            self._client.ack(item.message.mid, item.message.qos)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if not self._process(item.message):
                break
            self._ack(item)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        s = self._settings
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="citywatch-ingest", daemon=True)
        self._worker.start()
        self._client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=s.mqtt_keepalive_s)
        self._client.loop_start()
        log.info("MQTT ingest started: %s:%d as %r", s.mqtt_host, s.mqtt_port, s.mqtt_client_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the message in hand, then disconnect; queued, unacked messages stay with the broker."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                log.error("ingest worker still busy after %.0fs; leaving it", timeout)
            self._worker = None
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._connected = False
        log.info("MQTT ingest stopped")

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
            return {
                "connected": self._connected,
                "events_ingested": sum(counts[o.value] for o in _INGESTED),
                "dead_letters": counts[IngestOutcome.dead_letter.value],
                "counts": counts,
                "queued": self._queue.qsize(),
                "last_message_at": self._last_message_at,
                "last_error": self._last_error,
            }
