"""Geo-referencing, tiled inference and frame sampling, with hand-computable inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.contracts.detections import Detections
from detector.survey.errors import GeoreferenceError
from detector.survey.geo import (
    Camera,
    CameraPose,
    MetricCRS,
    ground_offsets,
    offsets_to_latlon,
    pixel_sigma_m,
)
from detector.survey.inputs import Candidate, SurveyInput
from detector.survey.plan import GeoSettings, plan_frames
from detector.survey.telemetry import bearing_deg, haversine_m, parse_srt_text
from detector.survey.tiling import SlicedDetector, greedy_merge, tile_grid

CAM = Camera(1920, 1080, 2560.0)  # GSD 0.039 m at 100 m


@pytest.mark.parametrize(
    ("focal", "kind", "sensor", "expected"),
    [(24.0, "35mm", None, 24 * 3840 / 36), (8.8, "mm", 13.2, 2560.0), (3666.0, "px", None, 3666.0)],
)
def test_focal_length_kinds(focal, kind, sensor, expected):
    assert Camera.from_focal(focal, kind, 3840, 2160, sensor).f_px == pytest.approx(expected)


def test_real_focal_length_without_sensor_width_says_what_to_pass():
    with pytest.raises(GeoreferenceError, match="--sensor-width-mm"):
        Camera.from_focal(8.8, "mm", 3840, 2160)


@pytest.mark.parametrize(
    ("yaw", "du", "dv", "east", "north"),
    [
        (0.0, 100, 0, 3.90625, 0.0),  # right of centre, camera facing north: east
        (0.0, 0, -100, 0.0, 3.90625),  # above centre: ahead (north)
        (90.0, 100, 0, 0.0, -3.90625),  # facing east: right of the image is south
        (90.0, 0, -100, 3.90625, 0.0),
        (180.0, 100, 0, -3.90625, 0.0),
        (270.0, 0, 100, 3.90625, 0.0),  # facing west, below centre: behind = east
    ],
)
def test_nadir_offsets_follow_gsd_and_yaw(yaw, du, dv, east, north):
    pose = CameraPose(30.0, 114.0, 100.0, yaw)
    e, n, ok = ground_offsets(CAM, pose, np.array([960 + du]), np.array([540 + dv]))
    assert ok.all()
    assert (e[0], n[0]) == pytest.approx((east, north), abs=1e-9)
    assert CAM.gsd(100.0) == pytest.approx(0.0390625)


def test_offsets_are_carried_on_the_ellipsoid():
    from pyproj import Geod

    lats, lons = offsets_to_latlon(30.0, 114.0, [30.0, 0.0], [40.0, -50.0])
    az, _, dist = Geod(ellps="WGS84").inv(114.0, 30.0, lons[0], lats[0])
    assert (az, dist) == pytest.approx((36.8699, 50.0), abs=1e-3)
    assert haversine_m(30.0, 114.0, lats[0], lons[0]) == pytest.approx(50.0, rel=5e-3)  # the sphere: close
    assert bearing_deg(30.0, 114.0, lats[0], lons[0]) == pytest.approx(36.87, abs=0.2)
    assert lats[1] < 30.0 and lons[1] == pytest.approx(114.0)


def test_oblique_view_meets_the_ground_further_and_is_less_certain():
    nadir = CameraPose(30.0, 114.0, 100.0, 0.0, -90.0)
    oblique = CameraPose(30.0, 114.0, 100.0, 0.0, -45.0)
    e, n, ok = ground_offsets(CAM, oblique, np.array([960.0]), np.array([540.0]))
    assert ok.all() and e[0] == pytest.approx(0.0, abs=1e-9) and n[0] == pytest.approx(100.0)
    assert oblique.oblique and not nadir.oblique
    s_obl = pixel_sigma_m(CAM, oblique, e, n, [4.0])[0]
    s_nad = pixel_sigma_m(CAM, nadir, [0.0], [0.0], [4.0])[0]
    assert s_obl > 2 * s_nad
    # looking at the horizon: the ray never meets the ground and is not placed
    _, _, ok = ground_offsets(
        CAM, CameraPose(30.0, 114.0, 100.0, 0.0, 0.0), np.array([960.0]), np.array([100.0])
    )
    assert not ok.any()


def test_metric_crs_round_trip():
    crs = MetricCRS(30.6, 114.4)
    assert crs.epsg == 32650
    x, y = crs.to_xy(30.6, 114.4)
    lat, lon = crs.to_latlon(x + 100.0, y)
    assert haversine_m(30.6, 114.4, float(lat), float(lon)) == pytest.approx(100.0, rel=5e-3)
    assert MetricCRS(-34.2, -58.8).epsg == 32721


# ------------------------------------------------------------------------------------------ tiling
def test_tile_grid_covers_a_4k_frame_with_overlap():
    rects = tile_grid(3840, 2160, 640, 0.2)
    assert len(rects) == 8 * 4
    covered = np.zeros((2160, 3840), bool)
    for x1, y1, x2, y2 in rects:
        assert x2 - x1 == 640 and y2 - y1 == 640
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert tile_grid(500, 300, 640, 0.2) == [(0, 0, 500, 300)]


def _dets(boxes, scores, classes):
    names = ["vehicle", "stall", "litter", "structure"]
    return Detections.from_arrays(boxes, scores, [names.index(c) for c in classes], names)


def test_pieces_of_one_object_cut_by_tiles_merge_into_one_box():
    d = _dets(
        [[500, 100, 640, 200], [512, 100, 700, 200], [900, 100, 950, 150]],
        [0.8, 0.9, 0.7],
        ["structure", "structure", "structure"],
    )
    out = greedy_merge(d)
    assert len(out) == 2
    assert out.xyxy[0].tolist() == [500, 100, 700, 200] and out.confidence[0] == pytest.approx(0.9)


def test_two_classes_on_one_spot_keep_the_stronger():
    d = _dets(
        [[10, 10, 60, 60], [12, 11, 61, 60], [100, 100, 140, 140]],
        [0.8, 0.4, 0.5],
        ["stall", "litter", "litter"],
    )
    out = greedy_merge(d)
    assert list(out.class_name) == ["stall", "litter"] and out.xyxy[1].tolist() == [100, 100, 140, 140]


class _EveryTile:
    """A fake backend: one box in the same place of every tile it is given (frame coordinates differ)."""

    imgsz, class_names = 640, ["vehicle", "stall", "litter", "structure"]

    def __init__(self) -> None:
        self.calls: list[int] = []

    def infer(self, images):
        self.calls.append(len(images))
        return [_dets([[10, 10, 50, 50]], [0.9], ["litter"]) for _ in images]


def test_sliced_detector_batches_tiles_and_shifts_boxes_into_the_frame():
    backend = _EveryTile()
    out = SlicedDetector(backend, 640, 0.2, batch=5)(np.zeros((1080, 1920, 3), np.uint8))  # type: ignore[arg-type]
    assert backend.calls == [5, 3]  # 8 tiles in batches of 5
    xs = sorted({float(x) for x in out.xyxy[:, 0]})
    assert xs == [10.0, 522.0, 1034.0, 1290.0]
    assert len(out) == 8


# ------------------------------------------------------------------------------------------ sampling
def _input(text: str, frames: int, fps: float = 1.0) -> SurveyInput:
    tel = parse_srt_text(text, "t.SRT")
    cands = [Candidate(i, i / fps, i) for i in range(frames)]
    return SurveyInput("video", Path("t.mp4"), tel, cands, 1920, 1080, Path("t.SRT"))


def _srt(points: list[tuple[float, float]], alt: float = 100.0) -> str:
    out = []
    for i, (lat, lon) in enumerate(points):
        out.append(
            f"{i + 1}\n00:00:{i:02d},000 --> 00:00:{i + 1:02d},000\n2024-05-01 10:00:{i:02d}.000\n"
            f"[focal_len: 48.00] [latitude: {lat:.6f}] [longitude: {lon:.6f}] "
            f"[rel_alt: {alt:.1f} abs_alt: 120.0] "
            f"[gb_yaw: 90.0 gb_pitch: -90.0 gb_roll: 0.0]\n"
        )
    return "\n".join(out)


def test_sampling_by_distance_ignores_hovering_and_lists_unplaced_frames():
    step = 10.0 / 111_320 / np.cos(np.radians(30.0))  # 10 m east per second
    pts = [(30.0, 114.0 + step * i) for i in range(10)] + [(30.0, 114.0 + step * 9)] * 20
    plan = plan_frames(_input(_srt(pts), frames=40), GeoSettings())
    # footprint 42.2 m along track -> one frame every 16.9 m: frames 0, 2, 4, 6, 8; none while hovering
    assert [f.index for f in plan.frames] == [0, 2, 4, 6, 8]
    assert plan.placed == 31  # the last block (t=29-30 s) also places the frame at t=30 s
    assert len(plan.unplaced) == 9 and "shorter than the video" in plan.unplaced[0][2]
    assert plan.unplaced_summary()[0].startswith("frames 31-39")
    f = plan.frames[1]
    assert f.pose.yaw_deg == 90.0 and f.pose.height_m == 100.0 and f.camera.f_px == pytest.approx(2560.0)
    assert f.ts == pytest.approx(plan.frames[0].ts + 2.0)
    by_time = plan_frames(_input(_srt(pts), frames=40), GeoSettings(), every_m=1000.0, every_s=10.0)
    assert [f.index for f in by_time.frames] == [0, 10, 20, 30]


def test_unknown_altitude_reference_is_an_error_with_the_fix():
    text = _srt([(30.0, 114.0)]).replace("[rel_alt: 100.0 abs_alt: 120.0]", "[altitude: 117.0]")
    with pytest.raises(GeoreferenceError, match="--ground-elevation-m"):
        plan_frames(_input(text, 1), GeoSettings())
    plan = plan_frames(_input(text, 1), GeoSettings(ground_elevation_m=17.0))
    assert plan.frames[0].pose.height_m == pytest.approx(100.0)


def test_no_yaw_while_hovering_leaves_the_frame_unplaced():
    text = _srt([(30.0, 114.0)] * 3).replace(" [gb_yaw: 90.0 gb_pitch: -90.0 gb_roll: 0.0]", "")
    with pytest.raises(GeoreferenceError, match="orientation is unknown"):
        plan_frames(_input(text, 3), GeoSettings())


def test_a_big_object_in_four_tiles_comes_together_when_merging_is_repeated():
    from detector.survey.tiling import merge_until_stable

    pieces = _dets(
        [[915, 536, 1062, 634], [896, 547, 1070, 814], [1024, 644, 1062, 858], [1024, 538, 1064, 762]],
        [0.89, 0.82, 0.66, 0.54],
        ["structure"] * 4,
    )
    assert len(greedy_merge(pieces)) == 2  # one greedy pass: the strongest piece misses the lower ones
    out = merge_until_stable(pieces)
    assert len(out) == 1 and out.xyxy[0].tolist() == [896, 536, 1070, 858]
