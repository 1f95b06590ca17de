"""The collection on disk: atomic writes, a running size index, the budget and the age limits.

:class:`CollectionStore` is used by one thread (the collector's writer). It scans the folder once
(:meth:`scan`), then keeps the size of every frame (JPEG + sidecar) in memory as it writes, so a budget
check is a comparison, not a walk of the tree. :meth:`enforce` deletes, in this order:

1. unpinned frames older than ``max_age_s`` and pinned ones older than ``reviewed_max_age_s``
   (frame time, ``captured_at``);
2. while the collection is over ``budget_bytes``: the oldest unpinned frames (uniform, near threshold,
   disagreement and unreviewed case frames alike). Pinned frames (a desk verdict or human labels) are
   never deleted for the budget; a collection over budget with pinned frames only is reported.

Another process may pin a frame meanwhile (``citywatch collect sync``, a label import): every sidecar is
read again just before its frame is deleted, and a frame found pinned is kept.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from detector.collect.record import (
    CollectError,
    FrameRecord,
    frame_dir,
    read_record,
    sidecars,
    write_atomic,
    write_record,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DAY_S = 86400.0


@dataclass
class Entry:
    size: int
    ts: float
    pinned: bool


@dataclass
class Deleted:
    aged: int = 0
    budget: int = 0
    bytes: int = 0


@dataclass
class CollectionStore:
    """One collection folder and the index of what it holds."""

    root: Path
    budget_bytes: int
    max_age_s: float
    reviewed_max_age_s: float
    clock: Callable[[], float] = time.time
    entries: dict[Path, Entry] = field(default_factory=dict)  # sidecar path -> entry
    total: int = 0
    over_budget_pinned: bool = False

    # ------------------------------------------------------------------ index
    def scan(self) -> int:
        """Index every frame under ``root`` (start-up); returns how many. Unreadable sidecars are
        logged and left alone (never counted, never deleted)."""
        self.entries.clear()
        self.total = 0
        for path in sidecars(self.root):
            try:
                record = read_record(path)
            except CollectError as err:
                log.warning("collect: %s", err)
                continue
            self._put(path, record, _size(path.with_suffix(".jpg")) + _size(path))
        return len(self.entries)

    def _put(self, path: Path, record: FrameRecord, size: int) -> None:
        old = self.entries.get(path)
        if old is not None:
            self.total -= old.size
        self.entries[path] = Entry(size, record.ts, record.pinned)
        self.total += size

    def _drop(self, path: Path) -> int:
        entry = self.entries.pop(path, None)
        size = entry.size if entry is not None else 0
        self.total -= size
        return size

    # ------------------------------------------------------------------ writing
    def path_for(self, record: FrameRecord) -> Path:
        return frame_dir(self.root, record.stream, record.ts) / f"{record.id}.json"

    def write(self, record: FrameRecord, jpeg: bytes) -> Path:
        """The JPEG, then its sidecar (a sidecar on disk means its frame is complete); both atomic."""
        path = self.path_for(record)
        write_atomic(path.with_suffix(".jpg"), jpeg)
        write_record(path, record)
        self._put(path, record, len(jpeg) + _size(path))
        return path

    def update(self, path: Path, record: FrameRecord) -> None:
        """Rewrite the sidecar of a frame already stored."""
        write_record(path, record)
        self._put(path, record, _size(path.with_suffix(".jpg")) + _size(path))

    def exists(self, record_id: str, stream: str, ts: float) -> bool:
        path = frame_dir(self.root, stream, ts) / f"{record_id}.json"
        return path in self.entries or path.exists()

    # ------------------------------------------------------------------ retention
    @property
    def over_budget(self) -> bool:
        return self.total > self.budget_bytes

    def enforce(self) -> Deleted:
        """Age limits, then the budget (see the module docstring)."""
        out = Deleted()
        now = self.clock()
        for path, entry in list(self.entries.items()):
            limit = self.reviewed_max_age_s if entry.pinned else self.max_age_s
            if entry.ts < now - limit and self._still(path, entry, now):
                out.bytes += self._delete(path)
                out.aged += 1
        if self.over_budget:
            for path, entry in sorted(self.entries.items(), key=lambda item: (item[1].ts, str(item[0]))):
                if not self.over_budget:
                    break
                if not entry.pinned and self._still(path, entry, None):
                    out.bytes += self._delete(path)
                    out.budget += 1
        pinned_only = self.over_budget
        if pinned_only and not self.over_budget_pinned:
            log.warning(
                "collect: %s holds %.0f MiB of reviewed or labelled frames, over its budget of %.0f MiB; "
                "they are kept until collect.reviewed_max_age_days: raise collect.budget_mb or export them",
                self.root, self.total / MIB, self.budget_bytes / MIB,
            )  # fmt: skip
        self.over_budget_pinned = pinned_only
        return out

    def _still(self, path: Path, entry: Entry, now: float | None) -> bool:
        """Read the sidecar again: is the frame still to go (not pinned since, or pinned but too old)?"""
        try:
            record = read_record(path)
        except CollectError:
            if not path.exists():  # gone already (deleted by hand): forget it
                self._drop(path)
            return False
        if record.pinned and not entry.pinned:
            entry.pinned = True
            if now is None or record.ts >= now - self.reviewed_max_age_s:
                return False
        return True

    def _delete(self, path: Path) -> int:
        for p in (path.with_suffix(".jpg"), path):
            try:
                p.unlink(missing_ok=True)
            except OSError as err:
                log.warning("collect: cannot delete %s: %s", p, err)
        for folder in (path.parent, path.parent.parent):  # the day, then the stream, when empty
            try:
                folder.rmdir()
            except OSError:
                break
        return self._drop(path)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def store_for(
    root: Path, budget_mb: int, max_age_days: float, reviewed_max_age_days: float
) -> CollectionStore:
    return CollectionStore(root, budget_mb * MIB, max_age_days * DAY_S, reviewed_max_age_days * DAY_S)
