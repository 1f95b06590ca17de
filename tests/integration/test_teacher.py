"""python -m training.teacher on a real still with the shipped COCO model: vehicle and self-training labels"""

from __future__ import annotations

from pathlib import Path

import pytest

from training import teacher

BUS = Path(__file__).resolve().parents[1] / "realworld" / "images" / "bus.jpg"


def classes(out: Path) -> list[int]:
    (label,) = sorted((out / "labels").glob("*.txt"))
    return [int(line.split()[0]) for line in label.read_text().splitlines()]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ([], {0}),  # citywatch ids: the minibus as `vehicle` (0), the people not labelled
        (["--all-classes"], {0, 5}),  # COCO ids: person (0) and bus (5)
        (["--all-classes", "--tiles", "2"], {0, 5}),  # the teacher also looks at 2x2 tiles
    ],
)
def test_teacher_labels(tmp_path: Path, extra: list[str], expect: set[int]) -> None:
    out = tmp_path / "out"
    assert teacher.main([str(BUS), "--out", str(out), *extra]) == 0
    assert len(list((out / "images").glob("*.jpg"))) == 1
    found = classes(out)
    assert set(found) == expect
    if "--all-classes" in extra:
        assert found.count(0) >= 3  # three pedestrians in front of the bus
    else:
        assert found == [0]  # one vehicle


def test_teacher_refuses_a_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert teacher.main([str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err
