"""`citywatch dataset build`: labelled and desk-reviewed frames → a YOLO dataset split by camera and day."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from detector.contracts.frames import FrameRecord
from training.dataset_build import assign_splits, build, record_boxes
from training.dataset_cli import main as cli_main
from training.errors import DatasetError

W, H = 200, 100
M = "citywatch-synth@1.2.0"
CAR = {"label": "vehicle", "xyxy": [10.0, 10.0, 50.0, 40.0], "score": 0.9, "model": M}
STALL = {"label": "vendor", "xyxy": [100.0, 20.0, 160.0, 80.0], "score": 0.6, "model": M}
LOW = {"label": "litter", "xyxy": [170.0, 70.0, 190.0, 90.0], "score": 0.3, "model": M}
PERSON = {"label": "person", "xyxy": [60.0, 10.0, 80.0, 60.0], "score": 0.8, "model": "yolov8n-coco@1.0.0"}


def frame(folder: Path, stream: str, day: str, n: int, **record: Any) -> Path:
    """One collected frame: a JPEG and its sidecar, as the detector writes them."""
    fid = f"{stream}-{day.replace('-', '')}T1000{n:05d}-case"
    where = folder / stream / day
    where.mkdir(parents=True, exist_ok=True)
    img = np.full((H, W, 3), 40 + n % 200, np.uint8)
    cv2.imwrite(str(where / f"{fid}.jpg"), img)
    side = {
        "version": 1, "id": fid, "stream": stream, "captured_at": f"{day}T02:00:00.000Z", "width": W,
        "height": H, "reasons": ["case"], "model": {"name": "citywatch-synth", "version": "1.2.0"},
        "predictions": [CAR, STALL, LOW], "violation_id": f"v{n}", "review": None, "labels": None,
        "labelled_by": None, **record,
    }  # fmt: skip
    (where / f"{fid}.json").write_text(json.dumps(side))
    return where / f"{fid}.json"


def labels_of(out: Path, name: str) -> list[list[float]]:
    found = list(out.glob(f"labels/*/{name}.txt"))
    assert len(found) == 1, found
    return [[float(v) for v in line.split()] for line in found[0].read_text().splitlines()]


STALL_CASE = {"case_id": 7, "case_label": "vendor", "case_xyxy": [100.0, 20.0, 160.0, 80.0]}
REJECT_STALL = {"verdict": "rejected", "reason": "false_positive", **STALL_CASE}
CORRECT_STALL = {"verdict": "corrected", "label": "litter", "xyxy": [105.0, 50.0, 150.0, 90.0], **STALL_CASE}


@pytest.mark.parametrize(
    ("review", "labels", "corrected", "negatives"),
    [
        ({"verdict": "confirmed", "case_id": 7}, {"vehicle", "vendor"}, 0, 0),
        (REJECT_STALL, {"vehicle"}, 0, 1),
        (CORRECT_STALL, {"vehicle", "litter"}, 1, 0),
        # no box given: the predictions of the case's label are the case's
        (
            {"verdict": "rejected", "case_id": 7, "reason": "false_positive", "case_label": "vendor"},
            {"vehicle"},
            0,
            1,
        ),
        # the object was there, only the violation was not: its box stays
        ({**REJECT_STALL, "reason": "out_of_scope"}, {"vehicle", "vendor"}, 0, 0),
    ],
)
def test_record_boxes_apply_the_verdict(
    review: dict[str, Any], labels: set[str], corrected: int, negatives: int
) -> None:
    record = FrameRecord.model_validate(
        {"id": "f", "stream": "cam-a", "captured_at": "2026-06-01T02:00:00Z", "width": W, "height": H,
         "reasons": ["case"], "predictions": [CAR, STALL, LOW, PERSON], "review": review}
    )  # fmt: skip
    boxes, counts = record_boxes(record, 0.5)
    # the 0.3 litter prediction is below --pseudo-conf; a COCO person (a veto) is no class of a dataset
    assert {b.label for b in boxes} == labels
    assert (counts.replaced, counts.removed) == (corrected, negatives)


@pytest.mark.parametrize("groups", [3, 5, 12])
def test_splits_keep_each_camera_day_whole(groups: int) -> None:
    counts = {f"cam-{g}/2026-06-0{g % 9 + 1}": 10 + g for g in range(groups)}
    out = assign_splits(counts, counts, {"test": 0.2, "val": 0.1}, seed=3)
    assert set(out) == set(counts)
    assert {"train", "test"} <= set(out.values())
    assert out == assign_splits(counts, counts, {"test": 0.2, "val": 0.1}, seed=3)  # deterministic


def test_a_single_camera_day_cannot_be_split() -> None:
    with pytest.raises(DatasetError, match="at least 2"):
        assign_splits(["cam-1/2026-06-01"], {"cam-1/2026-06-01": 5}, {"test": 0.2}, seed=0)


def test_build_holds_corrections_and_negatives_split_by_camera_and_day(tmp_path: Path) -> None:
    col = tmp_path / "collect"
    n = 0
    for cam in ("cam-a", "cam-b", "cam-c"):
        for day in ("2026-06-01", "2026-06-02"):
            for _ in range(3):
                n += 1
                frame(col, cam, day, n, review={"verdict": "confirmed", "case_id": n})
    rejected = frame(col, "cam-a", "2026-06-01", 100, review=REJECT_STALL)
    corrected = frame(col, "cam-b", "2026-06-02", 101, review=CORRECT_STALL)
    labelled = frame(col, "cam-c", "2026-06-01", 102, labels=[], labelled_by="label-studio")
    frame(col, "cam-c", "2026-06-01", 103)  # neither labelled nor reviewed: left out

    out = tmp_path / "ds"
    result = build(out, [col], fractions={"test": 0.2, "val": 0.1})
    card = result.card
    assert card["corrections"] == 1 and card["negatives"] == 1
    assert card["left_out"] == {"neither labelled nor reviewed": 1}
    assert sum(card["images"].values()) == 18 + 3
    # every camera-day in exactly one split
    days = [d for s in ("train", "val", "test") for d in card["camera_days"][s]]
    assert len(days) == len(set(days)) == 6
    assert card["camera_days"]["test"] and card["camera_days"]["train"]

    data = yaml.safe_load((out / "dataset.yaml").read_text())
    names = data["names"]
    vendor_id = next(i for i, n in names.items() if data["rule_labels"].get(n) == "vendor")
    litter_id = next(i for i, n in names.items() if data["rule_labels"].get(n) == "litter")
    assert [r[0] for r in labels_of(out, rejected.stem)] == [0]  # the rejected stall is gone, the car stays
    fixed = labels_of(out, corrected.stem)
    assert sorted(r[0] for r in fixed) == sorted([0, litter_id]) and vendor_id not in [r[0] for r in fixed]
    lit = next(r for r in fixed if r[0] == litter_id)
    assert lit[1:] == pytest.approx([127.5 / W, 70.0 / H, 45.0 / W, 40.0 / H], abs=1e-5)
    assert labels_of(out, labelled.stem) == []  # labelled as empty: a pure negative
    assert (out / "CARD.md").read_text().count("cam-") >= 3

    again = build(tmp_path / "ds2", [col], fractions={"test": 0.2, "val": 0.1})
    assert again.card["sha256"] == card["sha256"]  # same inputs, same dataset


def test_build_never_overwrites_and_reports_unknown_labels(tmp_path: Path) -> None:
    col = tmp_path / "collect"
    frame(col, "cam-a", "2026-06-01", 1, labels=[{"label": "pothole", "xyxy": [1, 1, 20, 20]}])
    frame(col, "cam-a", "2026-06-01", 3, review={"verdict": "confirmed", "case_id": 3})
    frame(col, "cam-b", "2026-06-01", 2, labels=[])
    with pytest.raises(DatasetError, match="pothole"):
        build(tmp_path / "ds", [col])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(DatasetError, match="not empty"):
        build(tmp_path / "full", [col])


def test_cli_build_prints_the_card_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    col = tmp_path / "collect"
    for i, cam in enumerate(("cam-a", "cam-b", "cam-c")):
        frame(col, cam, "2026-06-01", i, labels=[{"label": "vehicle", "xyxy": [5, 5, 30, 30]}])
    assert cli_main(["build", "--out", str(tmp_path / "ds"), "--collection", str(col), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["boxes_per_class"]["train"]["vehicle"] >= 1
    assert cli_main(["build", "--out", str(tmp_path / "ds3"), "--collection", str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err
