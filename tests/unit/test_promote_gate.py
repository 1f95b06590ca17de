"""The promotion gate's pure logic (training/gate.py) and which promotion a rollback undoes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from detector.contracts.history import HistoryRecord
from detector.contracts.manifest import Metrics, ModelEntry
from training import gate
from training.gate import GateFailure, compare_figures, compare_suite, holdout_mismatch
from training.promotion import rollback_target

CUR = {"mAP50": 0.90, "AP50 vehicle": 0.95, "AP50 litter": 0.80}


@pytest.mark.parametrize(
    ("candidate", "tolerance", "expected"),
    [
        (CUR, 0.02, []),  # the same figures
        ({"mAP50": 0.95, "AP50 vehicle": 0.99, "AP50 litter": 0.85}, 0.02, []),  # better everywhere
        ({"mAP50": 0.89, "AP50 vehicle": 0.94, "AP50 litter": 0.785}, 0.02, []),  # within the tolerance
        ({"mAP50": 0.88, "AP50 vehicle": 0.93, "AP50 litter": 0.78}, 0.02, []),  # exactly the tolerance
        (
            {"mAP50": 0.90, "AP50 vehicle": 0.95, "AP50 litter": 0.77},
            0.02,
            [GateFailure("AP50 litter", 0.80, 0.77, 0.03, 0.02)],
        ),
        (
            {"mAP50": 0.85, "AP50 vehicle": 0.99, "AP50 litter": 0.80},  # one class up does not buy the mAP
            0.02,
            [GateFailure("mAP50", 0.90, 0.85, 0.05, 0.02)],
        ),
        (
            {"mAP50": 0.90, "AP50 vehicle": 0.95, "AP50 litter": 0.79},
            0.0,  # no drop at all allowed
            [GateFailure("AP50 litter", 0.80, 0.79, 0.01, 0.0)],
        ),
        (
            {"mAP50": 0.90, "AP50 vehicle": 0.95},  # a class the candidate did not measure
            0.02,
            [GateFailure("AP50 litter", 0.80, None, None, 0.02)],
        ),
        ({**CUR, "AP50 stall": 0.10}, 0.02, []),  # a class only the candidate knows is not compared
        (
            {"mAP50": 0.70, "AP50 vehicle": 0.90, "AP50 litter": 0.50},
            0.1,
            [GateFailure("mAP50", 0.90, 0.70, 0.2, 0.1), GateFailure("AP50 litter", 0.80, 0.50, 0.3, 0.1)],
        ),
    ],
    ids=["same", "better", "within", "at-tolerance", "class-drop", "map-drop", "zero-tolerance",
         "class-missing", "new-class", "two-drops"],
)  # fmt: skip
def test_compare_figures(candidate: dict[str, float], tolerance: float, expected: list[GateFailure]) -> None:
    assert compare_figures(CUR, candidate, tolerance) == expected


def test_a_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        compare_figures(CUR, CUR, -0.01)


def test_figures_name_classes_and_views() -> None:
    m = Metrics.model_validate(
        {"map50": 0.9, "per_class": {"vehicle": 0.95},
         "per_view": {"street": {"map50": 0.8, "per_class": {"litter": 0.7}, "split": "test_street"}}}
    )  # fmt: skip
    assert gate.recorded_figures(m) == {
        "mAP50": 0.9,
        "AP50 vehicle": 0.95,
        "street mAP50": 0.8,
        "street AP50 litter": 0.7,
    }


def totals(failed: int = 0, false: int = 0, missed: int = 0) -> dict[str, Any]:
    return {"totals": {"failed_clips": failed, "false_cases": false, "missed_cases": missed}}


@pytest.mark.parametrize(
    ("current", "candidate", "expected"),
    [
        (totals(), totals(), []),
        (totals(1, 2, 1), totals(1, 2, 1), []),  # the same failures: not more
        (totals(2, 3, 2), totals(0, 0, 0), []),  # fewer
        (totals(0, 0, 0), totals(1, 1, 0), [GateFailure("eval-clips failed clips", 0, 1, 1, 0.0),
                                            GateFailure("eval-clips false cases", 0, 1, 1, 0.0)]),
        (totals(1, 1, 1), totals(1, 0, 3), [GateFailure("eval-clips missed cases", 1, 3, 2, 0.0)]),
    ],
    ids=["clean", "same", "fewer", "invented", "missed"],
)  # fmt: skip
def test_compare_suite(
    current: dict[str, Any], candidate: dict[str, Any], expected: list[GateFailure]
) -> None:
    assert compare_suite(current, candidate) == expected


def test_suite_clips_names_the_clips_that_only_the_candidate_fails() -> None:
    cur = {
        "clips": [
            {"name": "a", "passed": True},
            {"name": "b", "passed": False},
            {"name": "c", "passed": True},
        ]
    }
    cand = {
        "clips": [
            {"name": "a", "passed": False},
            {"name": "b", "passed": False},
            {"name": "c", "passed": True},
        ]
    }
    assert gate.suite_clips(cur, cand) == ["a"]


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        (GateFailure("AP50 litter", 0.8, 0.77, 0.03, 0.02),
         "AP50 litter: current 0.800, candidate 0.770, drop 0.030 > tolerance 0.020"),
        (GateFailure("AP50 litter", 0.8, None, None, 0.02),
         "AP50 litter: current 0.800, candidate not measured"),
        (GateFailure("eval-clips false cases", 1, 3, 2, 0.0),
         "eval-clips false cases: current 1, candidate 3, 2 added (tolerance 0)"),
        (GateFailure("holdout metrics", None, None, None, 0.02, "not measured: x"),
         "holdout metrics: not measured: x"),
    ],
)  # fmt: skip
def test_a_failure_names_figure_current_candidate_drop_and_tolerance(failure: GateFailure, text: str) -> None:
    assert failure.describe() == text


HASH_A, HASH_B = "a" * 64, "b" * 64


def entry(
    version: str, metrics: dict[str, Any] | None, data: str | None = "datasets/d/dataset.yaml"
) -> ModelEntry:
    return ModelEntry.model_validate(
        {"name": "m", "version": version, "file": f"m-{version}.pt", "imgsz": 64, "classes": ["vehicle"],
         "sha256": "c" * 64, "card": "m.md", "created": "2026-12-01T00:00:00+00:00", "metrics": metrics,
         "train_args": {"data": data} if data else None}
    )  # fmt: skip


def metrics(**over: Any) -> dict[str, Any]:
    return {"map50": 0.9, "per_class": {"vehicle": 0.9}, "split": "test", "images": 400, **over}


@pytest.mark.parametrize(
    ("cur", "cand", "expected"),
    [
        (entry("1.0.0", metrics(data_hash=HASH_A)), entry("1.1.0", metrics(data_hash=HASH_A)), None),
        # the same labels hash wins over different training datasets
        (entry("1.0.0", metrics(data_hash=HASH_A), "a.yaml"),
         entry("1.1.0", metrics(data_hash=HASH_A), "b.yaml"), None),
        (entry("1.0.0", metrics(data_hash=HASH_A)), entry("1.1.0", metrics(data_hash=HASH_B)),
         "different holdout labels"),
        (entry("1.0.0", metrics()), entry("1.1.0", metrics()), None),  # no hash: same yaml, split, images
        (entry("1.0.0", metrics()), entry("1.1.0", metrics(images=200)), "not the same holdout"),
        (entry("1.0.0", metrics(), "a.yaml"), entry("1.1.0", metrics(), "b.yaml"), "not the same holdout"),
        (entry("1.0.0", metrics(data="b.yaml"), "a.yaml"), entry("1.1.0", metrics(), "b.yaml"), None),
        (entry("1.0.0", metrics(data_hash=HASH_A)), entry("1.1.0", metrics(split="val", data_hash=HASH_A)),
         "different splits"),
        (entry("1.0.0", None), entry("1.1.0", metrics()), "no recorded metrics for m@1.0.0"),
        (entry("1.0.0", metrics(), None), entry("1.1.0", metrics(), None), "not the same holdout"),
    ],
    ids=["same-hash", "same-hash-other-train-data", "other-hash", "legacy-same", "legacy-images",
         "legacy-data", "recorded-data", "split", "no-metrics", "no-data"],
)  # fmt: skip
def test_holdout_mismatch(cur: ModelEntry, cand: ModelEntry, expected: str | None) -> None:
    why = holdout_mismatch(cur, cand)
    if expected is None:
        assert why is None
    else:
        assert why is not None and why.startswith(expected), why


def rec(action: str, frm: str | None, to: str) -> HistoryRecord:
    return HistoryRecord.model_validate(
        {"at": datetime(2026, 12, 1, tzinfo=UTC), "by": "t", "action": action, "from": frm, "to": to}
    )


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], None),
        ([rec("promote", None, "a")], None),  # the first default: nothing before it
        ([rec("promote", "a", "b")], "a"),
        ([rec("promote", "a", "b"), rec("promote", "b", "c")], "b"),
        ([rec("promote", "a", "b"), rec("promote", "b", "c"), rec("rollback", "c", "b")], "a"),
        ([rec("promote", "a", "b"), rec("rollback", "b", "a")], None),  # no redo
        ([rec("promote", "a", "b"), rec("promote", "b", "b")], "a"),  # a backend change is not undone
        ([rec("promote", "a", "b"), rec("promote", "b", "c"), rec("rollback", "c", "b"),
          rec("promote", "b", "d")], "b"),
    ],
    ids=["empty", "first", "one", "two", "after-rollback", "all-undone", "backend-only", "promote-again"],
)  # fmt: skip
def test_rollback_undoes_the_last_promotion_not_yet_undone(
    history: list[HistoryRecord], expected: str | None
) -> None:
    target = rollback_target(history)
    assert (target.from_ if target is not None else None) == expected
