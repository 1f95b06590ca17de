"""detector/delivery/snapshots.py: when a stream's snapshot is taken, its size, retained publishing."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from detector.contracts.events import parse_stream_topic, snapshot_topic, stream_topic_filter
from detector.delivery.snapshots import MAX_WIDTH, Snapshots, encode_snapshot
from tests.detector_support import RecordingComm

PREFIX = "citywatch/v1"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(width: int = 1920, height: int = 1080) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (0, 0, 255)
    return image


@pytest.mark.parametrize(
    ("size", "out"), [((1920, 1080), (640, 360)), ((640, 480), (640, 480)), ((320, 240), (320, 240))]
)
def test_encoded_snapshots_are_at_most_640_wide(size: tuple[int, int], out: tuple[int, int]) -> None:
    jpeg = encode_snapshot(frame(*size))
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert jpeg[:3] == b"\xff\xd8\xff" and (image.shape[1], image.shape[0]) == out
    assert MAX_WIDTH == 640


# (every_s, [(seconds later, state or None, taken)]): a state row only changes the state
SCHEDULES = [
    (60.0, [(0, None, True), (10, None, False), (59, None, False), (60, None, True), (61, None, False)]),
    (60.0, [(0, "live", True), (5, None, False), (6, "stalled", None), (7, "live", None), (8, None, True),
            (9, None, False), (68, None, True)]),
    (0.0, [(0, "live", False), (100, None, False), (1000, None, False)]),
    (5.0, [(0, None, True), (4.9, None, False), (5, None, True), (10, None, True)]),
]  # fmt: skip


@pytest.mark.parametrize(("every_s", "steps"), SCHEDULES)
def test_when_snapshots_are_taken(every_s: float, steps: list[tuple[float, str | None, bool | None]]) -> None:
    clock, comm = Clock(), RecordingComm()
    snaps = Snapshots(comm, lambda _sid: every_s, topic_prefix=PREFIX, clock=clock)
    start = clock.now
    for at, state, taken in steps:
        clock.now = start + at
        if state is not None:
            snaps.on_state("cam-1", {"state": state})
        if taken is not None:
            assert snaps.on_frame("cam-1", frame(64, 36)) is taken, (at, state)
    expected = sum(1 for _, _, taken in steps if taken)
    assert len(comm.published) == expected
    for topic, data, qos, retain, content_type in comm.published:
        assert (topic, qos, retain, content_type) == (
            f"{PREFIX}/streams/cam-1/snapshot",
            1,
            True,
            "image/jpeg",
        )
        assert data[:3] == b"\xff\xd8\xff"


def test_the_latest_waits_for_the_broker_and_is_sent_again_after_a_reconnect() -> None:
    clock, comm = Clock(), RecordingComm(connected=False)
    snaps = Snapshots(comm, lambda sid: 10.0 if sid == "a" else 0.0, topic_prefix=PREFIX, clock=clock)
    assert snaps.on_frame("a", frame(64, 36))
    assert not snaps.on_frame("b", frame(64, 36))  # snapshot_s 0: never
    clock.now += 10
    assert snaps.on_frame("a", frame(32, 18))  # the newer one replaces the waiting one
    assert comm.published == []
    comm.connected = True
    snaps.send()
    assert [
        (t, cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR).shape[1])
        for t, d, *_ in comm.published
    ] == [(f"{PREFIX}/streams/a/snapshot", 32)]
    snaps.send()
    assert len(comm.published) == 1  # nothing new
    comm.connected = False
    snaps.send()
    comm.connected = True
    snaps.send()  # reconnected: the broker may have lost its retained messages
    assert len(comm.published) == 2 and snaps.published == 2


def test_a_removed_stream_has_its_snapshot_cleared() -> None:
    comm = RecordingComm()
    snaps = Snapshots(comm, lambda _sid: 60.0, topic_prefix=PREFIX, clock=Clock())
    assert snaps.on_frame("a", frame(64, 36))
    snaps.on_state("a", {"state": "removed"})
    topic, data, _qos, retain, _type = comm.published[-1]
    assert (topic, data, retain) == (f"{PREFIX}/streams/a/snapshot", b"", True)


def test_stream_topics() -> None:
    assert snapshot_topic("cam-1") == "citywatch/v1/streams/cam-1/snapshot"
    assert stream_topic_filter("snapshot", "p/v1") == "p/v1/streams/+/snapshot"
    assert parse_stream_topic("p/v1/streams/cam-1/state", "p/v1") == ("cam-1", "state")
    assert parse_stream_topic("p/v1/streams/cam-1/snapshot", "p/v1") == ("cam-1", "snapshot")
    for topic in (
        "p/v1/streams/cam-1/other",
        "p/v1/violations/cam-1",
        "q/v1/streams/a/state",
        "p/v1/streams/a/b/state",
    ):
        assert parse_stream_topic(topic, "p/v1") is None
