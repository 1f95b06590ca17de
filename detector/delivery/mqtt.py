"""MQTT behind a small interface: :class:`Communicator` and its paho-mqtt 2.x implementation.

:class:`PahoCommunicator`: ``connect_async`` + ``loop_start``, reconnect forever (1..10 s),
MQTT 5 with a fallback to 3.1.1 when the broker refuses v5, a retained last will ``offline`` on
``citywatch/v1/status/{worker}`` and a retained ``online`` after each connect.
``publish(..., on_ack=...)`` calls ``on_ack(reason_code, reason)`` on the broker's PUBACK (a code
>= 0x80 is a refusal, MQTT 5 only). Thread-safe; callbacks run on paho's network thread.
"""

from __future__ import annotations

import abc
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from detector.contracts.errors import DetectorError
from detector.contracts.events import TOPIC_PREFIX, status_topic

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(f"{__name__}.paho")

AckCallback = Callable[[int, str], None]
"""``on_ack(reason_code, reason)``: the broker answered; ``reason_code >= 0x80`` means refused."""

UNSUPPORTED_PROTOCOL: Final = 132  # MQTT 5 CONNACK reason; paho maps a v3 CONNACK rc=1 onto it


class MqttError(DetectorError):
    """Base class of the MQTT errors raised by citywatch."""


class MqttConfigError(MqttError):
    """The MQTT settings cannot work (bad TLS files, bad values)."""


class MqttPublishError(MqttError):
    """A message could not be handed to the MQTT client."""


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    worker: str = "detector-1"
    client_id: str | None = None  # default: the worker name
    topic_prefix: str = TOPIC_PREFIX
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None  # client certificate (mutual TLS)
    keyfile: str | None = None
    tls_insecure: bool = False  # skip host name checks: test brokers only
    keepalive_s: int = 30
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    clean_session: bool = True
    session_expiry_s: int = 86_400  # MQTT 5, when clean_session is False
    max_inflight: int = 64
    reconnect_min_s: int = 1
    reconnect_max_s: int = 10  # after a broker outage, at most this long until the outbox drains
    max_packet_bytes: int = 1 << 20  # MQTT 5: the broker sends nothing larger (commands are ~1 KiB)

    def check(self) -> None:
        """Raise :class:`MqttConfigError` naming every bad value."""
        rules = [
            (0 < self.port < 65536, f"port must be 1..65535, got {self.port}"),
            (self.keepalive_s >= 5, f"keepalive_s must be >= 5, got {self.keepalive_s}"),
            (0 < self.max_inflight < 65536, f"max_inflight must be 1..65535, got {self.max_inflight}"),
            (0 < self.reconnect_min_s <= self.reconnect_max_s, "need 0 < reconnect_min_s <= reconnect_max_s"),
            (self.keyfile is None or self.certfile is not None, "keyfile given without certfile"),
            (1024 <= self.max_packet_bytes <= 268_435_455, "max_packet_bytes must be 1024..268435455"),
        ]
        bad = [msg for ok, msg in rules if not ok]
        if bad:
            raise MqttConfigError("bad MQTT settings: " + "; ".join(bad))


@dataclass(frozen=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: tuple[tuple[str, str], ...] = ()


MessageCallback = Callable[[ReceivedMessage], None]
_PahoMessageCallback = Callable[[paho.Client, Any, paho.MQTTMessage], None]


class PublishHandle:
    """``mid``; ``error``: why the client refused the message (``None``: sent, or queued until
    connected); ``is_published()``: the broker acknowledged it."""

    def __init__(self, mid: int, error: str | None = None, info: paho.MQTTMessageInfo | None = None) -> None:
        self.mid, self.error, self._info = mid, error, info

    def is_published(self) -> bool:
        return self.error is None and self._info is not None and self._info.is_published()

    def wait(self, timeout: float) -> bool:
        """Block until acknowledged or ``timeout``; ``True`` when acknowledged."""
        deadline = time.monotonic() + timeout
        while self.error is None and not self.is_published() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.is_published()


class Communicator(abc.ABC):
    """The small MQTT interface the detector uses (cf. Frigate ``comms/base_communicator.py``)."""

    @abc.abstractmethod
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        *,
        expiry_s: int | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        content_type: str | None = None,
        on_ack: AckCallback | None = None,
    ) -> PublishHandle: ...

    @abc.abstractmethod
    def subscribe(self, topic: str, callback: MessageCallback, qos: int = 1) -> None: ...

    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @abc.abstractmethod
    def stop(self) -> None: ...


class PahoCommunicator(Communicator):
    """paho-mqtt 2.x client: reconnect forever, MQTT 5 with 3.1.1 fallback, status + last will."""

    def __init__(self, settings: MqttSettings) -> None:
        settings.check()
        self.settings = settings
        self.status_topic = status_topic(settings.worker, settings.topic_prefix)
        self._client_id = settings.client_id or settings.worker
        self._lock = threading.RLock()
        self._ack_callbacks: dict[int, AckCallback | None] = {}
        self._early_acks: dict[int, tuple[int, str]] = {}
        self._subs: dict[str, tuple[int, _PahoMessageCallback]] = {}
        self._connected = False
        self._lifecycle = threading.Lock()  # start / stop / fallback
        self._started = self._stopping = self._stopped = False
        self._unreachable = False
        v5 = settings.protocol in ("auto", "5")
        self.protocol: int = paho.MQTTv5 if v5 else paho.MQTTv311
        self._client = self._make_client(self.protocol)

    # ------------------------------------------------------------------ client setup
    def _make_client(self, protocol: int) -> paho.Client:
        s = self.settings
        kwargs: dict[str, Any] = {"client_id": self._client_id, "protocol": protocol}
        if protocol != paho.MQTTv5:
            kwargs["clean_session"] = s.clean_session
        client = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        client.suppress_exceptions = True
        client.on_log = self._on_log
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)
        client.max_inflight_messages_set(s.max_inflight)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls or s.ca_certs or s.certfile:
            try:
                client.tls_set(s.ca_certs, s.certfile, s.keyfile, ssl.CERT_REQUIRED, ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise MqttConfigError(
                    f"cannot set up MQTT TLS (ca_certs={s.ca_certs}, certfile={s.certfile}, "
                    f"keyfile={s.keyfile}): {exc}"
                ) from exc
            client.tls_insecure_set(s.tls_insecure)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        for topic, (_qos, deliver) in self._subs.items():
            client.message_callback_add(topic, deliver)
        return client

    def _connect_async(self, client: paho.Client, protocol: int) -> None:
        s = self.settings
        if protocol != paho.MQTTv5:
            return client.connect_async(s.host, s.port, s.keepalive_s)
        props = Properties(PacketTypes.CONNECT)
        props.MaximumPacketSize = s.max_packet_bytes  # a flood of huge messages never reaches us
        if not s.clean_session:  # a persistent session: the broker keeps it session_expiry_s after we go
            props.SessionExpiryInterval = s.session_expiry_s
        client.connect_async(s.host, s.port, s.keepalive_s, clean_start=s.clean_session, properties=props)

    def start(self) -> PahoCommunicator:
        """Connect in the background (returns at once; reconnects forever)."""
        with self._lifecycle, self._lock:
            if self._stopping:
                raise MqttError("this communicator was stopped; make a new PahoCommunicator")
            if self._started:
                return self
            self._started = True
            self._connect_async(self._client, self.protocol)
            self._client.loop_start()
        log.info("MQTT connecting to %s:%d as %s", self.settings.host, self.settings.port, self._client_id)
        return self

    def _fall_back_to_311(self) -> None:
        with self._lifecycle:  # never taken by paho callbacks: joining the old thread cannot deadlock
            with self._lock:
                if self._stopping or self.protocol != paho.MQTTv5:
                    return
                old = self._client
                self.protocol = paho.MQTTv311
                self._client = self._make_client(paho.MQTTv311)
                self._ack_callbacks.clear()  # nothing was acknowledged on v5: callers time out, re-send
                self._early_acks.clear()
            log.warning("MQTT broker %s:%d refuses MQTT 5; using 3.1.1", *self._where())
            old.disconnect()
            old.loop_stop()
            self._connect_async(self._client, paho.MQTTv311)
            self._client.loop_start()

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _where(self) -> tuple[str, int]:
        return self.settings.host, self.settings.port

    def _auto_v5(self) -> bool:
        return self.settings.protocol == "auto" and self.protocol == paho.MQTTv5

    @staticmethod
    def _on_log(_client: paho.Client, _ud: Any, level: int, text: str) -> None:
        quiet = level != paho.MQTT_LOG_ERR or text.startswith("Client is not connected")  # refused: retrying
        _paho_log.log(logging.DEBUG if quiet else logging.WARNING, "%s", text)

    def _on_connect_fail(self, client: paho.Client, _ud: Any) -> None:
        if client is not self._client:
            return
        with self._lock:
            first, self._unreachable = not self._unreachable, True
        log.log(
            logging.WARNING if first else logging.DEBUG, "MQTT %s:%d unreachable; retrying", *self._where()
        )

    def _on_connect(
        self, client: paho.Client, _ud: Any, flags: Any, reason: ReasonCode, _props: Properties | None
    ) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            if reason.value == UNSUPPORTED_PROTOCOL and self._auto_v5():
                threading.Thread(target=self._fall_back_to_311, name="mqtt-fallback", daemon=True).start()
                return
            hint = "check username/password, client certificate and ACLs; retrying"
            log.error("MQTT broker %s:%d refused the connection: %s (%s)", *self._where(), reason, hint)
            return
        with self._lock:
            self._connected, self._unreachable = True, False
            subs = [(topic, qos) for topic, (qos, _deliver) in self._subs.items()]
        version = "5" if self.protocol == paho.MQTTv5 else "3.1.1"
        log.info("MQTT connected to %s:%d (MQTT %s)", *self._where(), version)
        if subs:
            client.subscribe(subs)
        self.publish(self.status_topic, "online", qos=1, retain=True)

    def _on_disconnect(
        self, client: paho.Client, _ud: Any, _flags: Any, reason: ReasonCode, _props: Properties | None
    ) -> None:
        if client is not self._client:
            return
        with self._lock:
            was_connected, self._connected = self._connected, False
            stopping = self._stopping
        if was_connected and not stopping:
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting", *self._where(), reason)

    def _on_publish(
        self, client: paho.Client, _ud: Any, mid: int, reason: ReasonCode, _props: Properties | None
    ) -> None:
        if client is not self._client:
            return
        code, text = int(reason.value), str(reason)
        with self._lock:
            if mid not in self._ack_callbacks:  # the ack beat publish() back to its caller
                self._early_acks[mid] = (code, text)
                return
            callback = self._ack_callbacks.pop(mid)
        if callback is not None:
            self._call_ack(callback, code, text)

    # ------------------------------------------------------------------ API
    @staticmethod
    def _call_ack(callback: AckCallback, code: int, text: str) -> None:
        try:
            callback(code, text)
        except Exception:
            log.exception("MQTT on_ack callback failed")

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        *,
        expiry_s: int | None = None,
        user_properties: Sequence[tuple[str, str]] = (),
        content_type: str | None = None,
        on_ack: AckCallback | None = None,
    ) -> PublishHandle:
        with self._lock:
            if self._stopped:
                raise MqttPublishError(f"cannot publish to {topic}: the MQTT communicator is stopped")
            client, v5 = self._client, self.protocol == paho.MQTTv5
        props: Properties | None = None
        if v5 and (expiry_s or user_properties or content_type):
            props = Properties(PacketTypes.PUBLISH)
            if expiry_s:
                props.MessageExpiryInterval = int(expiry_s)
            if user_properties:
                props.UserProperty = [(str(k), str(v)) for k, v in user_properties]
            if content_type:
                props.ContentType = content_type
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except (ValueError, TypeError) as exc:
            raise MqttPublishError(f"cannot publish to {topic!r}: {exc}") from exc
        error: str | None = None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            error = f"MQTT client refused the message for {topic}: {paho.error_string(info.rc)}"
        else:
            with self._lock:
                early = self._early_acks.pop(info.mid, None)
                if early is None:
                    self._ack_callbacks[info.mid] = on_ack
            if early is not None and on_ack is not None:
                self._call_ack(on_ack, *early)
        return PublishHandle(int(info.mid), error, info)

    def subscribe(self, topic: str, callback: MessageCallback, qos: int = 1) -> None:
        """Subscribe now (when connected) and again after every reconnect."""

        def deliver(_client: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
            props = getattr(msg, "properties", None)
            user = tuple(getattr(props, "UserProperty", ()) or ())
            try:
                callback(ReceivedMessage(msg.topic, bytes(msg.payload), int(msg.qos), bool(msg.retain), user))
            except Exception:
                log.exception("MQTT message callback for %s failed", topic)

        with self._lock:
            self._subs[topic] = (qos, deliver)
            client, connected = self._client, self._connected
        try:
            client.message_callback_add(topic, deliver)
        except ValueError as exc:
            raise MqttError(f"cannot subscribe to {topic!r}: {exc}") from exc
        if connected:
            client.subscribe(topic, qos)

    def is_connected(self) -> bool:
        with self._lock:
            return self._connected

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (or ``timeout``); for start-up and tests."""
        deadline = time.monotonic() + timeout
        while not self.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.is_connected()

    def stop(self, timeout: float = 2.0) -> None:
        """Publish a retained ``offline`` (when connected), disconnect, stop the network thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping, connected = True, self._connected
        if connected:
            self.publish(self.status_topic, "offline", qos=1, retain=True).wait(timeout)
        with self._lifecycle:
            with self._lock:
                self._stopped, self._connected = True, False
                self._ack_callbacks.clear()
                self._early_acks.clear()
            self._client.disconnect()
            if self._started:
                self._client.loop_stop()
