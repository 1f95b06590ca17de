"""The synthetic generator: determinism, label sanity, scenario ground truth vs. rendered boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.synth.canvas import CLASSES
from training.synth.dataset import build, build_seeds, labels_hash, split_seeds, yolo_lines
from training.synth.scenario import Scenario, ScenarioSpec
from training.synth.scenes import drone_sample, street_sample

SCENARIOS = sorted((Path(__file__).parents[2] / "training" / "synth" / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("sample", [street_sample, drone_sample])
@pytest.mark.parametrize("seed", [0, 7, 123])
def test_same_seed_same_pixels_and_labels(sample, seed):
    img1, lab1 = sample(seed)
    img2, lab2 = sample(seed)
    assert np.array_equal(img1, img2)
    assert lab1 == lab2


@pytest.mark.parametrize("sample", [street_sample, drone_sample])
def test_different_seeds_differ(sample):
    assert not np.array_equal(sample(1)[0], sample(2)[0])


@pytest.mark.parametrize("sample", [street_sample, drone_sample])
def test_labels_are_inside_the_image_and_known_classes(sample):
    for seed in range(12):
        img, labels = sample(seed)
        h, w = img.shape[:2]
        for cls, (x1, y1, x2, y2) in labels:
            assert cls in CLASSES
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_dataset_labels_are_byte_identical(tmp_path):
    counts = {"train": {"street": 3, "drone": 2}, "val": {"street": 1, "drone": 1}}
    build(tmp_path / "a", counts, workers=1)
    build(tmp_path / "b", counts, workers=1)
    assert labels_hash(tmp_path / "a") == labels_hash(tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a" / "labels" / "train").glob("*.txt"))
    for name in files:
        assert (tmp_path / "a/labels/train" / name).read_bytes() == (
            tmp_path / "b/labels/train" / name
        ).read_bytes()
    # splits use disjoint seeds
    val = {p.name for p in (tmp_path / "a" / "labels" / "val").glob("*.txt")}
    assert not val & set(files)


def test_a_part_of_a_set_is_the_same_files_as_in_the_whole_set(tmp_path):
    """What the benches render (bench/_data.py): chosen seeds of a split give the files the full set has."""
    build(tmp_path / "whole", {"test": {"street": 3, "drone": 3}}, workers=1)
    street, drone = split_seeds("test", "street", 3), split_seeds("test", "drone", 3)
    part = build_seeds(tmp_path / "part", {"test": {"street": street[1:], "drone": drone[2:]}}, workers=1)
    names = sorted(p.relative_to(tmp_path / "part") for p in (tmp_path / "part").rglob("*_*.*"))
    assert [n.name for n in names if n.suffix == ".jpg"] == [f"drone_{drone[2]:08d}.jpg"] + [
        f"street_{s:08d}.jpg" for s in street[1:]
    ]
    for rel in names:
        if rel.parts[0] in ("images", "labels"):
            assert (tmp_path / "part" / rel).read_bytes() == (tmp_path / "whole" / rel).read_bytes()
    assert (tmp_path / "part" / "test_street.txt").read_text().split() == [
        f"./images/test/street_{s:08d}.jpg" for s in street[1:]
    ]
    assert "test_drone" in part.read_text()


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([], ""),
        ([("vehicle", (0.0, 0.0, 64.0, 36.0))], "0 0.050000 0.050000 0.100000 0.100000\n"),
        ([("structure", (320.0, 180.0, 640.0, 360.0))], "3 0.750000 0.750000 0.500000 0.500000\n"),
    ],
)
def test_yolo_lines(labels, expected):
    assert yolo_lines(labels, 640, 360) == expected


@pytest.mark.parametrize("script", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_rendered_boxes_match_the_script(script):
    """Every scripted object that must be reported is rendered, labelled with its class, with its
    ground contact point inside the scripted zone, at every sampled second of its violation."""
    sc = Scenario.load(script)
    truth = sc.ground_truth()
    assert truth, f"{script.name} scripts no violation"
    polys = {z.id: np.array(sc.zone_polygon(z)) for z in sc.spec.zones}
    from detector.rules.zones import points_in_polygon

    kinds = {o.id: o.kind for o in sc.spec.objects}
    for v in truth:
        end = v["end_s"] if v["end_s"] is not None else sc.spec.duration_s
        for t in np.arange(v["start_s"] + 1, end - 1, 10.0):
            _img, labels = sc.frame(round(t * sc.spec.fps))
            mine = [(lab, oid) for lab, oid in labels if oid == v["object"]]
            assert len(mine) == 1, f"{v['object']} not rendered at t={t}"
            (cls, (x1, _y1, x2, y2)), _ = mine[0]
            assert (
                cls
                == {"vehicle": "vehicle", "stall": "stall", "litter": "litter", "structure": "structure"}[
                    kinds[v["object"]]
                ]
            )
            anchor = np.array([[(x1 + x2) / 2 / sc.cam.width, y2 / sc.cam.height]])
            assert points_in_polygon(anchor, polys[v["zone"]])[0], (
                f"{v['object']} outside {v['zone']} at t={t}"
            )
        # after it leaves, it is not rendered
        if v["end_s"] is not None:
            _img, labels = sc.frame(round((v["end_s"] + 1) * sc.spec.fps))
            assert all(oid != v["object"] for _, oid in labels)


def test_scenario_ground_truth_excludes_short_stays_and_outside_objects():
    spec = ScenarioSpec.model_validate(
        {
            "name": "t",
            "duration_s": 100,
            "start_time": "2026-01-01T08:00:00+08:00",
            "dwell_s": {"illegal_parking": 30},
            "zones": [{"id": "np", "rules": ["illegal_parking"], "x": [4, 7], "z": [14, 30]}],
            "objects": [
                {"id": "long", "kind": "vehicle", "x": 5.5, "z": 20, "appear": 10, "leave": 80},
                {"id": "short", "kind": "vehicle", "x": 5.5, "z": 25, "appear": 10, "leave": 30},
                {"id": "outside", "kind": "vehicle", "x": -5.5, "z": 20, "appear": 0},
                {
                    "id": "passing",
                    "kind": "vehicle",
                    "x": 5.5,
                    "z": 40,
                    "appear": 0,
                    "leave": 10,
                    "to": {"x": 5.5, "z": 14},
                },
            ],
        }
    )
    truth = Scenario.from_spec(spec).ground_truth()
    assert [v["object"] for v in truth] == ["long"]
    assert truth[0]["opened_at_s"] == 40
