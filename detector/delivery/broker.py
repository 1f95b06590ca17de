"""A small embedded MQTT 3.1.1 broker for ``citywatch demo`` on a machine with only Python.

Not for production (use Mosquitto or EMQX there, deploy/mosquitto/README.md): it has no logins
and no ACL, so it listens on loopback only (``EmbeddedBroker`` refuses any other address), and
only ``citywatch demo`` starts it — ``citywatch run`` never does. It implements what citywatch needs, in
memory, on one asyncio loop in a background thread: CONNECT/CONNACK (an MQTT 5 CONNECT gets
"unacceptable protocol version", so paho falls back to 3.1.1), PUBLISH QoS 0/1 (QoS 2 is
accepted and delivered as QoS 1), SUBSCRIBE / UNSUBSCRIBE with ``+`` and ``#``, retained
messages, last will, PINGREQ, DISCONNECT, keep-alive timeouts, and persistent sessions
(``clean_session=False``): QoS 1 messages are queued while the subscriber is away and
unacknowledged ones are re-sent when it comes back.

amqtt was tried first (0.12.1 with paho 2.2): it lost persistent sessions on reconnect, sent
retained messages to subscriptions that do not match them and delivered a retained message
twice, so it is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

from detector.contracts.errors import DetectorError

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
MAX_PACKET: Final = 32 * 1024 * 1024
MAX_QUEUED: Final = 100_000  # per offline session; the oldest is dropped (and logged) beyond this
CONNECT_TIMEOUT_S: Final = 10.0

Message = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


class BrokerError(DetectorError):
    """The embedded broker could not start or stop."""


def is_loopback(host: str) -> bool:
    """``host`` names this machine only (127.0.0.0/8, ::1 or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _ProtocolError(DetectorError):
    """A client sent something that is not MQTT 3.1.1; its connection is closed."""


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with ``+`` (one level) and ``#`` (the rest, parent included)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def _valid_filter(topic_filter: str) -> bool:
    levels = topic_filter.split("/")
    if not topic_filter or any(("#" in lv and lv != "#") or ("+" in lv and lv != "+") for lv in levels):
        return False
    return "#" not in levels[:-1]


def _packet(first_byte: int, body: bytes = b"") -> bytes:
    n, out = len(body), bytearray([first_byte])
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out) + body


def _mqtt_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _ProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _ProtocolError("string is not UTF-8") from exc

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def done(self) -> bool:
        return self.pos >= len(self.data)


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, mult = 0, 1
    for _ in range(4):
        digit = (await reader.readexactly(1))[0]
        length += (digit & 0x7F) * mult
        if not digit & 0x80:
            break
        mult *= 128
    else:
        raise _ProtocolError("malformed remaining length")
    if length > MAX_PACKET:
        raise _ProtocolError(f"packet of {length} bytes is over the {MAX_PACKET} byte limit")
    return first >> 4, first & 0x0F, await reader.readexactly(length) if length else b""


@dataclass(eq=False)
class _Session:
    client_id: str
    clean: bool
    subs: dict[str, int] = field(default_factory=dict)
    queue: deque[Message] = field(default_factory=deque)
    inflight: OrderedDict[int, Message] = field(default_factory=OrderedDict)
    writer: asyncio.StreamWriter | None = None
    will: Message | None = None
    next_mid: int = 0

    def mid(self) -> int:
        for _ in range(65535):
            self.next_mid = self.next_mid % 65535 + 1
            if self.next_mid not in self.inflight:
                return self.next_mid
        raise _ProtocolError(f"client {self.client_id} has 65535 unacknowledged messages")


class _Core:
    """Broker state; every method runs on the broker's event loop (no locks needed)."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.retained: dict[str, tuple[bytes, int]] = {}
        self.writers: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        session: _Session | None = None
        clean_exit = False
        try:
            ptype, _flags, body = await asyncio.wait_for(_read_packet(reader), CONNECT_TIMEOUT_S)
            if ptype != CONNECT:
                raise _ProtocolError(f"first packet is type {ptype}, not CONNECT")
            session, keepalive = self._connect(_Reader(body), writer)
            while session is not None:
                timeout = keepalive * 1.5 if keepalive else None
                ptype, flags, body = await asyncio.wait_for(_read_packet(reader), timeout)
                if ptype == DISCONNECT:
                    clean_exit = True
                    break
                self._handle(session, ptype, flags, _Reader(body))
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError, _ProtocolError) as exc:
            log.debug("MQTT connection closed: %r", exc)
        finally:
            self.writers.discard(writer)
            if session is not None and session.writer is writer:
                self._gone(session, clean_exit)
            writer.close()

    def _connect(self, r: _Reader, writer: asyncio.StreamWriter) -> tuple[_Session | None, int]:
        name, level = r.text(), r.u8()
        if name not in ("MQTT", "MQIsdp") or level not in (3, 4):
            writer.write(_packet(CONNACK << 4, b"\x00\x01"))  # unacceptable protocol version
            return None, 0
        flags, keepalive = r.u8(), r.u16()
        client_id = r.text()
        clean = bool(flags & 0x02)
        will: Message | None = None
        if flags & 0x04:
            will_topic, will_payload = r.text(), r.binary()
            will = (will_topic, will_payload, min((flags >> 3) & 0x03, 1), bool(flags & 0x20))
        if not client_id:
            if not clean:
                writer.write(_packet(CONNACK << 4, b"\x00\x02"))  # identifier rejected
                return None, 0
            client_id = f"anon-{uuid.uuid4().hex[:12]}"
        old = self.sessions.get(client_id)
        if old is not None and old.writer is not None:  # take-over: close the old connection, drop its will
            old.writer.close()
            old.writer, old.will = None, None
        present = old is not None and not clean and not old.clean
        session = old if present and old is not None else _Session(client_id, clean)
        session.clean, session.writer, session.will = clean, writer, will
        self.sessions[client_id] = session
        writer.write(_packet(CONNACK << 4, bytes([1 if present else 0, 0])))
        for mid, msg in session.inflight.items():
            self._write_publish(session, msg, mid=mid, dup=True)
        while session.queue:
            self._deliver(session, *session.queue.popleft())
        return session, keepalive

    def _gone(self, session: _Session, clean_exit: bool) -> None:
        will, session.will, session.writer = session.will, None, None
        if will is not None and not clean_exit:
            self._route(*will)
        if session.clean and self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def _handle(self, session: _Session, ptype: int, flags: int, r: _Reader) -> None:
        writer = session.writer
        if writer is None:
            raise _ProtocolError("session has no connection")
        if ptype == PUBLISH:
            qos, retain = (flags >> 1) & 0x03, bool(flags & 0x01)
            topic = r.text()
            if not topic or "+" in topic or "#" in topic or qos > 2:
                raise _ProtocolError(f"bad PUBLISH to {topic!r} with QoS {qos}")
            mid = r.u16() if qos else 0
            self._route(topic, r.rest(), min(qos, 1), retain)
            if qos == 1:
                writer.write(_packet(PUBACK << 4, struct.pack("!H", mid)))
            elif qos == 2:
                writer.write(_packet(PUBREC << 4, struct.pack("!H", mid)))
        elif ptype == PUBACK:
            session.inflight.pop(r.u16(), None)
        elif ptype == PUBREL:
            writer.write(_packet(PUBCOMP << 4, struct.pack("!H", r.u16())))
        elif ptype == SUBSCRIBE:
            self._subscribe(session, writer, r)
        elif ptype == UNSUBSCRIBE:
            mid = r.u16()
            while not r.done():
                session.subs.pop(r.text(), None)
            writer.write(_packet(UNSUBACK << 4, struct.pack("!H", mid)))
        elif ptype == PINGREQ:
            writer.write(_packet(PINGRESP << 4))
        elif ptype not in (PUBREC, PUBCOMP):
            raise _ProtocolError(f"unexpected packet type {ptype}")

    def _subscribe(self, session: _Session, writer: asyncio.StreamWriter, r: _Reader) -> None:
        mid = r.u16()
        granted: list[tuple[str, int]] = []
        codes = bytearray()
        while not r.done():
            topic_filter, qos = r.text(), r.u8() & 0x03
            if _valid_filter(topic_filter):
                session.subs[topic_filter] = min(qos, 1)
                granted.append((topic_filter, min(qos, 1)))
                codes.append(min(qos, 1))
            else:
                codes.append(0x80)
        writer.write(_packet(SUBACK << 4, struct.pack("!H", mid) + bytes(codes)))
        for topic, (payload, qos) in list(self.retained.items()):
            best = max((q for f, q in granted if topic_matches(f, topic)), default=None)
            if best is not None:
                self._deliver(session, topic, payload, min(qos, best), True)

    def _route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = (payload, qos)
            else:
                self.retained.pop(topic, None)
        for session in list(self.sessions.values()):
            best = max((q for f, q in session.subs.items() if topic_matches(f, topic)), default=None)
            if best is not None:
                self._deliver(session, topic, payload, min(qos, best), False)

    def _deliver(self, session: _Session, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if session.writer is not None:
            self._write_publish(session, (topic, payload, qos, retain))
        elif qos > 0 and not session.clean:
            if len(session.queue) >= MAX_QUEUED:
                session.queue.popleft()
                log.warning(
                    "embedded broker: queue of offline client %s is full; oldest dropped", session.client_id
                )
            session.queue.append((topic, payload, qos, retain))

    def _write_publish(self, session: _Session, msg: Message, *, mid: int = 0, dup: bool = False) -> None:
        topic, payload, qos, retain = msg
        if session.writer is None:
            return
        header = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
        body = _mqtt_str(topic)
        if qos:
            mid = mid or session.mid()
            session.inflight[mid] = (topic, payload, qos, retain)
            body += struct.pack("!H", mid)
        session.writer.write(_packet(header, body + payload))


class EmbeddedBroker:
    """Runs the in-memory broker on its own thread: ``start()`` / ``stop()``, or ``with``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        if not is_loopback(host):
            raise BrokerError(
                f"the embedded MQTT broker has no logins, so it listens on loopback only, not on {host!r}: "
                "use 127.0.0.1, or run Mosquitto with the ACL of deploy/mosquitto/README.md"
            )
        self.host, self.port = host, port  # port 0: any free port, read ``port`` after start()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 5.0) -> EmbeddedBroker:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"mqtt-broker-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self._thread = None
            raise BrokerError(
                f"embedded MQTT broker cannot listen on {self.host}:{self.port}: "
                f"{self._error or 'timed out'}; is the port taken? pick another port or start Mosquitto"
            )
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except OSError as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        core = _Core()
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(core.serve, self.host, self.port, reuse_address=True)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        await self._stop.wait()
        server.close()
        for writer in list(core.writers):
            writer.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)

    def stop(self, timeout: float = 5.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise BrokerError(f"embedded MQTT broker on {self.host}:{self.port} did not stop in {timeout} s")
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def broker_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """``True`` when an MQTT broker at ``host:port`` answers a CONNECT with a CONNACK."""
    body = _mqtt_str("MQTT") + bytes([4, 0x02, 0, 10]) + _mqtt_str(f"probe-{uuid.uuid4().hex[:8]}")
    connect = _packet(CONNECT << 4, body)  # MQTT 3.1.1, clean session, keep-alive 10 s
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(connect)
            reply = sock.recv(4)
            if len(reply) >= 1 and reply[0] >> 4 == CONNACK:
                with contextlib.suppress(OSError):
                    sock.sendall(_packet(DISCONNECT << 4))
                return True
            return False
    except OSError:
        return False


def ensure_broker(host: str = "127.0.0.1", port: int = 1883) -> EmbeddedBroker | None:
    """Start an embedded broker at ``host:port`` unless a broker already answers there."""
    if broker_answers(host, port):
        log.info("MQTT broker answers at %s:%d; not starting the embedded one", host, port)
        return None
    return EmbeddedBroker(host, port).start()
