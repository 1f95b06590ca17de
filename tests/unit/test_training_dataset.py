"""Dataset yaml parsing, the label hash recorded as data_hash, and the yaml handed to ultralytics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from training.dataset import load_dataset
from training.errors import DatasetError


def make(root: Path, extra: dict[str, Any] | None = None, **over: Any) -> Path:
    for split, n in (("train", 3), ("val", 2), ("drone", 1)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / "images" / split / f"{i}.jpg").write_bytes(b"jpg")
            if i:  # image 0 of each split is a background image (no label file)
                (root / "labels" / split / f"{i}.txt").write_text(f"0 0.5 0.5 0.1 0.{i}\n")
    data: dict[str, Any] = {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "test_drone": "images/drone",
        "names": {0: "vehicle", 1: "stall"},
        **(extra or {}),
    }
    data.update(over)
    p = root / "data.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_parse(tmp_path: Path) -> None:
    spec = load_dataset(make(tmp_path))
    assert spec.names == ["vehicle", "stall"]
    assert spec.rule_labels == {"vehicle": "vehicle"}  # identity only for names that are rule labels
    assert spec.eval_split() == "val"
    assert spec.view_splits() == {"drone": "test_drone"}
    assert len(spec.images("train")) == 3


def test_data_hash_ignores_location_and_tracks_labels(tmp_path: Path) -> None:
    h1 = load_dataset(make(tmp_path / "a")).data_hash()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert load_dataset(tmp_path / "b" / "data.yaml").data_hash() == h1
    (tmp_path / "b" / "labels" / "train" / "1.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    assert load_dataset(tmp_path / "b" / "data.yaml").data_hash() != h1
    (tmp_path / "a" / "images" / "train" / "9.jpg").write_bytes(b"jpg")  # one more background image
    assert load_dataset(tmp_path / "a" / "data.yaml").data_hash() != h1


def test_any_key_is_a_split_for_ultralytics(tmp_path: Path) -> None:
    spec = load_dataset(make(tmp_path, extra={"street_night": "images/drone"}))
    out = yaml.safe_load(spec.write_ultralytics_yaml(tmp_path / "u.yaml", val="street_night").read_text())
    assert out["val"] == str(tmp_path / "images" / "drone")
    assert out["train"] == str(tmp_path / "images" / "train")
    assert out["names"] == {0: "vehicle", 1: "stall"}
    assert "download" not in out


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"names": ["a", "a"]}, "repeats a class name"),
        ({"names": {0: "a", 2: "b"}}, "without gaps"),
        ({"nc": 3}, "nc is 3"),
        ({"val": None}, "no `val` split"),
        ({"val": "images/nowhere"}, "points to missing"),
        ({"path": "nowhere"}, "is not a folder"),
        ({"rule_labels": {"bus": "vehicle"}}, "'bus' is not a class"),
        ({"rule_labels": {"stall": "stall"}}, "is not a rule label"),
    ],
)
def test_errors(tmp_path: Path, over: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(make(tmp_path, **over))


def test_unknown_split(tmp_path: Path) -> None:
    spec = load_dataset(make(tmp_path))
    with pytest.raises(DatasetError, match="no split 'test_street'"):
        spec.images("test_street")


def test_rule_labels_from_yaml(tmp_path: Path) -> None:
    spec = load_dataset(make(tmp_path, rule_labels={"stall": "vendor"}))
    assert spec.rule_labels == {"stall": "vendor"}
