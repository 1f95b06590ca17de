"""A durable on-disk outbox: every event is written (and fsynced) here before it is published.

SQLite in WAL mode with ``synchronous=FULL``: when :meth:`Outbox.put` returns, the row is on
disk and survives a kill or a power cut. An entry leaves the outbox only when the broker
acknowledges it (:meth:`Outbox.mark_sent`). The outbox is bounded: at 90 % of ``max_events``
it raises an alarm (callback + log), when full :meth:`Outbox.put` raises
:class:`OutboxFullError` — it never drops an event silently.

SQLite does not shrink its file when rows go: after a long broker outage the file keeps the
size of the backlog. When an acknowledgement empties the outbox and at least ``compact_bytes``
(64 MiB) of the file is free, it is compacted (VACUUM, WAL truncated). That is the outbox's only
budget: it applies to the space of acknowledged events only, never to an unacknowledged one
(those are bounded by ``max_events``). The detector keeps no other files: its evidence JPEGs
travel inside the events (``evidence.dir`` in streams.yaml is not written by ``citywatch run``).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from detector.contracts.errors import DetectorError

log = logging.getLogger(__name__)

COMPACT_BYTES: Final = 64 * 1024 * 1024
"""Free space (acknowledged events) an emptied outbox file gives back to the disk (VACUUM)."""

AlarmCallback = Callable[[int, int], None]
"""Called as ``on_alarm(count, max_events)`` when the outbox reaches the alarm level."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    created    REAL    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_try   REAL    NOT NULL DEFAULT 0,
    last_error TEXT
)
"""
_COLUMNS: Final = "id, topic, payload, qos, created, attempts, next_try, last_error"


class OutboxError(DetectorError):
    """The outbox could not be opened or used."""


class OutboxFullError(OutboxError):
    """The outbox holds ``max_events`` unacknowledged events; nothing more is accepted."""

    def __init__(self, path: str, count: int, max_events: int) -> None:
        self.count = count
        self.max_events = max_events
        super().__init__(
            f"outbox {path} is full: {count} events wait for a broker acknowledgement "
            f"(max_events={max_events}). Check the MQTT connection (broker address, credentials, "
            "TLS) or raise max_events; the event was NOT stored."
        )


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    topic: str
    payload: bytes
    qos: int
    created: float
    attempts: int
    next_try: float
    last_error: str | None


def _entry(row: Any) -> OutboxEntry:
    return OutboxEntry(
        id=int(row[0]),
        topic=str(row[1]),
        payload=bytes(row[2]),
        qos=int(row[3]),
        created=float(row[4]),
        attempts=int(row[5]),
        next_try=float(row[6]),
        last_error=None if row[7] is None else str(row[7]),
    )


class Outbox:
    """Durable FIFO of ``(topic, payload, qos)`` waiting for a PUBACK. Thread-safe."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = 10_000,
        alarm_ratio: float = 0.9,
        on_alarm: AlarmCallback | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        compact_bytes: int = COMPACT_BYTES,
    ) -> None:
        if max_events < 1:
            raise OutboxError(f"max_events must be at least 1, got {max_events}")
        if not 0.0 < alarm_ratio <= 1.0:
            raise OutboxError(f"alarm_ratio must be in (0, 1], got {alarm_ratio}")
        if backoff_base_s <= 0 or backoff_cap_s < backoff_base_s:
            raise OutboxError(
                f"need 0 < backoff_base_s <= backoff_cap_s, got {backoff_base_s} and {backoff_cap_s}"
            )
        self.path = Path(path)
        self.max_events = max_events
        self.alarm_level = max(1, math.ceil(max_events * alarm_ratio))
        self._rearm_level = max(0, math.floor(self.alarm_level * 0.8))
        self.on_alarm = on_alarm
        self._base = backoff_base_s
        self._cap = backoff_cap_s
        self._clock = clock
        self.compact_bytes = compact_bytes
        self._lock = threading.RLock()
        self._alarmed = False
        self._db = self._open()

    # ------------------------------------------------------------------ setup
    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"cannot open outbox {self.path}: {exc}; check the directory exists and is writable"
            ) from exc
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(
                    f"outbox {self.path}: SQLite refused WAL mode (got {mode!r}); "
                    "put the outbox on a local disk"
                )
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            db.close()
            raise OutboxError(f"outbox {self.path} is not a usable SQLite database: {exc}") from exc
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def put(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Store one message durably (committed and fsynced on return); returns its id."""
        if not isinstance(topic, str) or not topic:
            raise OutboxError(f"topic must be a non-empty string, got {topic!r}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise OutboxError(f"payload must be bytes, got {type(payload).__name__}; encode it first")
        if qos not in (0, 1, 2):
            raise OutboxError(f"qos must be 0, 1 or 2, got {qos!r}")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    count = self._count()
                    if count >= self.max_events:
                        raise OutboxFullError(str(self.path), count, self.max_events)
                    cur = self._db.execute(
                        "INSERT INTO outbox (topic, payload, qos, created) VALUES (?, ?, ?, ?)",
                        (topic, bytes(payload), qos, self._clock()),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except OutboxFullError:
                log.error("outbox %s is full (%d events); refusing a message for %s", self.path, count, topic)
                raise
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot write to outbox {self.path}: {exc}") from exc
            new_id = cur.lastrowid
            if new_id is None:
                raise OutboxError(f"outbox {self.path}: SQLite returned no row id for the insert")
            fire = count + 1 >= self.alarm_level and not self._alarmed
            if fire:
                self._alarmed = True
        if fire:
            self._raise_alarm(count + 1)
        return int(new_id)

    def _raise_alarm(self, count: int) -> None:
        log.warning(
            "outbox %s is %d%% full (%d of %d events unacknowledged); is the MQTT broker reachable?",
            self.path,
            100 * count // self.max_events,
            count,
            self.max_events,
        )
        if self.on_alarm is not None:
            try:
                self.on_alarm(count, self.max_events)
            except Exception:
                log.exception("outbox alarm callback failed")

    def mark_sent(self, entry_id: int) -> bool:
        """Delete an acknowledged entry; ``False`` when it was not there."""
        return self.mark_sent_many([entry_id]) == 1

    def mark_sent_many(self, entry_ids: Iterable[int]) -> int:
        """Delete acknowledged entries in one transaction; returns how many were deleted."""
        ids = [int(i) for i in entry_ids]
        if not ids:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                deleted = 0
                for i in ids:
                    deleted += self._db.execute("DELETE FROM outbox WHERE id = ?", (i,)).rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"cannot delete from outbox {self.path}: {exc}") from exc
            remaining = self._count()
            if self._alarmed and remaining <= self._rearm_level:
                self._alarmed = False
            if deleted and remaining == 0:
                self._compact()
            return deleted

    def _compact(self) -> None:
        """The outbox is empty: give the space the acknowledged events took back to the disk when it
        is at least ``compact_bytes`` (0: never). Only ever runs with no unacknowledged event."""
        if self.compact_bytes <= 0:
            return
        try:
            page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0]) * page_size
            if free < self.compact_bytes:
                return
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # the events are safe either way; the space waits for the next time
            log.warning("outbox %s: could not give %d free bytes back to the disk: %s", self.path, free, exc)
            return
        log.info(
            "outbox %s: empty again, %d bytes of acknowledged events given back to the disk", self.path, free
        )

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed tries: base * 2**(attempts-1), capped."""
        if attempts <= 0:
            return 0.0
        return float(min(self._cap, self._base * 2.0 ** min(attempts - 1, 62)))

    def attempt(self, entry_id: int, error: str) -> float:
        """Record a failed try: bump ``attempts``, set ``next_try`` by exponential backoff.

        Returns the new ``next_try`` (epoch seconds); raises :class:`OutboxError` for an unknown id.
        """
        with self._lock:
            try:
                row = self._db.execute("SELECT attempts FROM outbox WHERE id = ?", (entry_id,)).fetchone()
                if row is None:
                    raise OutboxError(f"outbox {self.path} has no entry {entry_id} (already acknowledged?)")
                attempts = int(row[0]) + 1
                next_try = self._clock() + self.backoff(attempts)
                self._db.execute(
                    "UPDATE outbox SET attempts = ?, next_try = ?, last_error = ? WHERE id = ?",
                    (attempts, next_try, str(error)[:2000], entry_id),
                )
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot update outbox {self.path}: {exc}") from exc
            return next_try

    def reset_backoff(self) -> int:
        """Make every entry due now (after a reconnect); returns how many were waiting."""
        with self._lock:
            try:
                return self._db.execute("UPDATE outbox SET next_try = 0 WHERE next_try > 0").rowcount
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot update outbox {self.path}: {exc}") from exc

    # ------------------------------------------------------------------ reading
    def pending(self, limit: int = 100, *, due_before: float | None = None) -> list[OutboxEntry]:
        """Up to ``limit`` entries in insertion order; only those due by ``due_before`` when given."""
        if limit <= 0:
            return []
        sql = f"SELECT {_COLUMNS} FROM outbox"
        args: tuple[float | int, ...] = ()
        if due_before is not None:
            sql += " WHERE next_try <= ?"
            args = (due_before,)
        sql += " ORDER BY id LIMIT ?"
        with self._lock:
            try:
                rows = self._db.execute(sql, (*args, limit)).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        return [_entry(r) for r in rows]

    def get(self, entry_id: int) -> OutboxEntry | None:
        """The entry with this id, or ``None`` when it has been acknowledged (or never existed)."""
        with self._lock:
            try:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (entry_id,)).fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        return None if row is None else _entry(row)

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def count(self) -> int:
        with self._lock:
            try:
                return self._count()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc

    def depth(self) -> tuple[int, float | None]:
        """How many entries wait for an acknowledgement, and when the oldest was stored (None: empty)."""
        with self._lock:
            try:
                count, oldest = self._db.execute("SELECT COUNT(*), MIN(created) FROM outbox").fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        return int(count), None if oldest is None else float(oldest)

    def __len__(self) -> int:
        return self.count()
