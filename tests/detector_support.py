"""Test doubles of the detector side, defined once (the API's are in tests/api_support.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
