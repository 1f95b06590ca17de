"""Test doubles of the detector side, defined once (the API's are in tests/api_support.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detector.delivery.mqtt import AckCallback, Communicator, MessageCallback, PublishHandle


class ListSink:
    """An ``EventSink`` that keeps the events in a list (no broker, no outbox)."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def publish_event(self, payload: Mapping[str, Any]) -> int:
        self.events.append(payload)
        return len(self.events)

    def publish_state(self, stream_id: str, state: Mapping[str, Any]) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        return True

    def stop(self) -> None:
        pass


@dataclass
class RecordingComm(Communicator):
    """A ``Communicator`` without a broker: records each publish as ``(topic, bytes, qos, retain,
    content_type)`` and each subscription's callback by topic; ``connected`` is the test's to switch."""

    connected: bool = True
    published: list[tuple[str, bytes, int, bool, str | None]] = field(default_factory=list)
    subs: dict[str, MessageCallback] = field(default_factory=dict)

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
        data = payload if isinstance(payload, bytes) else payload.encode()
        self.published.append((topic, data, qos, retain, content_type))
        return PublishHandle(len(self.published))

    def subscribe(self, topic: str, callback: MessageCallback, qos: int = 1) -> None:
        self.subs[topic] = callback

    def is_connected(self) -> bool:
        return self.connected

    def stop(self) -> None:
        pass
