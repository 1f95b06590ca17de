"""De-duplication across frames and change against a baseline, on hand-made observations (metres)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.survey.change import compare, load_baseline
from detector.survey.dedup import DedupSettings, deduplicate
from detector.survey.errors import SurveyInputError
from detector.survey.geo import MetricCRS

CRS = MetricCRS(30.6, 114.4)
X0, Y0 = (float(v) for v in CRS.to_xy(30.6, 114.4))


def obs(frame, x, y, cls="structure", conf=0.9, truncated=False, centre=0.2, size=5.0):
    return {
        "frame": frame,
        "k": 0,
        "cls": cls,
        "conf": conf,
        "box": [
            500 + 10 * x - 5 * size,
            500 - 10 * y - 5 * size,
            500 + 10 * x + 5 * size,
            500 - 10 * y + 5 * size,
        ],
        "x": X0 + x,
        "y": Y0 + y,
        "sigma_m": 2.0,
        "size_m": size,
        "truncated": truncated,
        "centre": centre,
        "oblique": False,
        "ts": 1000.0 + frame,
        "lat": 0.0,
        "lon": 0.0,
    }


def square(cx, cy, half=30.0):
    return np.array(
        [
            [X0 + cx - half, Y0 + cy - half],
            [X0 + cx + half, Y0 + cy - half],
            [X0 + cx + half, Y0 + cy + half],
            [X0 + cx - half, Y0 + cy + half],
        ]
    )


def run(frames, footprints=None):
    fps = footprints if footprints is not None else [(i, square(0, 0, 200)) for i, _ in frames]
    objs, _, stats = deduplicate(frames, fps, DedupSettings())
    return objs, stats


def test_one_object_in_consecutive_frames_and_again_on_the_next_line_is_one_object():
    frames = [
        (0, [obs(0, 0.3, 0.0)]),
        (1, [obs(1, -0.2, 0.4)]),
        (2, [obs(2, 0.1, -0.3)]),
        (3, []),
        (4, []),
        (5, []),
        (6, [obs(6, 1.2, 0.8)]),
        (7, [obs(7, 1.0, 1.1)]),
    ]
    objs, stats = run(frames, [(i, square(0, 0)) for i in (0, 1, 2, 6, 7)])
    assert len(objs) == 1 and stats["tracks"] == 2
    o = objs[0]
    assert o.frames == [0, 1, 2, 6, 7]
    assert abs(o.x - X0) < 1.0 and abs(o.y - Y0) < 1.0
    assert o.first_ts == 1000.0 and o.last_ts == 1007.0


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ((5.0, 0.0, "structure"), 2),  # 5 m apart: two sheds
        ((4.5, 0.0, "vehicle"), 2),  # a car beside the shed: another object
        ((1.5, 0.0, "structure"), 2),  # close, but seen together in one frame: two objects
    ],
)
def test_neighbours_stay_apart(second, expected):
    x, y, cls = second
    frames = [(i, [obs(i, 0.0, 0.0), obs(i, x, y, cls)]) for i in range(3)]
    objs, _ = run(frames)
    assert len(objs) == expected


@pytest.mark.parametrize(
    ("frames_of_second", "size", "expected"),
    [
        ([3, 4], 4.0, ["structure"]),  # a stall read on the shed in other frames: one shed
        ([0, 1, 2], 4.0, ["structure"]),  # read both ways in the same frames, boxes nested: one shed
        ([3, 4], 1.0, ["litter", "structure"]),  # a small heap inside the shed's box: two things
    ],
)
def test_one_object_read_as_two_classes(frames_of_second, size, expected):
    frames = [(i, [obs(i, 0.0, 0.0, conf=0.9, size=6.0)]) for i in range(3)] + [(3, []), (4, [])]
    cls = "litter" if size < 2 else "stall"
    for i in frames_of_second:
        frames[i][1].append(obs(i, 1.0, 0.5, cls, conf=0.5, size=size))
    objs, stats = run(frames)
    assert sorted(o.cls for o in objs) == expected
    assert stats["class_merged"] == (1 if len(expected) == 1 else 0)


def test_a_sliver_at_the_frame_edge_alone_is_not_an_object():
    fp = [(i, square(0.0, 0.0)) for i in range(3)]  # the spot lies well inside every frame
    frames = [(0, [obs(0, 2.0, 2.0, "vehicle", truncated=True)]), (1, []), (2, [])]
    objs, weak, stats = deduplicate(frames, fp, DedupSettings())
    assert objs == [] and [w.cls for w in weak] == ["vehicle"] and stats["flicker_dropped"] == 1


def test_an_object_cut_by_the_frame_edge_joins_the_whole_view_and_does_not_move_it():
    frames = [
        (0, [obs(0, 2.4, 0.0, truncated=True, size=6.0)]),
        (1, [obs(1, 0.0, 0.0)]),
        (2, [obs(2, 0.1, 0.0)]),
    ]
    objs, _ = run(frames)
    assert len(objs) == 1 and objs[0].frames == [0, 1, 2]
    assert abs(objs[0].x - X0) < 0.2
    assert not objs[0].best["truncated"]


def test_best_view_is_confident_and_near_the_image_centre():
    frames = [
        (0, [obs(0, 0, 0, conf=0.95, centre=0.9)]),
        (1, [obs(1, 0, 0, conf=0.9, centre=0.05)]),
        (2, [obs(2, 0, 0, conf=0.5, centre=0.0)]),
    ]
    objs, _ = run(frames)
    assert objs[0].best["frame"] == 1


def test_a_detection_in_one_of_many_frames_that_saw_the_place_is_dropped_as_flicker():
    frames = [(i, [obs(i, 50.0, 0.0, conf=0.4)] if i == 3 else []) for i in range(8)]
    objs, stats = run(frames, [(i, square(50, 0)) for i in range(8)])
    assert objs == [] and stats["flicker_dropped"] == 1


def _baseline(tmp_path, items):
    feats = []
    for i, (cls, x, y, status) in enumerate(items):
        lat, lon = CRS.to_latlon(X0 + x, Y0 + y)
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]},
                "properties": {
                    "id": f"b{i}",
                    "class": cls,
                    "status": status,
                    "uncertainty_m": 2.0,
                    "size_m": 5.0,
                },
            }
        )
    (tmp_path / "survey.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return load_baseline(tmp_path)


def test_change_known_new_gone_and_not_covered(tmp_path):
    base = _baseline(
        tmp_path,
        [
            ("structure", 0, 0, "new"),
            ("structure", 40, 0, "known"),
            ("vehicle", 20, 20, "new"),
            ("structure", 500, 0, "known"),
            ("structure", -40, 0, "gone"),
        ],
    )
    assert len(base) == 4  # what the last survey called gone is not in the baseline
    frames = [(i, [obs(i, 2.5, 1.0), obs(i, -20.0, -10.0), obs(i, 20.5, 20.0, "vehicle")]) for i in range(3)]
    footprints = [(i, square(0, 0, 60)) for i in range(3)]
    objs, _, _ = deduplicate(frames, footprints, DedupSettings())
    res = compare(objs, base, CRS, footprints)
    status = {(o.cls, round(o.x - X0)): (s, m) for o, s, m in zip(objs, res.status, res.matched, strict=True)}
    assert status[("structure", 2)] == ("known", "b0")  # 2.7 m away: the same shed
    assert status[("structure", -20)] == ("new", None)
    assert status[("vehicle", 20)] == ("known", "b2")
    assert [b.id for b in res.gone] == ["b1"]  # in view, not found: gone
    assert [b.id for b in res.not_covered] == ["b3"]  # outside this flight: not judged


def test_baseline_that_is_not_a_survey_is_refused(tmp_path):
    with pytest.raises(SurveyInputError, match="earlier survey"):
        load_baseline(tmp_path / "missing")
    (tmp_path / "x.geojson").write_text('{"type": "Feature"}')
    with pytest.raises(SurveyInputError, match="FeatureCollection"):
        load_baseline(tmp_path / "x.geojson")


def test_the_same_thing_read_as_another_class_is_known_not_new_and_gone(tmp_path):
    base = _baseline(tmp_path, [("structure", 0, 0, "new"), ("vehicle", 30, 0, "new")])
    frames = [(i, [obs(i, 0.8, 0.3, "stall"), obs(i, 36.0, 0.0, "structure")]) for i in range(3)]
    footprints = [(i, square(0, 0, 60)) for i in range(3)]
    objs, _, _ = deduplicate(frames, footprints, DedupSettings())
    res = compare(objs, base, CRS, footprints)
    by_cls = {
        o.cls: (s, m, w) for o, s, m, w in zip(objs, res.status, res.matched, res.class_was, strict=True)
    }
    assert by_cls["stall"] == ("known", "b0", "structure")  # 0.9 m from the shed: read as a stall this time
    assert by_cls["structure"] == ("new", None, None)  # 6 m from a car is not that car
    assert [b.id for b in res.gone] == ["b1"]


@pytest.mark.parametrize(
    ("current", "gone", "faint"),
    [
        ([], ["b0"], []),  # in view three times, nothing there: gone
        ([(0, 1.0, 0.5, True)], [], ["b0"]),  # only a sliver at the frame edge: still there, unconfirmed
        ([(0, 25.0, 0.0, True)], ["b0"], []),  # a sliver elsewhere is no sign of this one
    ],
)
def test_weak_evidence_keeps_a_baseline_object_from_being_gone(tmp_path, current, gone, faint):
    base = _baseline(tmp_path, [("structure", 0, 0, "new")])
    frames = [(i, []) for i in range(3)]
    for frame, x, y, truncated in current:
        frames[frame][1].append(obs(frame, x, y, truncated=truncated, conf=0.6))
    footprints = [(i, square(0, 0, 60)) for i in range(3)]
    objs, weak, _ = deduplicate(frames, footprints, DedupSettings())
    res = compare(objs, base, CRS, footprints, weak=weak)
    assert objs == []
    assert [b.id for b in res.gone] == gone
    assert [b.id for b, _ in res.faint] == faint
