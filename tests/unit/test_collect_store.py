"""The collection on disk (detector/collect/record.py, store.py): the sidecar, atomic writes, budget, age."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from detector.collect.record import (
    CollectError,
    FrameRecord,
    Label,
    Prediction,
    Review,
    frame_id,
    read_record,
    utc_ms,
    write_record,
)
from detector.collect.store import DAY_S, CollectionStore

NOW = 1_780_000_000.0
DESIGN_SIDECAR: dict[str, Any] = {
    "version": 1,
    "id": "cam-01-20260601T020000000-near_threshold",
    "stream": "cam-01",
    "captured_at": "2026-06-01T02:00:00.000Z",
    "width": 1280,
    "height": 720,
    "reasons": ["near_threshold", "case", "corrected"],
    "model": {"name": "citywatch-synth", "version": "1.2.0", "sha256": "ab" * 32},
    "predictions": [
        {"label": "vehicle", "xyxy": [1, 2, 3, 4], "score": 0.41, "model": "citywatch-synth@1.2.0"}
    ],
    "violation_id": "v-0123456789abcdef01234567",
    "review": {
        "verdict": "corrected",
        "case_id": 12,
        "reason": None,
        "label": "vehicle",
        "xyxy": [10, 20, 30, 40],
        "by": "reviewer:reviewer-1",
        "at": "2026-06-02T08:00:00Z",
    },
    "labels": [{"label": "vehicle", "xyxy": [10, 20, 30, 40]}],
    "labelled_by": "label-studio",
}


def record(ts: float, reason: str = "uniform", stream: str = "cam", **extra: Any) -> FrameRecord:
    return FrameRecord(
        id=frame_id(stream, ts, reason),
        stream=stream,
        captured_at=utc_ms(ts),
        width=64,
        height=48,
        reasons=[reason],  # type: ignore[list-item]
        **extra,
    )


# ------------------------------------------------------------------ the sidecar
def test_the_designs_sidecar_round_trips(tmp_path: Path) -> None:
    parsed = FrameRecord.model_validate(DESIGN_SIDECAR)
    assert parsed.pinned
    path = tmp_path / "x.json"
    write_record(path, parsed)
    again = json.loads(path.read_text())
    assert again["captured_at"] == "2026-06-01T02:00:00.000Z"
    assert read_record(path) == parsed
    assert again["predictions"][0]["xyxy"] == [1.0, 2.0, 3.0, 4.0]
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version"),
        ({"reasons": []}, "reasons"),
        ({"reasons": ["because"]}, "reasons"),
        ({"surprise": 1}, "surprise"),
        ({"captured_at": "2026-06-01T02:00:00"}, "captured_at"),  # no zone
        ({"review": {"verdict": "maybe", "case_id": 1}}, "verdict"),
    ],
)
def test_a_bad_sidecar_is_refused_naming_the_file(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**DESIGN_SIDECAR, **change}))
    with pytest.raises(CollectError, match=message) as caught:
        read_record(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("ts", "reason", "n", "expected"),
    [
        (1_780_279_200.0, "uniform", 1, "cam-01-20260601T020000000-uniform"),
        (1_780_279_200.1239, "case", 1, "cam-01-20260601T020000123-case"),
        (1_780_279_200.1239, "case", 2, "cam-01-20260601T020000123-case-2"),
    ],
)
def test_frame_id(ts: float, reason: str, n: int, expected: str) -> None:
    assert frame_id("cam-01", ts, reason, n) == expected


def test_a_new_verdict_replaces_the_old_one() -> None:
    rec = record(NOW, "case")
    confirmed = rec.with_review(Review(verdict="confirmed", case_id=3))
    rejected = confirmed.with_review(Review(verdict="rejected", case_id=3, reason="false_positive"))
    assert confirmed.reasons == ["case", "confirmed"]
    assert rejected.reasons == ["case", "rejected"]
    assert rejected.review is not None and rejected.review.reason == "false_positive"


# ------------------------------------------------------------------ budget and age
def make_store(
    tmp_path: Path, budget: int, max_age_days: float = 30, reviewed_days: float = 365
) -> CollectionStore:
    return CollectionStore(
        tmp_path / "c", budget, max_age_days * DAY_S, reviewed_days * DAY_S, clock=lambda: NOW
    )


def fill(store: CollectionStore, rows: list[tuple[float, str]]) -> dict[float, Path]:
    """Frames at NOW - age; kind: plain, reviewed or labelled. Each frame is 1000 bytes of JPEG + sidecar."""
    out = {}
    for age, kind in rows:
        extra: dict[str, Any] = {}
        if kind == "reviewed":
            extra = {"review": Review(verdict="rejected", case_id=1), "violation_id": "v-1"}
        elif kind == "labelled":
            extra = {"labels": [Label(label="vehicle", xyxy=(1, 1, 5, 5))], "labelled_by": "yolo"}
        out[age] = store.write(record(NOW - age, **extra), b"\xff\xd8" + b"x" * 998)
    return out


def survivors(store: CollectionStore, paths: dict[float, Path]) -> list[float]:
    return sorted(age for age, p in paths.items() if p.exists() and p.with_suffix(".jpg").exists())


@pytest.mark.parametrize(
    ("rows", "frames_fit", "kept"),
    [
        # oldest unpinned go first, until the collection fits
        ([(10, "plain"), (20, "plain"), (30, "plain"), (40, "plain")], 2, [10, 20]),
        # pinned frames stay, however old; the oldest unpinned go instead
        ([(10, "plain"), (20, "plain"), (30, "reviewed"), (40, "labelled")], 3, [10, 30, 40]),
        ([(10, "plain"), (20, "reviewed"), (30, "plain"), (40, "labelled")], 2, [20, 40]),
        # over budget with pinned frames only: they stay
        ([(10, "reviewed"), (20, "labelled")], 1, [10, 20]),
        ([(10, "plain"), (20, "plain")], 5, [10, 20]),
    ],
)
def test_the_budget_deletes_the_oldest_unpinned_first(
    tmp_path: Path, rows: list[tuple[float, str]], frames_fit: int, kept: list[float]
) -> None:
    store = make_store(tmp_path, budget=1)
    paths = fill(store, rows)
    store.budget_bytes = max(e.size for e in store.entries.values()) * frames_fit
    store.enforce()
    assert survivors(store, paths) == kept
    assert store.total == sum(e.size for e in store.entries.values())
    assert store.over_budget_pinned == (len(kept) > frames_fit)


@pytest.mark.parametrize(
    ("rows", "kept"),
    [
        ([(29 * DAY_S, "plain"), (31 * DAY_S, "plain")], [29 * DAY_S]),
        (
            [(31 * DAY_S, "reviewed"), (31 * DAY_S + 1, "labelled"), (31 * DAY_S + 2, "plain")],
            [31 * DAY_S, 31 * DAY_S + 1],
        ),
        (
            [(364 * DAY_S, "reviewed"), (366 * DAY_S, "reviewed"), (366 * DAY_S + 1, "labelled")],
            [364 * DAY_S],
        ),
    ],
)
def test_age_limits(tmp_path: Path, rows: list[tuple[float, str]], kept: list[float]) -> None:
    store = make_store(tmp_path, budget=10**9)
    paths = fill(store, rows)
    deleted = store.enforce()
    assert survivors(store, paths) == kept
    assert deleted.aged == len(rows) - len(kept)


def test_a_frame_pinned_by_another_process_is_kept(tmp_path: Path) -> None:
    """`collect sync` wrote a verdict after the detector indexed the frame: read again, kept."""
    store = make_store(tmp_path, budget=1)
    paths = fill(store, [(10, "plain"), (20, "plain")])
    old = read_record(paths[20])
    write_record(paths[20], old.with_review(Review(verdict="confirmed", case_id=5)))
    store.enforce()
    assert survivors(store, paths) == [20]
    assert store.entries[paths[20]].pinned


def test_scan_rebuilds_the_index_and_skips_unreadable_sidecars(tmp_path: Path) -> None:
    store = make_store(tmp_path, budget=10**9)
    paths = fill(store, [(10, "plain"), (20, "reviewed")])
    broken = paths[10].parent / "broken.json"
    broken.write_text("{")
    fresh = make_store(tmp_path, budget=10**9)
    assert fresh.scan() == 2
    assert fresh.total == store.total
    assert {p: e.pinned for p, e in fresh.entries.items()} == {paths[10]: False, paths[20]: True}
    fresh.budget_bytes = 1
    fresh.enforce()
    assert broken.exists()  # never counted, never deleted


def test_empty_day_folders_go_with_their_last_frame(tmp_path: Path) -> None:
    store = make_store(tmp_path, budget=10**9)
    paths = fill(store, [(40 * DAY_S, "plain")])
    day = paths[40 * DAY_S].parent
    store.enforce()
    assert not day.exists()
    assert (tmp_path / "c").is_dir()


def test_predictions_keep_their_model() -> None:
    rec = record(NOW, predictions=[Prediction(label="vehicle", xyxy=(0, 0, 1, 1), score=0.3, model="m@1")])
    assert FrameRecord.model_validate_json(rec.model_dump_json()).predictions[0].model == "m@1"
