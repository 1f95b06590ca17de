"""The outbox's only budget: once an acknowledgement empties it, the file gives the space of the
acknowledged events back to the disk (at least ``compact_bytes`` free); an outbox that still holds
an unacknowledged event is never compacted, and no event is ever dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detector.delivery.outbox import Outbox

PAYLOAD = os.urandom(256 * 1024)
EVENTS = 24  # 6 MiB of payloads


def on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


@pytest.mark.parametrize(
    ("acknowledged", "compact_bytes", "shrinks"),
    [
        (EVENTS, 1024 * 1024, True),  # emptied, enough free space: compacted
        (EVENTS - 1, 1024 * 1024, False),  # one event not acknowledged: never compacted
        (EVENTS, 64 * 1024 * 1024, False),  # emptied but under the threshold
        (EVENTS, 0, False),  # 0: never
    ],
)
def test_an_emptied_outbox_gives_acknowledged_space_back(
    tmp_path: Path, acknowledged: int, compact_bytes: int, shrinks: bool
) -> None:
    path = tmp_path / "w.sqlite3"
    with Outbox(path, compact_bytes=compact_bytes) as box:
        ids = [box.put(f"t/{i}", PAYLOAD) for i in range(EVENTS)]
        full = on_disk(path)
        assert box.mark_sent_many(ids[:acknowledged]) == acknowledged
        assert [e.id for e in box.pending(limit=EVENTS)] == ids[acknowledged:]  # nothing else went
        assert (on_disk(path) < full // 4) == shrinks
        later = box.put("t/later", PAYLOAD)
        assert later > ids[-1]  # ids are never reused, compacted or not
        assert box.get(later) is not None and box.get(later).payload == PAYLOAD  # type: ignore[union-attr]
