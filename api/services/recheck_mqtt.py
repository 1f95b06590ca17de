"""The re-check's own MQTT client: publishes commands, consumes answers (ack after commit).

A second connection beside the violation ingest (client id ``<mqtt_client_id>-recheck``), so the
two evolve apart: persistent session (``clean_session=False``), QoS 1, ``manual_ack`` — an
answer is acknowledged only once its outcome is committed, and retried with backoff while the
database is away. Reconnects forever (paho ``loop_start``). Answers wait in a bounded inbox
(``api.ingest.inbox``, the ingest's ``ingest_queue_max`` / ``ingest_queue_max_bytes``): when it is
full the network thread waits and the broker keeps the rest; after a reconnect that found the
session, copies from the old connection still queued are dropped (the broker sends them again).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session

from api.core.config import Settings
from api.errors import IngestUnavailableError
from api.ingest.inbox import Inbox
from api.ingest.service import IngestResult, record_dead_letter

log = logging.getLogger(__name__)

Handler = Callable[[Session, str, bytes], IngestResult]
_PUBLISH_TIMEOUT_S = 5.0


class RecheckMqtt:
    def __init__(self, settings: Settings, session_factory: Callable[[], Session], handler: Handler) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._handler = handler
        self._inbox: Inbox[mqtt.MQTTMessage] = Inbox(
            settings.ingest_queue_max, settings.ingest_queue_max_bytes
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._worker: threading.Thread | None = None
        self.counts: dict[str, int] = {"published": 0, "answers": 0, "retries": 0}
        self.last_error: str | None = None
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self._settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{s.mqtt_client_id}-recheck"[:128],
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        if s.mqtt_username is not None:
            password = s.mqtt_password.get_secret_value() if s.mqtt_password is not None else None
            client.username_pw_set(s.mqtt_username, password)
        ca, cert, key = (getattr(s, f, None) for f in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"))
        if getattr(s, "mqtt_tls", False) or ca or cert:
            client.tls_set(
                ca_certs=str(ca) if ca else None,
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(bool(getattr(s, "mqtt_tls_insecure", False)))
        client.reconnect_delay_set(min_delay=1, max_delay=s.mqtt_reconnect_max_delay_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            return
        with self._lock:
            self._connected = True
            self._generation += 1
            generation = self._generation
        if flags.session_present:  # the broker re-sends what the old connection left unacked
            self._inbox.drop_older(generation, keep=lambda m: m.qos == 0)
        client.subscribe(self._settings.recheck_results_topic_filter, qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _r: ReasonCode, _p: Any) -> None:
        with self._lock:
            self._connected = False
            self._generation += 1

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        # blocks (this network thread) while the inbox is full; never under self._lock
        self._inbox.put(message, len(message.payload) + len(message.topic), generation, self._stop)

    def _handle(self, message: mqtt.MQTTMessage) -> bool:
        """Handle until committed; False when asked to stop first (the answer stays unacked)."""
        delay = 0.2
        while True:
            try:
                with self._sessions() as session:
                    self._handler(session, message.topic, bytes(message.payload))
                return True
            except IngestUnavailableError as exc:
                self.counts["retries"] += 1
                self.last_error = str(exc)[:300]
            except Exception as exc:  # the consumer's boundary: a bug must not stall the queue
                log.exception("re-check answer on %s failed unexpectedly", message.topic)
                with self._sessions() as session:
                    record_dead_letter(
                        session,
                        message.topic,
                        bytes(message.payload),
                        f"internal error: {type(exc).__name__}: {exc}",
                    )
                return True
            if self._stop.wait(delay):
                return False
            delay = min(delay * 2, 30.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._inbox.take(1, timeout=0.2)
            if not batch:
                continue
            message, generation = batch[0].item, batch[0].generation
            if not self._handle(message):
                self._inbox.release(batch)
                break
            self.counts["answers"] += 1
            with self._lock:
                current = self._connected and generation == self._generation
            if current and message.qos > 0:
                self._client.ack(message.mid, message.qos)
            self._inbox.release(batch)

    def publish(self, topic: str, payload: bytes) -> bool:
        """QoS 1; True once the broker acknowledged it."""
        if not self.connected:
            return False
        info = self._client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout=_PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            self.last_error = f"publish on {topic} failed: {exc}"
            return False
        if info.is_published():
            self.counts["published"] += 1
            return True
        return False

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def start(self) -> None:
        s = self._settings
        self._stop.clear()
        self._worker = threading.Thread(target=self._run, name="citywatch-recheck-mqtt", daemon=True)
        self._worker.start()
        self._client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=s.mqtt_keepalive_s)
        self._client.loop_start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._connected = False

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            **self.counts,
            "queued": self._inbox.qsize(),
            "inbox": self._inbox.stats(),
            "last_error": self.last_error,
        }
