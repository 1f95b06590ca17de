"""The MQTT ingest's bounded inbox (api.ingest.inbox): the bounds hold, nothing is lost or doubled,
stale copies from an earlier connection are dropped, a blocked put gives up on stop."""

from __future__ import annotations

import threading

import pytest

from api.ingest.inbox import Inbox

# (id, max_messages, max_bytes, sizes put in a row without taking, how many fit before a put blocks)
FITS = [
    ("count bound", 3, 1000, [10, 10, 10, 10], 3),
    ("byte bound", 100, 25, [10, 10, 10], 2),
    ("exactly the byte bound", 100, 30, [10, 10, 10, 1], 3),
    ("one oversized message alone", 10, 25, [400, 1], 1),
    ("oversized behind another waits", 10, 25, [10, 400], 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("max_messages", "max_bytes", "sizes", "fit"), [pytest.param(*r[1:], id=r[0]) for r in FITS]
)
def test_puts_fit_until_a_bound_is_reached(
    max_messages: int, max_bytes: int, sizes: list[int], fit: int
) -> None:
    inbox: Inbox[int] = Inbox(max_messages, max_bytes)
    stop = threading.Event()
    stop.set()  # a put that would block returns False at once
    results = [inbox.put(i, size, 1, stop) for i, size in enumerate(sizes)]
    assert results == [True] * fit + [False] * (len(sizes) - fit)
    stats = inbox.stats()
    assert stats["held"] == fit and stats["held_bytes"] == sum(sizes[:fit])


@pytest.mark.parametrize(("bad_messages", "bad_bytes"), [(0, 10), (10, 0), (-1, -1)])
def test_bounds_must_be_positive(bad_messages: int, bad_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Inbox(bad_messages, bad_bytes)


def test_taken_messages_count_until_released() -> None:
    inbox: Inbox[str] = Inbox(2, 1000)
    stop = threading.Event()
    stop.set()
    assert inbox.put("a", 1, 1, stop) and inbox.put("b", 1, 1, stop)
    batch = inbox.take(10, timeout=0.1)
    assert [h.item for h in batch] == ["a", "b"]
    assert not inbox.put("c", 1, 1, stop)  # in a worker's hands: still held
    inbox.release(batch)
    assert inbox.put("c", 1, 1, stop)
    assert inbox.take(10, timeout=0.1)[0].item == "c"
    assert inbox.take(10, timeout=0.01) == []


# (id, generations queued, qos of each, new generation, kept items)
DROPS = [
    ("old copies go", [1, 1, 2], [1, 1, 1], 2, [2]),
    ("QoS 0 is never re-sent: kept", [1, 1, 2], [0, 1, 1], 2, [0, 2]),
    ("nothing older", [3, 3], [1, 1], 3, [0, 1]),
    ("all older", [1, 2], [1, 1], 5, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("generations", "qos", "new", "kept"), [pytest.param(*r[1:], id=r[0]) for r in DROPS]
)
def test_drop_older(generations: list[int], qos: list[int], new: int, kept: list[int]) -> None:
    inbox: Inbox[int] = Inbox(100, 10_000)
    stop = threading.Event()
    for i, gen in enumerate(generations):
        assert inbox.put(i, 10, gen, stop)
    dropped = inbox.drop_older(new, keep=lambda i: qos[i] == 0)
    assert dropped == len(generations) - len(kept)
    assert [h.item for h in inbox.take(100, timeout=0.1)] == kept
    stats = inbox.stats()
    assert stats["held"] == len(kept) and stats["held_bytes"] == 10 * len(kept)
    assert stats["stale_dropped"] == dropped


def test_a_flood_with_a_slow_consumer_never_exceeds_the_bound() -> None:
    """A producer puts 5,000 messages as fast as it can; a consumer takes batches and releases them
    slowly. The producer blocks instead of growing the inbox; every message arrives once, in order."""
    inbox: Inbox[int] = Inbox(max_messages=50, max_bytes=4000)
    stop = threading.Event()
    total = 5000
    seen: list[int] = []
    peak = [0]
    violations: list[str] = []

    def consume() -> None:
        while len(seen) < total:
            batch = inbox.take(17, timeout=1.0)
            stats = inbox.stats()
            peak[0] = max(peak[0], stats["held"])
            if stats["held"] > 50 or stats["held_bytes"] > 4000:
                violations.append(str(stats))
            seen.extend(h.item for h in batch)
            stop.wait(0.0005)  # slow: the producer runs into the bound
            inbox.release(batch)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(total):
        assert inbox.put(i, 10 + i % 90, 1, stop)
    consumer.join(60)
    assert not consumer.is_alive()
    assert seen == list(range(total))
    assert violations == []
    stats = inbox.stats()
    assert stats["high_water"] <= 50 and stats["high_water_bytes"] <= 4000
    assert stats["waits"] > 0, "the producer never had to wait: the test did not exercise the bound"
    assert stats["held"] == 0 and stats["held_bytes"] == 0


def test_a_blocked_put_gives_up_when_stopped() -> None:
    inbox: Inbox[int] = Inbox(1, 100)
    stop = threading.Event()
    assert inbox.put(0, 1, 1, stop)
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(inbox.put(1, 1, 1, stop, poll_s=0.01)))
    producer.start()
    producer.join(0.2)
    assert producer.is_alive() and result == []  # blocked: the inbox is full
    stop.set()
    producer.join(5)
    assert result == [False]
    assert inbox.stats()["held"] == 1
