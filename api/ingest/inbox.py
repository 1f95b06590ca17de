"""A bounded inbox between paho's network thread and the ingest workers.

The network thread ``put``s each received message; the workers ``take`` batches and ``release``
them once handled (committed and acked, or given up). A message counts against the bounds from
``put`` until ``release`` — queued or in a worker's hands — so the messages (and bytes) the process
holds never exceed ``max_messages`` (and ``max_bytes``, except for one message larger than
``max_bytes`` alone, which is let in when nothing else is held so it can still be dead-lettered).

When the inbox is full, ``put`` blocks the network thread: paho stops reading the socket, the
broker stops getting acks, and its receive window (MQTT 5 ``Receive Maximum``, Mosquitto's
``max_inflight_messages`` for 3.1.1) holds the rest. Nothing accepted is lost: a message not yet
acked is the broker's to deliver again.

Each message carries the generation of the connection it came on. After a reconnect that found
its session (``session present``), the broker re-sends every message not acked on the old
connection, so ``drop_older`` discards the old copies still queued instead of piling them up
beside the new ones.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Held(Generic[T]):
    item: T
    size: int
    generation: int


class Inbox(Generic[T]):
    """Bounded by messages and bytes held (queued + taken, not yet released); thread-safe."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError(
                f"an inbox needs max_messages >= 1 and max_bytes >= 1, got {max_messages}, {max_bytes}"
            )
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self._queued: deque[Held[T]] = deque()
        self._held = 0
        self._held_bytes = 0
        self._cond = threading.Condition()
        self._counts = {"waits": 0, "stale_dropped": 0, "high_water": 0, "high_water_bytes": 0}

    def _fits(self, size: int) -> bool:
        if self._held == 0:
            return True  # one message on its own always fits (else an oversized one would block forever)
        return self._held < self.max_messages and self._held_bytes + size <= self.max_bytes

    def put(self, item: T, size: int, generation: int, stop: threading.Event, poll_s: float = 0.2) -> bool:
        """Queue ``item`` (``size`` bytes), blocking while the inbox is full; ``False`` when ``stop``
        was set first (the item is not queued: unacked, the broker delivers it again)."""
        with self._cond:
            waited = False
            while not self._fits(size):
                if stop.is_set():
                    return False
                if not waited:
                    self._counts["waits"] += 1
                    waited = True
                self._cond.wait(poll_s)
            self._queued.append(Held(item, size, generation))
            self._held += 1
            self._held_bytes += size
            self._counts["high_water"] = max(self._counts["high_water"], self._held)
            self._counts["high_water_bytes"] = max(self._counts["high_water_bytes"], self._held_bytes)
            self._cond.notify_all()
            return True

    def take(self, limit: int, timeout: float) -> list[Held[T]]:
        """Up to ``limit`` queued messages in arrival order (waiting up to ``timeout`` for the first);
        they stay held until :meth:`release`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._queued:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            n = min(limit, len(self._queued))
            return [self._queued.popleft() for _ in range(n)]

    def release(self, batch: list[Held[T]]) -> None:
        """The messages of ``batch`` are handled: their room goes back to ``put``."""
        with self._cond:
            self._held -= len(batch)
            self._held_bytes -= sum(h.size for h in batch)
            self._cond.notify_all()

    def drop_older(self, generation: int, keep: Callable[[T], bool] = lambda _item: False) -> int:
        """Discard queued messages from connections before ``generation`` (except those ``keep``
        says to keep); returns how many went."""
        with self._cond:
            kept: deque[Held[T]] = deque()
            dropped: list[Held[T]] = []
            for held in self._queued:
                (dropped if held.generation < generation and not keep(held.item) else kept).append(held)
            self._queued = kept
            self._held -= len(dropped)
            self._held_bytes -= sum(h.size for h in dropped)
            self._counts["stale_dropped"] += len(dropped)
            self._cond.notify_all()
            return len(dropped)

    def qsize(self) -> int:
        with self._cond:
            return len(self._queued)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "queued": len(self._queued),
                "held": self._held,
                "held_bytes": self._held_bytes,
                "max_messages": self.max_messages,
                "max_bytes": self.max_bytes,
                **self._counts,
            }
