from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from detector.rules.tracker import FrameClock, FrameTimeError, Tracker, TrackerError
from tests.unit.factories import FRAME, every, make_detections, shifted

CAR = [100.0, 300.0, 260.0, 400.0]
CAR2 = [600.0, 300.0, 760.0, 400.0]
CUT = [100.0, 300.0, 260.0, 360.0]  # CAR with its lower 40 % hidden by a passing car (IoU 0.6)

Frame = tuple[float, list[list[float]], list[str]]


def _ids(tracker: Tracker, frames: Sequence[Frame]) -> list[list[int]]:
    out = []
    for ts, boxes, classes in frames:
        dets = tracker.update(make_detections(boxes, classes=classes), ts, FRAME)
        assert dets.tracker_id is not None
        out.append(dets.tracker_id.tolist())
    return out


def _still(times: Sequence[float], box: list[float] = CAR, cls: str = "vehicle") -> list[Frame]:
    return [(t, [box], [cls]) for t in times]


def _empty(times: Sequence[float]) -> list[Frame]:
    return [(t, [], []) for t in times]


@pytest.mark.parametrize(
    ("name", "frames", "expected_last"),
    [
        ("still car, 2 s samples", _still(every(0, 20)), [1]),
        (
            "two cars keep their ids when listed in the other order",
            [
                (0, [CAR, CAR2], ["vehicle", "vehicle"]),
                (2, [CAR2, CAR], ["vehicle", "vehicle"]),
            ],
            [2, 1],
        ),
        (
            "slow car moving 30 px per sample stays one track",
            [(t, [shifted(CAR, dx=15 * t)], ["vehicle"]) for t in every(0, 20)],
            [1],
        ),
        (
            "occluded 60 s, re-acquired within max_age",
            _still([0, 2]) + _empty(every(4, 62)) + _still([64]),
            [1],
        ),
        (
            "gone 130 s of frames: beyond max_age, new id",
            _still([0, 2]) + _empty(every(4, 132)) + _still([134]),
            [2],
        ),
        ("no frames for 10 min: a gap is not absence", _still([0, 2]) + _still([602]), [1]),
        (
            "partial occlusion: small box, centre close",
            [*_still([0, 2]), (4, [[150, 330, 210, 400]], ["vehicle"])],
            [1],
        ),
        ("other label at the same place is a new track", [*_still([0, 2]), (4, [CAR], ["litter"])], [2]),
        ("far away, same label: new track", [*_still([0, 2]), (4, [shifted(CAR, dx=400)], ["vehicle"])], [2]),
    ],
)
def test_track_ids(name: str, frames: list[Frame], expected_last: list[int]) -> None:
    assert _ids(Tracker(), frames)[-1] == expected_last, name


def test_ids_are_deterministic_and_monotonic() -> None:
    frames: list[Frame] = [
        (0, [CAR], ["vehicle"]),
        (2, [CAR, CAR2], ["vehicle", "vehicle"]),
        (4, [CAR2, [400, 100, 450, 150]], ["vehicle", "litter"]),
    ]
    first = _ids(Tracker(), frames)
    assert first == _ids(Tracker(), frames) == [[1], [1, 2], [2, 3]]


def test_intermittent_detection_with_sparse_samples() -> None:
    """A car seen on every third 2 s sample keeps one track and stays stationary."""
    tracker = Tracker()
    ids = set()
    for i, ts in enumerate(every(0, 120)):
        dets = make_detections([CAR] if i % 3 == 0 else [])
        out = tracker.update(dets, ts, FRAME)
        if out.tracker_id is not None:
            ids |= set(out.tracker_id.tolist())
    (track,) = tracker.tracks.values()
    assert ids == {1}
    assert (track.stationary, track.stationary_since, track.first_seen, track.last_seen) == (True, 0, 0, 120)
    assert track.hits == 21


@pytest.mark.parametrize(
    ("boxes", "stationary", "since"),
    [
        ([CAR], False, 0),  # one sample cannot tell
        ([CAR, CAR], True, 0),
        ([CAR, shifted(CAR, 4, 2), shifted(CAR, -3, 1)], True, 0),  # jitter
        ([CAR, shifted(CAR, 40), shifted(CAR, 80)], False, 4),  # passing: the anchor restarts
        ([CAR, shifted(CAR, 60), shifted(CAR, 60)], True, 2),  # moved once, then parked
        # cut short for one sample (a passing car): held back, the dwell keeps running from 0
        ([CAR, CAR, CUT, CAR, CAR], True, 0),
        ([CAR, CUT, CAR], True, 0),
        ([CAR, CAR, CUT], False, 0),  # the held sample itself is not taken as stationary
        ([CAR, CUT, CUT], True, 2),  # two samples at the new place: it moved there at the first
        ([CAR, CUT, shifted(CAR, 40)], False, 4),  # two different places: moving, from now
        ([CAR, CUT, CAR, CUT, CAR], True, 0),  # occluded now and then
    ],
)
def test_stationary(boxes: list[list[float]], stationary: bool, since: float) -> None:
    tracker = Tracker()
    for i, box in enumerate(boxes):
        tracker.update(make_detections([box]), 2.0 * i, FRAME)
    track = tracker.tracks[1]
    assert (track.stationary, track.stationary_since) == (stationary, since)


def test_score_history_and_boxes() -> None:
    tracker = Tracker(score_window=5)
    for i, score in enumerate([0.9, 0.1, 0.8, 0.85, 0.2, 0.9, 0.88]):
        tracker.update(make_detections([CAR], scores=score), 2.0 * i, FRAME)
    track = tracker.tracks[1]
    assert list(track.scores) == pytest.approx([0.8, 0.85, 0.2, 0.9, 0.88])
    assert track.score_median == pytest.approx(0.85)
    assert track.score_top == pytest.approx(0.9)
    assert [ts for ts, _ in track.boxes] == [0, 2, 4, 6, 8, 10, 12]
    assert tracker.seen_at(12.0) == [track]


def test_labels_from_data() -> None:
    dets = make_detections([CAR], classes="car")
    dets.data["label"] = np.array(["vehicle"], dtype=object)
    out = Tracker().update(dets, 0.0, FRAME)
    assert out.data["label"].tolist() == ["vehicle"]
    assert out.data["class_name"].tolist() == ["car"]


def test_empty_frames() -> None:
    out = Tracker().update(make_detections([]), 0.0, FRAME)
    assert len(out) == 0 and out.tracker_id is not None


@pytest.mark.parametrize(
    ("kwargs", "times"),
    [
        ({}, [10.0, 9.0]),
        ({}, [float("nan")]),
        ({"max_age_s": -1}, []),
        ({"match_iou": 0}, []),
        ({"max_gap_s": 0}, []),
        ({"score_window": 0}, []),
    ],
)
def test_bad_input(kwargs: dict[str, float], times: list[float]) -> None:
    with pytest.raises(TrackerError):
        tracker = Tracker(**kwargs)  # type: ignore[arg-type]
        for ts in times:
            tracker.update(make_detections([CAR]), ts, FRAME)


def test_same_timestamp_is_allowed() -> None:
    tracker = Tracker()
    tracker.update(make_detections([CAR]), 5.0, FRAME)
    out = tracker.update(make_detections([CAR]), 5.0, FRAME)
    assert out.tracker_id is not None and out.tracker_id.tolist() == [1]


@pytest.mark.parametrize(
    ("max_gap_s", "times", "counted"),
    [
        (None, [0, 2, 4, 6], [0, 2, 2, 2]),
        (None, [0, 2, 4, 6, 606], [0, 2, 2, 2, 6]),  # an outage counts 3 usual intervals
        (None, [0, 60, 120, 180], [0, 60, 60, 60]),  # sparse streams count their own rhythm
        (None, [0, 2, 2, 4], [0, 2, 0, 2]),
        (30.0, [0, 2, 4, 604], [0, 2, 2, 30]),
        (None, [5, 4], FrameTimeError),
        (None, [float("nan")], FrameTimeError),
        (-1.0, [], TrackerError),
    ],
)
def test_frame_clock(max_gap_s: float | None, times: list[float], counted: object) -> None:
    if isinstance(counted, list):
        clock = FrameClock(max_gap_s)
        assert [clock.tick(t) for t in times] == counted
        return
    with pytest.raises(counted):  # type: ignore[call-overload]
        clock = FrameClock(max_gap_s)
        for t in times:
            clock.tick(t)
