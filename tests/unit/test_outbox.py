"""The durable outbox: order, backoff, bounds, and surviving a SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from detector.delivery.outbox import Outbox, OutboxError, OutboxFullError

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    box = Outbox(tmp_path / "outbox.db", max_events=100)
    yield box
    box.close()


def test_pending_in_insertion_order_and_mark_sent_deletes(outbox: Outbox) -> None:
    ids = [outbox.put(f"t/{i}", f"p{i}".encode(), 1) for i in range(10)]
    assert ids == sorted(ids) and len(set(ids)) == 10
    entries = outbox.pending(100)
    assert [e.id for e in entries] == ids
    assert [e.payload for e in entries] == [f"p{i}".encode() for i in range(10)]
    assert [e.topic for e in outbox.pending(3)] == ["t/0", "t/1", "t/2"]
    assert outbox.mark_sent(ids[3]) is True
    assert outbox.mark_sent(ids[3]) is False
    assert outbox.mark_sent_many(ids[:2]) == 2
    assert [e.id for e in outbox.pending(100)] == ids[2:3] + ids[4:]
    assert len(outbox) == 7
    assert outbox.get(ids[0]) is None and outbox.get(ids[2]) is not None


def test_ids_are_never_reused(outbox: Outbox) -> None:
    first = outbox.put("t", b"x")
    outbox.mark_sent(first)
    assert outbox.put("t", b"y") > first


def test_wal_mode_and_full_sync(outbox: Outbox) -> None:
    db = sqlite3.connect(outbox.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_attempt_backs_off_exponentially_with_a_cap(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", clock=clock)
    entry_id = box.put("t", b"x")
    delays = []
    for _ in range(9):
        delays.append(box.attempt(entry_id, "broker down") - clock.now)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    entry = box.pending(1)[0]
    assert entry.attempts == 9 and entry.last_error == "broker down"
    box.close()


def test_due_filter_and_reset_backoff(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", clock=clock)
    a, b, c = (box.put("t", bytes([i])) for i in range(3))
    box.attempt(b, "refused")
    assert [e.id for e in box.pending(10, due_before=clock.now)] == [a, c]
    clock.now += 1.0
    assert [e.id for e in box.pending(10, due_before=clock.now)] == [a, b, c]
    box.attempt(a, "refused")
    box.attempt(a, "refused")
    assert box.reset_backoff() == 2
    assert [e.id for e in box.pending(10, due_before=clock.now)] == [a, b, c]
    box.close()


def test_attempt_on_an_unknown_id_raises(outbox: Outbox) -> None:
    with pytest.raises(OutboxError, match="no entry 12345"):
        outbox.attempt(12345, "x")


def test_alarm_at_ninety_percent_and_refusal_when_full(tmp_path: Path, caplog: Any) -> None:
    alarms: list[tuple[int, int]] = []
    box = Outbox(tmp_path / "o.db", max_events=10, on_alarm=lambda n, m: alarms.append((n, m)))
    ids = [box.put("t", b"x") for _ in range(8)]
    assert alarms == []
    ids.append(box.put("t", b"x"))
    assert alarms == [(9, 10)]
    assert "90% full" in caplog.text
    ids.append(box.put("t", b"x"))
    assert alarms == [(9, 10)]  # raised once, not on every put
    with pytest.raises(OutboxFullError, match=r"full: 10 events .* NOT stored") as info:
        box.put("t", b"lost?")
    assert info.value.count == 10 and info.value.max_events == 10
    assert len(box) == 10  # nothing dropped, nothing added
    box.mark_sent_many(ids[:4])  # down to 6: below the re-arm level (80 % of 9)
    for _ in range(3):
        box.put("t", b"x")
    assert alarms == [(9, 10), (9, 10)]
    box.close()


def test_a_failing_alarm_callback_does_not_lose_the_event(tmp_path: Path) -> None:
    def boom(n: int, m: int) -> None:
        raise RuntimeError("pager down")

    box = Outbox(tmp_path / "o.db", max_events=1, on_alarm=boom)
    box.put("t", b"x")
    assert len(box) == 1
    box.close()


@pytest.mark.parametrize(
    ("topic", "payload", "qos"),
    [("", b"x", 1), ("t", "text", 1), ("t", b"x", 3), (None, b"x", 1)],
)
def test_bad_put_arguments_raise(outbox: Outbox, topic: Any, payload: Any, qos: Any) -> None:
    with pytest.raises(OutboxError):
        outbox.put(topic, payload, qos)
    assert len(outbox) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_events": 0},
        {"alarm_ratio": 0.0},
        {"backoff_base_s": 0.0},
        {"backoff_base_s": 10, "backoff_cap_s": 5},
    ],
)
def test_bad_settings_raise(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(OutboxError):
        Outbox(tmp_path / "o.db", **kwargs)


def test_a_file_that_is_not_a_database_raises(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="not a usable SQLite database"):
        Outbox(path)


def test_survives_close_and_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        ids = [box.put("t", bytes([i])) for i in range(5)]
        box.attempt(ids[0], "x")
    with Outbox(tmp_path / "o.db") as box:
        entries = box.pending(10)
        assert [e.id for e in entries] == ids and entries[0].attempts == 1


def test_concurrent_puts_from_threads(outbox: Outbox) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            entry_id = outbox.put(f"t/{n}", f"{n}-{i}".encode())
            with lock:
                got.append(entry_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 80 and len(outbox) == 80


_WRITER = textwrap.dedent(
    """
    import sys
    from detector.delivery.outbox import Outbox
    box = Outbox(sys.argv[1], max_events=1_000_000)
    i = 0
    while True:
        entry_id = box.put("citywatch/v1/violations/cam-1", b"event-%d" % i, 1)
        print(entry_id, i, flush=True)   # printed only after put() returned: the caller may now publish
        i += 1
    """
)


def test_every_put_that_returned_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert proc.stdout is not None
    acknowledged: dict[int, int] = {}
    try:
        for line in proc.stdout:
            entry_id, i = map(int, line.split())
            acknowledged[entry_id] = i
            if len(acknowledged) >= 200:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with Outbox(path, max_events=1_000_000) as box:
        stored = {e.id: e.payload for e in box.pending(1_000_000)}
    assert len(acknowledged) == 200
    for entry_id, i in acknowledged.items():
        assert stored[entry_id] == b"event-%d" % i
    assert list(stored) == sorted(stored)
