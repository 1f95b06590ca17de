"""training.labelio: round trips between YOLO, COCO, CVAT and Label Studio keep every box within 1 px;
their class names come back through a class map; nothing is dropped without a count."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.errors import TrainingError
from training.labelio import (
    Box,
    ClassMap,
    ImageResolver,
    ImportReport,
    LabelExportError,
    LabelImportError,
    LabelledImage,
    export_labels,
    image_size,
    import_labels,
    local_files_url,
    read_coco,
    read_label_studio,
    read_yolo_dataset,
    url_prefix,
    write_coco,
    write_yolo,
)

# (name, width, height, boxes): a street frame, a drone frame with a box on its border, an empty frame
SCENES: list[tuple[str, int, int, list[Box]]] = [
    (
        "cam-01-20260601T020000000-near_threshold.jpg",
        1280,
        720,
        [
            Box("vehicle", (100.5, 200.25, 400.75, 380.0), 0.41),
            Box("litter", (900.0, 600.0, 931.0, 622.5), 0.9),
        ],
    ),
    (
        "drone-02-20260601T020001000-uniform.jpg",
        1920,
        1080,
        [
            Box("vendor", (0.0, 10.0, 250.0, 300.0), 0.55),
            Box("structure", (1500.0, 700.0, 1920.0, 1080.0), 0.7),
        ],
    ),
    ("cam-03-20260601T020002000-rejected.jpg", 640, 480, []),
]


def write_image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
    return path


@pytest.fixture
def scenes(tmp_path: Path) -> list[LabelledImage]:
    """The frames as a collection keeps them: <dir>/<stream>/<date>/<frame_id>.jpg."""
    return [
        LabelledImage(
            write_image(tmp_path / "collect" / name.split("-2026")[0] / "2026-06-01" / name, w, h),
            w,
            h,
            list(boxes),
        )
        for name, w, h, boxes in SCENES
    ]


def by_name(images: list[LabelledImage]) -> dict[str, LabelledImage]:
    return {img.path.name: img for img in images}


def assert_same_boxes(got: list[LabelledImage], want: list[LabelledImage], *, scores: bool = False) -> None:
    """Every image back, each with the same labels and every corner within 1 px."""
    g, w = by_name(got), by_name(want)
    assert sorted(g) == sorted(w)
    for name, img in w.items():
        back = g[name]
        assert (back.width, back.height) == (img.width, img.height), name
        assert len(back.boxes) == len(img.boxes), name
        for b0, b1 in zip(
            sorted(img.boxes, key=lambda b: b.xyxy), sorted(back.boxes, key=lambda b: b.xyxy), strict=True
        ):
            assert b1.label == b0.label, name
            assert np.allclose(b1.xyxy, b0.xyxy, atol=1.0), (name, b0.xyxy, b1.xyxy)
            if scores:
                assert b1.score == pytest.approx(b0.score, abs=1e-4)


def test_image_size_reads_the_header(tmp_path: Path) -> None:
    for ext in ("jpg", "png", "bmp", "webp"):
        assert image_size(write_image(tmp_path / f"a.{ext}", 53, 37)) == (53, 37)
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    with pytest.raises(LabelImportError, match="not a JPEG"):
        image_size(tmp_path / "b.jpg")


def test_yolo_round_trip_keeps_boxes_and_empty_images(tmp_path: Path, scenes: list[LabelledImage]) -> None:
    data_yaml = write_yolo(scenes, tmp_path / "yolo")
    assert (tmp_path / "yolo" / "labels" / "cam-03-20260601T020002000-rejected.txt").read_text() == ""
    assert (tmp_path / "yolo" / "classes.txt").read_text().split() == [
        "vehicle",
        "vendor",
        "litter",
        "structure",
    ]
    from training.dataset import load_dataset  # the dataset trains as written

    assert load_dataset(data_yaml).names == ["vehicle", "vendor", "litter", "structure"]
    back, report = read_yolo_dataset(tmp_path / "yolo")
    assert_same_boxes(back, scenes)
    assert (report.images, report.empty, report.boxes) == (3, 1, 4)
    assert all(b.score is None for img in back for b in img.boxes)  # YOLO training labels carry no score


def test_yolo_missing_label_file_is_unlabelled_not_empty(tmp_path: Path, scenes: list[LabelledImage]) -> None:
    write_yolo(scenes, tmp_path / "yolo")
    (tmp_path / "yolo" / "labels" / "cam-03-20260601T020002000-rejected.txt").unlink()
    back, report = read_yolo_dataset(tmp_path / "yolo")
    assert (len(back), report.unlabelled) == (2, 1)
    back, report = read_yolo_dataset(tmp_path / "yolo", missing_as_empty=True)
    assert (len(back), report.empty) == (3, 1)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0 0.5 0.5", "got 3 fields"),
        ("x 0.5 0.5 0.1 0.1", "not numbers"),
        ("7 0.5 0.5 0.1 0.1", "class id 7"),
    ],
)
def test_yolo_malformed_lines_name_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    write_image(tmp_path / "y" / "images" / "a.jpg", 64, 48)
    (tmp_path / "y" / "labels").mkdir()
    (tmp_path / "y" / "labels" / "a.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    (tmp_path / "y" / "classes.txt").write_text("vehicle\n")
    with pytest.raises(LabelImportError, match=match) as err:
        read_yolo_dataset(tmp_path / "y")
    assert "a.txt:2" in str(err.value)


def test_coco_round_trip_keeps_scores(tmp_path: Path, scenes: list[LabelledImage]) -> None:
    out = write_coco(
        scenes, tmp_path / "coco" / "annotations.json", images_folder=tmp_path / "coco" / "images"
    )
    doc = json.loads(out.read_text())
    assert doc["annotations"][0]["bbox"] == [100.5, 200.25, 300.25, 179.75]  # x, y, w, h pixels
    assert [c["name"] for c in doc["categories"]] == ["vehicle", "vendor", "litter", "structure"]
    back, report = read_coco(out)
    assert_same_boxes(back, scenes, scores=True)
    assert (report.images, report.empty) == (3, 1)


def test_export_refuses_a_label_not_in_the_names(tmp_path: Path, scenes: list[LabelledImage]) -> None:
    with pytest.raises(LabelExportError, match="'litter'"):
        write_yolo(scenes, tmp_path / "yolo", names=["vehicle", "vendor", "structure"])
    twin = LabelledImage(write_image(tmp_path / "other" / scenes[0].path.name, 64, 48), 64, 48)
    with pytest.raises(LabelExportError, match="two images are both named"):
        write_coco([scenes[0], twin], tmp_path / "c.json", images_folder=tmp_path / "images")
    assert issubclass(LabelImportError, TrainingError) and issubclass(LabelExportError, TrainingError)


def test_import_clips_to_the_image_and_reports_degenerate(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", 100, 50)
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
        "categories": [{"id": 1, "name": "vehicle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 40, 30, 30]},  # reaches outside
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [150, 10, 20, 20]},  # wholly outside
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 20]},  # no width
        ],
    }
    (tmp_path / "c.json").write_text(json.dumps(doc))
    back, report = read_coco(tmp_path / "c.json")
    assert back[0].boxes == [Box("vehicle", (90.0, 40.0, 100.0, 50.0))]
    assert (report.clipped, report.degenerate.count, report.boxes) == (2, 2, 1)
    assert report.degenerate.examples == ["a.jpg"]


@pytest.mark.parametrize(
    ("spec", "name", "expected"),
    [
        ("car=vehicle,garbage=litter", "car", "vehicle"),
        ("car=vehicle,garbage=litter", "garbage", "litter"),
        ("car=vehicle", "vehicle", "vehicle"),  # our own labels pass through unlisted
        ("person=", "person", None),  # left out on purpose
    ],
)
def test_class_map_inline(spec: str, name: str, expected: str | None) -> None:
    cm = ClassMap.from_arg(spec)
    assert cm.knows(name) and cm.label_for(name) == expected
    assert not cm.knows("tree")


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("m.yaml", "car: vehicle\ngarbage: litter\nperson:\n"),
        ("m.json", '{"car": "vehicle", "garbage": "litter", "person": null}'),
    ],
)
def test_class_map_files(tmp_path: Path, filename: str, text: str) -> None:
    (tmp_path / filename).write_text(text)
    assert ClassMap.from_arg(tmp_path / filename) == ClassMap(
        {"car": "vehicle", "garbage": "litter", "person": None}
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [("car=automobile", "'automobile' is not one of our labels"), ("car", "not their_name=our_label")],
)
def test_class_map_refuses_typos(spec: str, match: str) -> None:
    with pytest.raises(LabelImportError, match=match):
        ClassMap.from_arg(spec)


def coco_with_their_names(tmp_path: Path) -> Path:
    write_image(tmp_path / "a.jpg", 100, 50)
    write_image(tmp_path / "b.jpg", 100, 50)
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
            {"id": 2, "file_name": "b.jpg", "width": 100, "height": 50},
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "tree"}, {"id": 3, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 1, 20, 20]},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [30, 1, 20, 20]},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [60, 1, 20, 20]},
        ],
    }
    (tmp_path / "c.json").write_text(json.dumps(doc))
    return tmp_path / "c.json"


def test_unknown_classes_raise_with_every_name(tmp_path: Path) -> None:
    with pytest.raises(LabelImportError) as err:
        read_coco(coco_with_their_names(tmp_path), class_map=ClassMap.from_arg("car=vehicle"))
    msg = str(err.value)
    assert "'tree' (2 boxes, e.g. a.jpg, b.jpg)" in msg and "'person' (1 box, e.g. b.jpg)" in msg
    assert isinstance(err.value.report, ImportReport) and set(err.value.report.unknown) == {"tree", "person"}


def test_skip_unknown_counts_what_it_leaves_out(tmp_path: Path) -> None:
    back, report = read_coco(
        coco_with_their_names(tmp_path), class_map=ClassMap.from_arg("car=vehicle,person="), skip_unknown=True
    )
    assert [len(img.boxes) for img in back] == [1, 0]
    assert (report.skipped, report.unknown["tree"].count, report.ignored["person"]) == (2, 2, 1)
    assert report.to_dict()["unknown"] == {"tree": {"boxes": 2, "examples": ["a.jpg", "b.jpg"]}}
    assert "skipped classes: 'tree'" in report.summary()


def test_missing_images_are_reported_and_all_missing_refused(tmp_path: Path) -> None:
    path = coco_with_their_names(tmp_path)
    (tmp_path / "b.jpg").unlink()
    back, report = read_coco(path, class_map=ClassMap.from_arg("car=vehicle,tree=structure,person="))
    assert [img.path.name for img in back] == ["a.jpg"]
    assert report.missing_images.examples == ["b.jpg"]
    with pytest.raises(LabelImportError, match="none of its 2 images was found under"):
        read_coco(path, images_dir=tmp_path / "elsewhere", class_map=ClassMap.from_arg("car=vehicle"))


# Each step exports the images in one format and imports them back (images looked up in the collection).
CHAINS = [
    ["yolo", "coco", "labelstudio:predictions", "yolo"],  # the acceptance
    ["yolo", "coco", "labelstudio:annotations", "yolo"],
    ["yolo", "cvat", "labelstudio:annotations", "coco", "yolo"],
]


@pytest.mark.parametrize("chain", CHAINS, ids=["->".join(c) for c in CHAINS])
def test_round_trip_keeps_every_box_within_a_pixel(
    tmp_path: Path, scenes: list[LabelledImage], chain: list[str]
) -> None:
    collection = tmp_path / "collect"
    images = scenes
    for i, step in enumerate(chain):
        fmt, _, mode = step.partition(":")
        out = export_labels(
            fmt,
            images,
            tmp_path / f"{i}-{fmt}",
            image_url=local_files_url(collection),
            mode="annotations" if mode == "annotations" else "predictions",
            model_version="citywatch-synth@1.2.0",
        )
        images, report = import_labels(
            fmt, out, images_dir=collection, source="annotations" if mode == "annotations" else "predictions"
        )
        assert_same_boxes(images, scenes)
        assert all(img.path.is_relative_to(collection) for img in images), step  # the collection's frames
        assert (report.images, report.empty, report.boxes, report.clipped) == (3, 1, 4, 0), step


def test_label_studio_prediction_tasks_in_its_format(tmp_path: Path, scenes: list[LabelledImage]) -> None:
    collection = tmp_path / "collect"
    out = export_labels(
        "labelstudio", scenes, tmp_path / "ls", image_url=local_files_url(collection), model_version="m@1"
    )
    tasks = json.loads(out.read_text())
    assert tasks[0]["data"] == {
        "image": "/data/local-files/?d=cam-01/2026-06-01/cam-01-20260601T020000000-near_threshold.jpg"
    }
    (pred,) = tasks[0]["predictions"]
    assert (pred["model_version"], pred["score"]) == ("m@1", 0.41)  # the least sure box first
    region = pred["result"][0]
    assert {k: region[k] for k in ("from_name", "to_name", "type", "original_width", "original_height")} == {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 1280,
        "original_height": 720,
    }
    v = region["value"]
    assert (v["rectanglelabels"], v["rotation"], region["score"]) == (["vehicle"], 0, 0.41)
    assert np.allclose(
        [v["x"], v["y"], v["width"], v["height"]], [100.5 / 12.8, 200.25 / 7.2, 300.25 / 12.8, 179.75 / 7.2]
    )
    assert tasks[2]["predictions"] == [
        {"model_version": "m@1", "result": []}
    ]  # empty frame: nothing predicted
    # scores come back from the predictions
    back, _ = read_label_studio(out, images_dir=collection, source="predictions")
    assert_same_boxes(back, scenes, scores=True)
    config = ET.fromstring((tmp_path / "ls" / "labeling_config.xml").read_text())
    assert config.find("Image").attrib == {"name": "image", "value": "$image"}  # type: ignore[union-attr]
    rl = config.find("RectangleLabels")
    assert rl is not None and (rl.get("name"), rl.get("toName")) == ("label", "image")
    assert [lab.get("value") for lab in rl] == ["vehicle", "vendor", "litter", "structure"]


def test_image_urls_must_lie_under_their_root(tmp_path: Path, scenes: list[LabelledImage]) -> None:
    url = url_prefix("http://frames.local:8081/", tmp_path / "collect")
    assert (
        url(scenes[0])
        == "http://frames.local:8081/cam-01/2026-06-01/cam-01-20260601T020000000-near_threshold.jpg"
    )
    with pytest.raises(LabelExportError, match="not under the Label Studio document root"):
        local_files_url(tmp_path / "elsewhere")(scenes[0])
    with pytest.raises(LabelExportError, match="needs image_url"):
        export_labels("labelstudio", scenes, tmp_path / "ls")


@pytest.mark.parametrize(
    ("ref", "found"),
    [
        ("x.jpg", "a/x.jpg"),  # a file name: anywhere below the root
        ("a/x.jpg", "a/x.jpg"),
        ("/data/local-files/?d=a/x.jpg", "a/x.jpg"),  # Label Studio local files
        ("/data/upload/1/0a1b2c3d-x.jpg", "a/x.jpg"),  # Label Studio upload, its prefix dropped
        ("http://frames.local/p/x.jpg?sig=1", "a/x.jpg"),
        ("b/z.jpg", "b/z.jpg"),
        ("z.jpg", None),  # two files of that name, neither path closer: none
        ("../outside.jpg", None),  # never outside the root
    ],
)
def test_image_resolver(tmp_path: Path, ref: str, found: str | None) -> None:
    for rel in ("root/a/x.jpg", "root/b/z.jpg", "root/c/z.jpg", "outside.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = ImageResolver(tmp_path / "root").resolve(ref)
    assert got == (tmp_path / "root" / found if found else None)
