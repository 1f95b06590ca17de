"""The MQTT consumer: paho-mqtt 2.x, two worker threads, batches committed before they are acked.

- A persistent session with a stable client id: MQTT 5 ``clean_start=False`` with a session
  expiry (3.1.1: ``clean_session=False``), so the broker keeps the subscription and the QoS 1
  messages that arrive while the API is down, and delivers them on reconnect. ``auto`` tries
  MQTT 5 and falls back to 3.1.1 when the broker refuses it.
- MQTT 5 ``Receive Maximum``: the most unacknowledged messages the broker should send (Mosquitto
  2.0.11 sends a new window per PUBACK: the inbox below is what bounds memory); MQTT 5
  ``Maximum Packet Size``: the broker never sends a larger message (``mqtt_max_packet_bytes``,
  by default twice ``ingest_max_payload_bytes``: what lies between is dead-lettered with the reason).
- A bounded inbox (``api.ingest.inbox``): at most ``ingest_queue_max`` messages and
  ``ingest_queue_max_bytes`` held, queued or in hand, until acked. When full, the network thread
  waits (nothing more is read or acked) and the rest stays with the broker: memory stays bounded
  through a flood or a database outage, and nothing accepted is lost.
- ``manual_ack=True``: the network thread only queues a message. One thread takes everything
  queued (up to ``ingest_batch_max``), parses it and stores its evidence (``prepare_batch``) while
  a second commits the previous batch in one transaction (``commit_batch``) and only then sends
  its PUBACKs, in arrival order. A crash before the commit means the broker delivers the messages
  again (the upsert is idempotent). A batch the database refuses is ingested one message at a time.
- A message received on an earlier connection is never acked: the broker redelivers it on the new
  connection, where its packet id may now name another message. When the new connection finds the
  session, the old copies still queued are dropped (the broker sends them again) instead of piling
  up beside the new ones; those already in hand are processed (idempotent) but not acked.
- Database outages: the same messages are retried with backoff, never dropped, never acked early.
- Reconnects forever with backoff (paho ``loop_start`` + ``reconnect_delay_set``); TLS, client
  certificates and username/password from the settings.
- Shared subscriptions (``mqtt_shared_group``): ``$share/<group>/...`` splits the load between
  API workers, each with its own client id.
- With a ``StreamBoard`` (api.ingest.streams), the retained ``<prefix>/streams/+/state`` and
  ``/snapshot`` too: QoS 0, never shared (each worker keeps them all), past the inbox and the database.
"""

from __future__ import annotations

import functools
import logging
import queue
import ssl
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.core.evidence import EvidenceStore
from api.errors import ConfigError, IngestUnavailableError
from api.ingest.batch import Message, Prepared, commit_batch, prepare_batch
from api.ingest.inbox import Held, Inbox
from api.ingest.service import IngestOutcome, IngestResult, ingest_event, record_dead_letter
from api.ingest.streams import StreamBoard
from api.services.routing import RoutingTable
from detector.contracts.events import stream_topic_filter

log = logging.getLogger(__name__)

_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 30.0
_INGESTED = (IngestOutcome.created, IngestOutcome.updated, IngestOutcome.stale)
UNSUPPORTED_PROTOCOL: Final = 132  # MQTT 5 CONNACK reason; paho maps a 3.1.1 CONNACK rc=1 onto it


_T = TypeVar("_T")


class _Stopped:
    """Returned instead of a result when the consumer was asked to stop first."""


STOPPED = _Stopped()
_Received = Held[mqtt.MQTTMessage]


def max_packet_bytes(settings: Settings) -> int:
    """The MQTT 5 Maximum Packet Size to ask for: larger than the payload limit, so a message
    somewhat over it still arrives and is dead-lettered with the reason."""
    limit = settings.ingest_max_payload_bytes
    chosen = settings.mqtt_max_packet_bytes
    if chosen is not None and chosen <= limit:
        raise ConfigError(
            f"CITYWATCH_MQTT_MAX_PACKET_BYTES={chosen} must exceed CITYWATCH_INGEST_MAX_PAYLOAD_BYTES={limit}"
        )
    return min(chosen or 2 * limit, 268_435_455)


class MqttIngest:
    """Subscribe to ``<prefix>/violations/+`` and turn every message into a case or a dead letter."""

    def __init__(
        self,
        settings: Settings,
        session_factory: Callable[[], Session],
        evidence_store: EvidenceStore,
        *,
        routing: RoutingTable | None = None,
        streams: StreamBoard | None = None,
    ) -> None:
        self._settings = settings
        self._streams = streams
        self._session_factory = session_factory
        self._store = evidence_store
        self._routing = routing
        self._max_packet = max_packet_bytes(settings)
        self._inbox: Inbox[mqtt.MQTTMessage] = Inbox(
            settings.ingest_queue_max, settings.ingest_queue_max_bytes
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lifecycle = threading.Lock()  # start / stop / protocol fallback
        self._generation = 0
        self._connected = False
        self._workers: list[threading.Thread] = []
        self._prepared: queue.Queue[tuple[list[_Received], Prepared | None]] = queue.Queue(maxsize=1)
        self._counts: dict[str, int] = {o.value: 0 for o in IngestOutcome}
        self._counts.update(received=0, retries=0, acked=0, not_acked=0, batches=0, batch_fallbacks=0)
        self._last_error: str | None = None
        self._last_message_at: datetime | None = None
        self._v5 = settings.mqtt_protocol != "3.1.1"
        self._client = self._make_client(self._v5)

    # -- paho -------------------------------------------------------------------------------
    def _make_client(self, v5: bool) -> mqtt.Client:
        s = self._settings
        kwargs: dict[str, Any] = {"client_id": s.mqtt_client_id, "manual_ack": True}
        if v5:
            kwargs["protocol"] = MQTTProtocolVersion.MQTTv5
        else:
            kwargs.update(protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if s.mqtt_username is not None:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password is not None else None
            client.username_pw_set(s.mqtt_username, password)
        if s.mqtt_tls or s.mqtt_ca_file or s.mqtt_cert_file:
            if s.mqtt_key_file is not None and s.mqtt_cert_file is None:
                raise ConfigError("CITYWATCH_MQTT_KEY_FILE is set without CITYWATCH_MQTT_CERT_FILE")
            ca, cert, key = (
                str(f) if f else None for f in (s.mqtt_ca_file, s.mqtt_cert_file, s.mqtt_key_file)
            )
            try:
                client.tls_set(
                    ca, cert, key, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"cannot set up MQTT TLS (ca={ca}, cert={cert}, key={key}): {exc}") from exc
            client.tls_insecure_set(s.mqtt_tls_insecure)
        client.reconnect_delay_set(min_delay=1, max_delay=s.mqtt_reconnect_max_delay_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_async(self, client: mqtt.Client, v5: bool) -> None:
        s = self._settings
        if not v5:
            client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=s.mqtt_keepalive_s)
            return
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.mqtt_session_expiry_s
        props.ReceiveMaximum = s.mqtt_receive_maximum
        props.MaximumPacketSize = self._max_packet
        client.connect_async(
            s.mqtt_host, s.mqtt_port, keepalive=s.mqtt_keepalive_s, clean_start=False, properties=props
        )

    def _fall_back_to_311(self) -> None:
        with self._lifecycle:  # never taken by paho callbacks: joining the old thread cannot deadlock
            if self._stop.is_set() or not self._v5:
                return
            old = self._client
            self._v5 = False
            self._client = self._make_client(False)
            old.disconnect()
            old.loop_stop()
            s = self._settings
            log.warning("MQTT broker %s:%d refuses MQTT 5; using 3.1.1", s.mqtt_host, s.mqtt_port)
            self._connect_async(self._client, False)
            self._client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if client is not self._client:
            return
        s = self._settings
        if reason.is_failure:
            if reason.value == UNSUPPORTED_PROTOCOL and s.mqtt_protocol == "auto" and self._v5:
                threading.Thread(target=self._fall_back_to_311, name="mqtt-fallback", daemon=True).start()
                return
            with self._lock:
                self._last_error = f"broker refused the connection: {reason}"
            log.error("MQTT connect to %s:%d refused: %s", s.mqtt_host, s.mqtt_port, reason)
            return
        with self._lock:
            self._connected = True
            self._generation += 1
            generation = self._generation
        if flags.session_present:  # the broker re-sends what the old connection left unacked
            self._inbox.drop_older(generation, keep=lambda m: m.qos == 0)
        topic = s.violations_topic_filter
        client.subscribe(topic, qos=1)
        if self._streams is not None:  # retained: the broker sends every stream's latest at once
            kinds = ("state", "snapshot")
            client.subscribe([(stream_topic_filter(k, s.mqtt_topic_prefix), 0) for k in kinds])
        version = "5" if self._v5 else "3.1.1"
        log.info(
            "MQTT %s connected (session present: %s); subscribing %s", version, flags.session_present, topic
        )

    def _on_disconnect(
        self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if client is not self._client:
            return
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
            log.error("MQTT subscription refused: %s", failed)

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        streams, prefix = self._streams, self._settings.mqtt_topic_prefix
        if streams is not None and streams.on_message(message.topic, bytes(message.payload), prefix):
            return  # a stream's state or snapshot: kept in memory, nothing to ack (QoS 0)
        with self._lock:
            generation = self._generation if client is self._client else -1
            self._counts["received"] += 1
        # blocks (this network thread) while the inbox is full; never under self._lock
        self._inbox.put(message, len(message.payload) + len(message.topic), generation, self._stop)

    # -- worker -----------------------------------------------------------------------------
    def _ingest_one(self, message: mqtt.MQTTMessage) -> IngestResult:
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
                    routing=self._routing,
                )
        except IngestUnavailableError:
            raise
        except Exception as exc:  # the consumer's boundary: a bug must not stall the queue
            log.exception("ingest failed unexpectedly on %s", message.topic)
            reason = f"internal error while ingesting: {type(exc).__name__}: {exc}"
            with self._session_factory() as session:
                dl_id = record_dead_letter(session, message.topic, bytes(message.payload), reason)
            return IngestResult(IngestOutcome.dead_letter, reason=reason, dead_letter_id=dl_id)

    def _prepare(self, batch: Sequence[_Received]) -> Prepared | None:
        """Stage 1: parse and store the evidence (``None``: ingest one by one, in stage 2)."""
        if len(batch) == 1:
            return None
        s = self._settings
        messages = [Message(r.item.topic, bytes(r.item.payload)) for r in batch]
        try:
            return prepare_batch(
                messages,
                self._store,
                topic_prefix=s.mqtt_topic_prefix,
                max_payload_bytes=s.ingest_max_payload_bytes,
            )
        except IngestUnavailableError:
            raise
        except Exception:  # a bug in the batch path: the one-by-one path has its own boundary
            log.exception("preparing a batch failed unexpectedly; ingesting one by one")
            return None

    def _commit(self, batch: Sequence[_Received], prepared: Prepared | None) -> list[IngestResult]:
        """Stage 2: one transaction for the batch; one per message when the database refuses it."""
        if prepared is not None:
            try:
                with self._session_factory() as session:
                    results = commit_batch(session, prepared, routing=self._routing)
            except IngestUnavailableError:
                raise
            except Exception:  # a bug in the batch path: the one-by-one path has its own boundary
                log.exception("batch ingest failed unexpectedly; ingesting one by one")
                results = None
            if results is not None:
                return results
            with self._lock:
                self._counts["batch_fallbacks"] += 1
        return [self._ingest_one(r.item) for r in batch]

    def _until_done(self, step: Callable[[], _T]) -> _T | _Stopped:
        """Run ``step`` until it stops raising ``IngestUnavailableError`` (backoff), or until stop."""
        delay = _RETRY_MIN_S
        while True:
            try:
                return step()
            except IngestUnavailableError as exc:
                with self._lock:
                    self._counts["retries"] += 1
                    self._last_error = str(exc)[:500]
                log.warning("ingest unavailable, retrying in %.1fs: %s", delay, exc)
                if self._stop.wait(delay):
                    return STOPPED
                delay = min(delay * 2, _RETRY_MAX_S)

    def _ack(self, batch: Sequence[_Received]) -> None:
        with self._lock:
            live = self._connected
            current = [r for r in batch if r.item.qos > 0 and live and r.generation == self._generation]
            self._counts["acked"] += len(current)
            self._counts["not_acked"] += sum(1 for r in batch if r.item.qos > 0) - len(current)
            client = self._client
        for r in current:
            client.ack(r.item.mid, r.item.qos)

    def _run_prepare(self) -> None:
        """Stage 1 thread: takes what has arrived, prepares it while stage 2 commits the last batch."""
        while not self._stop.is_set():
            batch = self._inbox.take(self._settings.ingest_batch_max, timeout=0.2)
            if not batch:
                continue
            prepared = self._until_done(functools.partial(self._prepare, batch))
            if isinstance(prepared, _Stopped):
                self._inbox.release(batch)
                return
            while not self._stop.is_set():
                try:
                    self._prepared.put((batch, prepared), timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _run_commit(self) -> None:
        """Stage 2 thread: commit each prepared batch, in order, then ack its messages in order."""
        while not self._stop.is_set():
            try:
                batch, prepared = self._prepared.get(timeout=0.2)
            except queue.Empty:
                continue
            results = self._until_done(functools.partial(self._commit, batch, prepared))
            if isinstance(results, _Stopped):
                self._inbox.release(batch)
                return  # not committed: the messages stay unacked and come back
            with self._lock:
                for result in results:
                    self._counts[result.outcome.value] += 1
                self._counts["batches"] += 1
                self._last_message_at = datetime.now(UTC)
            self._ack(batch)
            self._inbox.release(batch)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        s = self._settings
        with self._lifecycle:
            self._stop.clear()
            self._workers = [
                threading.Thread(target=self._run_prepare, name="citywatch-ingest-prepare", daemon=True),
                threading.Thread(target=self._run_commit, name="citywatch-ingest-commit", daemon=True),
            ]
            for worker in self._workers:
                worker.start()
            self._connect_async(self._client, self._v5)
            self._client.loop_start()
        log.info("MQTT ingest started: %s:%d as %r", s.mqtt_host, s.mqtt_port, s.mqtt_client_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand, then disconnect; queued, unacked messages stay with the broker."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout)
            if worker.is_alive():
                log.error("ingest thread %s still busy after %.0fs; leaving it", worker.name, timeout)
        self._workers = []
        with self._lifecycle:
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
                "protocol": "5" if self._v5 else "3.1.1",
                "events_ingested": sum(counts[o.value] for o in _INGESTED),
                "dead_letters": counts[IngestOutcome.dead_letter.value],
                "counts": counts,
                "queued": self._inbox.qsize() + self._prepared.qsize(),
                "inbox": self._inbox.stats(),
                "last_message_at": self._last_message_at,
                "last_error": self._last_error,
            }
