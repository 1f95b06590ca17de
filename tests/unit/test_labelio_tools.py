"""training.labelio against exports written the way the tools write them (not by our writers): Label
Studio's JSON and JSON_MIN exports, CVAT for images 1.1 XML (alone and in CVAT's zip)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.labelio import ClassMap, LabelImportError, read_cvat, read_label_studio


def write_image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
    return path


def ls_region(label: str, x: float, y: float, w: float, h: float, **extra: object) -> dict[str, object]:
    """A region as Label Studio exports it (percent of a 200 x 100 image)."""
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}
    return {"id": "Dx_aB91ISN", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": 200, "original_height": 100, "image_rotation": 0, "value": value,
            "origin": "manual", **extra}  # fmt: skip


def ls_annotation(
    ann_id: int, updated: str, result: list[object], *, cancelled: bool = False
) -> dict[str, object]:
    return {"id": ann_id, "completed_by": 1, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": "2026-06-01T08:00:00.000000Z", "updated_at": updated,
            "lead_time": 4.2, "task": 1}  # fmt: skip


def test_label_studio_export_takes_the_latest_live_annotation(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        write_image(tmp_path / "frames" / name, 200, 100)
    tasks = [
        {"id": 1, "data": {"image": "/data/local-files/?d=frames/a.jpg"}, "annotations": [
            ls_annotation(11, "2026-06-01T09:00:00Z", [ls_region("car", 10, 10, 20, 20)]),
            ls_annotation(12, "2026-06-01T10:00:00Z", [ls_region("garbage", 50, 50, 10, 10)], cancelled=True),
        ], "predictions": [{"model_version": "m", "result": [ls_region("vehicle", 0, 0, 50, 50)]}]},
        {"id": 2, "data": {"image": "/data/upload/3/1a2b3c4d-b.jpg"}, "annotations": [  # an uploaded file
            ls_annotation(21, "2026-06-01T11:00:00+00:00", [ls_region("garbage", 50, 50, 10, 10)]),
            ls_annotation(22, "2026-06-01T09:00:00Z", [ls_region("car", 10, 10, 20, 20)]),
        ]},
        {"id": 3, "data": {"image": "http://frames.local/c.jpg"},
         "annotations": [ls_annotation(31, "2026-06-01T09:00:00Z", [])]},
        {"id": 4, "data": {"image": "/data/local-files/?d=frames/d.jpg"},
         "annotations": [ls_annotation(41, "2026-06-01T09:00:00Z", [], cancelled=True)]},
        {"id": 5, "data": {"image": "/data/local-files/?d=frames/e.jpg"}, "annotations": []},
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    back, report = read_label_studio(
        tmp_path / "export.json",
        images_dir=tmp_path,
        class_map=ClassMap.from_arg("car=vehicle,garbage=litter"),
    )
    assert {img.path.name: [(b.label, b.xyxy) for b in img.boxes] for img in back} == {
        "a.jpg": [("vehicle", (20.0, 10.0, 60.0, 30.0))],  # the cancelled, later one is ignored
        "b.jpg": [("litter", (100.0, 50.0, 120.0, 60.0))],  # the latest of two
        "c.jpg": [],  # labelled: nothing there
    }
    assert (report.cancelled, report.unlabelled, report.empty) == (2, 2, 1)


def test_label_studio_json_min_and_rotated_regions(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", 200, 100)
    records = [
        {"image": "/data/local-files/?d=a.jpg", "id": 1, "annotator": 1, "annotation_id": 1,
         "updated_at": "2026-06-01T08:00:00Z", "label": [{"x": 0, "y": 0, "width": 10, "height": 10,
         "rotation": 0, "rectanglelabels": ["car"], "original_width": 200, "original_height": 100}]},
        {"image": "/data/local-files/?d=a.jpg", "id": 1, "annotator": 2, "annotation_id": 2,
         "updated_at": "2026-06-01T09:00:00Z", "label": [{"x": 50, "y": 10, "width": 10, "height": 20,
         "rotation": 90, "rectanglelabels": ["car"], "original_width": 200, "original_height": 100}]},
    ]  # fmt: skip
    (tmp_path / "min.json").write_text(json.dumps(records))
    back, report = read_label_studio(tmp_path / "min.json", class_map=ClassMap.from_arg("car=vehicle"))
    # turned 90 degrees clockwise about its top-left corner (100, 10): 20 px wide, 20 px tall leftwards
    assert [b.xyxy for b in back[0].boxes] == [pytest.approx((80.0, 10.0, 100.0, 30.0))]
    assert (report.images, report.rotated) == (1, 1)


CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id><name>street frames</name><size>3</size><mode>annotation</mode><overlap>0</overlap>
      <labels>
        <label><name>car</name><color>#fa3253</color><type>rectangle</type><attributes/></label>
        <label><name>garbage</name><color>#33ddff</color><type>any</type><attributes/></label>
      </labels>
    </task>
    <dumped>2026-06-02 10:00:00.000000+00:00</dumped>
  </meta>
  <image id="0" name="cam-01/a.jpg" width="640" height="480">
    <box label="car" source="manual" occluded="0"
         xtl="10.50" ytl="20.00" xbr="110.25" ybr="90.00" z_order="0">
      <attribute name="parked">true</attribute>
    </box>
    <box label="garbage" source="manual" occluded="1"
         xtl="600.00" ytl="400.00" xbr="700.00" ybr="470.00" z_order="0">
    </box>
    <polygon label="garbage" source="manual" occluded="0" points="1.0,1.0;5.0,1.0;5.0,5.0" z_order="0">
    </polygon>
  </image>
  <image id="1" name="b.jpg" width="640" height="480">
    <box label="car" source="manual" occluded="0"
         xtl="100.00" ytl="100.00" xbr="140.00" ybr="120.00" z_order="0" rotation="90.0"></box>
  </image>
  <image id="2" name="c.jpg" width="640" height="480">
  </image>
</annotations>
"""


@pytest.mark.parametrize("packed", [False, True], ids=["xml", "zip"])
def test_cvat_export_imports_with_a_class_map(tmp_path: Path, packed: bool) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "collect" / "cam-01" / name, 640, 480)
    path = tmp_path / "annotations.xml"
    path.write_text(CVAT_XML)
    if packed:  # CVAT's download: a zip with annotations.xml (and images/)
        path = tmp_path / "task_7.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("annotations.xml", CVAT_XML)
    back, report = read_cvat(
        path, images_dir=tmp_path / "collect", class_map=ClassMap.from_arg("car=vehicle,garbage=litter")
    )
    boxes = {img.path.name: [(b.label, b.xyxy) for b in img.boxes] for img in back}
    assert boxes == {
        "a.jpg": [("vehicle", (10.5, 20.0, 110.25, 90.0)), ("litter", (600.0, 400.0, 640.0, 470.0))],
        "b.jpg": [("vehicle", pytest.approx((110.0, 90.0, 130.0, 130.0)))],  # 90 degrees about its centre
        "c.jpg": [],
    }
    assert (report.clipped, report.rotated, report.other_shapes["polygon"], report.empty) == (1, 1, 1, 1)
    with pytest.raises(
        LabelImportError, match=r"'garbage' \(1 box, e.g. cam-01/a.jpg\)"
    ):  # the polygon: no box
        read_cvat(path, images_dir=tmp_path / "collect", class_map=ClassMap.from_arg("car=vehicle"))


def test_cvat_video_export_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v.xml").write_text(
        '<annotations><version>1.1</version><track id="0" label="car"/></annotations>'
    )
    with pytest.raises(LabelImportError, match=r"CVAT for images 1\.1"):
        read_cvat(tmp_path / "v.xml")
