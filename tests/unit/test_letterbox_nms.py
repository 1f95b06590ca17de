"""Letterbox geometry and numpy NMS / YOLO decoding: pure tables, no models."""

from __future__ import annotations

import numpy as np
import pytest

from detector.inference.letterbox import PAD_VALUE, letterbox, letterbox_params, to_tensor
from detector.inference.nms import batched_nms, cxcywh_to_xyxy, decode_end2end, decode_yolo, nms


# ------------------------------------------------------------------------------------------ letterbox
@pytest.mark.parametrize(
    ("shape", "imgsz", "auto", "input_shape", "gain", "pad"),
    [
        ((180, 320), 320, False, (320, 320), (1.0, 1.0), (0, 70)),
        ((1080, 1920), 320, False, (320, 320), (1 / 6, 180 / 1080), (0, 70)),
        ((1080, 1920), 320, True, (192, 320), (1 / 6, 180 / 1080), (0, 6)),  # rect: pad to a stride multiple
        ((640, 480), 320, False, (320, 320), (0.5, 0.5), (40, 0)),
        ((100, 100), 64, False, (64, 64), (0.64, 0.64), (0, 0)),
        ((50, 1000), 320, False, (320, 320), (0.32, 0.32), (0, 152)),
        ((3, 2000), 64, True, (32, 64), (0.032, 1 / 3), (0, 15)),  # a sliver stays at least 1 pixel tall
    ],
)
def test_letterbox_geometry(
    shape: tuple[int, int],
    imgsz: int,
    auto: bool,
    input_shape: tuple[int, int],
    gain: tuple[float, float],
    pad: tuple[int, int],
) -> None:
    image = np.zeros((*shape, 3), np.uint8)
    out, info = letterbox(image, imgsz, 32, auto)
    assert out.shape == (*input_shape, 3) and info.input_shape == input_shape
    assert (info.gain_x, info.gain_y) == pytest.approx(gain)
    assert (info.pad_x, info.pad_y) == pad


def test_letterbox_pads_grey_and_keeps_content() -> None:
    image = np.full((90, 160, 3), 200, np.uint8)
    out, info = letterbox(image, 64)
    assert info.pad_y == 14 and info.input_shape == (64, 64)
    assert (out[: info.pad_y] == PAD_VALUE).all() and (out[-info.pad_y :] == PAD_VALUE).all()
    assert (out[info.pad_y : 64 - info.pad_y] == 200).all()


@pytest.mark.parametrize(
    ("shape", "imgsz", "auto", "box"),
    [
        ((180, 320), 320, False, [10.0, 20.0, 110.0, 170.0]),
        ((1080, 1920), 320, False, [0.0, 0.0, 1920.0, 1080.0]),
        ((1080, 1920), 640, True, [1500.5, 33.25, 1600.0, 400.0]),
        ((480, 640), 320, False, [100.0, 100.0, 101.0, 102.0]),
        ((720, 405), 64, False, [5.0, 700.0, 400.0, 719.0]),
    ],
)
def test_box_round_trip(shape: tuple[int, int], imgsz: int, auto: bool, box: list[float]) -> None:
    info, _, _ = letterbox_params(shape, imgsz, 32, auto)
    there = info.to_input([box])
    assert (there >= 0).all() and (there[:, [0, 2]] <= info.input_shape[1]).all()
    assert (there[:, [1, 3]] <= info.input_shape[0]).all()
    np.testing.assert_allclose(info.to_original(there), [box], atol=1e-3)


def test_boxes_clip_to_the_original_image() -> None:
    info, _, _ = letterbox_params((180, 320), 320)
    back = info.to_original([[-5.0, 0.0, 330.0, 320.0]])  # reaching into the padding
    np.testing.assert_allclose(back, [[0.0, 0.0, 320.0, 180.0]])


@pytest.mark.parametrize("shape", [(0, 10), (10, 0)])
def test_letterbox_rejects_empty(shape: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="empty"):
        letterbox_params(shape, 64)


def test_to_tensor_is_rgb_nchw_unit_range() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    t = to_tensor([img, img])
    assert t.shape == (2, 3, 4, 6) and t.dtype == np.float32
    assert (t[:, 2] == 1.0).all() and (t[:, :2] == 0.0).all()


# ------------------------------------------------------------------------------------------ NMS
A = [0.0, 0.0, 10.0, 10.0]
A_SHIFTED = [1.0, 0.0, 11.0, 10.0]  # IoU with A = 90/110 = 0.82
A_HALF = [5.0, 0.0, 15.0, 10.0]  # IoU with A = 50/150 = 0.33
FAR = [50.0, 50.0, 60.0, 60.0]


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "iou", "kept"),
    [
        ([A, A_SHIFTED], [0.9, 0.8], [0, 0], 0.5, [0]),  # overlapping, same class: suppressed
        ([A, A_SHIFTED], [0.8, 0.9], [0, 0], 0.5, [1]),  # the higher score wins
        ([A, A_SHIFTED], [0.9, 0.8], [0, 1], 0.5, [0, 1]),  # different classes never suppress each other
        ([A, A_HALF], [0.9, 0.8], [0, 0], 0.5, [0, 1]),  # overlap below the threshold
        ([A, A_HALF], [0.9, 0.8], [0, 0], 0.3, [0]),
        ([A, A_SHIFTED, FAR], [0.7, 0.9, 0.8], [2, 2, 2], 0.5, [1, 2]),
        ([A, A_SHIFTED, A_HALF, FAR], [0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1], 0.5, [0, 1, 2, 3]),
        ([], [], [], 0.5, []),
    ],
)
def test_batched_nms(
    boxes: list[list[float]], scores: list[float], classes: list[int], iou: float, kept: list[int]
) -> None:
    assert batched_nms(boxes, scores, classes, iou).tolist() == kept


def test_nms_ties_keep_input_order() -> None:
    assert nms([A, A, FAR], [0.5, 0.5, 0.5], 0.5).tolist() == [0, 2]


def test_nms_length_mismatch() -> None:
    with pytest.raises(ValueError, match="one score per box"):
        nms([A], [0.1, 0.2], 0.5)


def test_cxcywh_to_xyxy() -> None:
    np.testing.assert_allclose(cxcywh_to_xyxy([[10, 20, 4, 6]]), [[8, 17, 12, 23]])


def _yolo_output(rows: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """(4 + nc, anchors) from (cx, cy, w, h, class scores) rows."""
    return np.array([[cx, cy, w, h, *s] for cx, cy, w, h, s in rows], np.float32).T


@pytest.mark.parametrize(
    ("conf", "iou", "expected_classes", "expected_scores"),
    [
        (0.25, 0.5, [0, 1, 0], [0.9, 0.8, 0.6]),  # the 0.7 box overlaps the 0.9 box of its class
        (0.65, 0.5, [0, 1], [0.9, 0.8]),
        (0.25, 0.9, [0, 1, 0, 0], [0.9, 0.8, 0.7, 0.6]),  # a looser IoU threshold keeps the overlap
        (0.95, 0.5, [], []),
    ],
)
def test_decode_yolo(
    conf: float, iou: float, expected_classes: list[int], expected_scores: list[float]
) -> None:
    out = _yolo_output(
        [
            (5, 5, 10, 10, [0.9, 0.1]),
            (6, 5, 10, 10, [0.7, 0.2]),  # overlaps the first (IoU 0.82), same class
            (6, 5, 10, 10, [0.1, 0.8]),  # same place, other class
            (55, 55, 10, 10, [0.6, 0.0]),
            (30, 30, 10, 10, [0.2, 0.1]),  # below every threshold used
        ]
    )
    boxes, scores, classes = decode_yolo(out, 2, conf, iou)
    assert classes.tolist() == expected_classes
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
    if len(boxes):
        np.testing.assert_allclose(boxes[0], [0, 0, 10, 10])


def test_decode_yolo_max_det_and_extra_channels() -> None:
    rows = [(float(i * 20), 0.0, 10.0, 10.0, [0.5 + i / 100]) for i in range(10)]
    out = np.concatenate([_yolo_output(rows), np.zeros((32, 10), np.float32)])  # mask coefficients ignored
    boxes, scores, _ = decode_yolo(out, 1, 0.25, 0.5, max_det=3)
    assert len(boxes) == 3 and scores.tolist() == pytest.approx([0.59, 0.58, 0.57])


def test_decode_yolo_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="anchors"):
        decode_yolo(np.zeros((5, 10), np.float32), 2, 0.25, 0.5)


def test_decode_end2end() -> None:
    out = np.array([[1, 2, 3, 4, 0.9, 2], [5, 6, 7, 8, 0.1, 0], [0, 0, 0, 0, 0.0, 0]], np.float32)
    boxes, scores, classes = decode_end2end(out, 0.25)
    np.testing.assert_allclose(boxes, [[1, 2, 3, 4]])
    assert scores.tolist() == pytest.approx([0.9]) and classes.tolist() == [2]


@pytest.mark.parametrize(
    ("car", "truck", "person", "expected_cls", "expected_score"),
    [
        (0.30, 0.30, 0.0, 1, 0.51),  # undecided car/truck: a vehicle at 1 - 0.7 * 0.7
        (0.60, 0.10, 0.0, 1, 0.64),  # the group's top class keeps the id
        (0.10, 0.45, 0.0, 2, 0.505),
        (0.20, 0.10, 0.40, 0, 0.40),  # a class outside the group is untouched
    ],
)
def test_grouped_classes_score_as_one(
    car: float, truck: float, person: float, expected_cls: int, expected_score: float
) -> None:
    # one anchor, classes: 0 person, 1 car, 2 truck; car and truck feed the same rule label
    out = np.array([[50.0], [50.0], [20.0], [20.0], [person], [car], [truck]], np.float32)
    _, scores, cls = decode_yolo(out, 3, conf=0.25, iou=0.5, groups=[(1, 2)])
    assert cls.tolist() == [expected_cls]
    assert scores[0] == pytest.approx(expected_score, abs=1e-3)


def test_a_group_keeps_one_box_per_object() -> None:
    # two neighbouring anchors on one object, one read as car, one as truck: one vehicle box survives
    out = np.array(
        [[50.0, 51.0], [50.0, 50.0], [20.0, 20.0], [20.0, 20.0], [0.0, 0.0], [0.6, 0.1], [0.1, 0.55]],
        np.float32,
    )
    assert len(decode_yolo(out, 3, conf=0.25, iou=0.5)[0]) == 2  # classes apart: two boxes
    boxes, _, cls = decode_yolo(out, 3, conf=0.25, iou=0.5, groups=[(1, 2)])
    assert len(boxes) == 1 and cls.tolist() == [1]


@pytest.mark.parametrize(
    ("names", "labels", "expected"),
    [
        (
            ("person", "car", "truck", "bus"),
            {"car": "vehicle", "truck": "vehicle", "bus": "vehicle"},
            ((1, 2, 3),),
        ),
        (("vehicle", "stall", "litter", "structure"), {"vehicle": "vehicle", "stall": "vendor"}, ()),
        (("stall", "cart", "car"), {"stall": "vendor", "cart": "vendor", "car": "vehicle"}, ((0, 1),)),
    ],
)
def test_label_groups(
    names: tuple[str, ...], labels: dict[str, str], expected: tuple[tuple[int, ...], ...]
) -> None:
    from detector.inference.model import label_groups

    assert label_groups(names, labels) == expected
