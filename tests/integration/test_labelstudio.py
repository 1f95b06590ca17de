"""Our Label Studio files in a real Label Studio (``tests/labelstudio.py``; ``make test-services`` installs
it into ``.venv-labelstudio``): tasks written by ``training.labelio`` open with their frames and our boxes
as predictions (pre-annotations); a labeller's corrections come back out of Label Studio's own JSON export
through ``training.labelio`` with the class map applied and an unknown class refused by name.

Frames are cut from the real street clip into a collection-like folder that Label Studio serves as local
files (``/data/local-files/?d=...``), so nothing is uploaded. One Label Studio per module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest

from tests.labelstudio import LabelStudio, LabelStudioError, label_studio, unavailable_reason
from training.dataset import RULE_LABELS
from training.labelio import (
    Box,
    ClassMap,
    ImportReport,
    LabelImportError,
    LabelledImage,
    local_files_url,
    read_label_studio,
    write_label_studio,
)

pytestmark = pytest.mark.labelstudio

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "tests" / "realworld" / "videos" / "street_curbside_parked_cars_fixedcam.mp4"
FRAMES = (0, 300, 600)  # the camera is fixed: the parked cars stay where the boxes are
MODEL = "citywatch-test@1.0.0"
THEIR_CLASS = "bicycle"  # a class the labellers may draw that our class map does not know
# (label, xyxy in pixels of the 640x360 frame, score): three parked cars and one false positive (a shadow)
PREDICTED = [
    ("vehicle", (163.0, 215.5, 300.0, 295.0), 0.91),
    ("vehicle", (305.2, 235.0, 470.0, 305.7), 0.88),
    ("vehicle", (20.0, 155.0, 65.0, 190.0), 0.43),
    ("vehicle", (500.0, 80.0, 600.0, 160.0), 0.31),
]
PX = 1.0  # pixel tolerance of a round trip through percent


@dataclass
class Project:
    ls: LabelStudio
    client: httpx.Client
    id: int
    images: list[LabelledImage]  # what we sent, in task order
    task_ids: list[int]
    files_root: Path


def _cut_frames(folder: Path) -> list[tuple[Path, int, int]]:
    """The clip's frames ``FRAMES`` as a collection would keep them (JPEG q=95): path, width, height."""
    day = folder / "cam-01" / "2026-06-01"
    day.mkdir(parents=True)
    cap = cv2.VideoCapture(str(CLIP))
    paths = []
    try:
        for n in FRAMES:
            cap.set(cv2.CAP_PROP_POS_FRAMES, n)
            ok, frame = cap.read()
            assert ok, f"cannot read frame {n} of {CLIP}"
            path = day / f"cam-01-20260601T0200{n // 100:02d}000-near_threshold.jpg"
            cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            paths.append((path, frame.shape[1], frame.shape[0]))
    finally:
        cap.release()
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no Label Studio here: {reason}")
    folder = tmp_path_factory.mktemp("labelstudio")
    files_root = folder / "files"
    files_root.mkdir()
    try:
        with label_studio(folder / "server", files_root) as ls:
            yield ls
    except LabelStudioError as exc:
        pytest.skip(f"Label Studio did not start: {exc}")


@pytest.fixture(scope="module")
def project(server: LabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A project made as the data team makes one: our labeling config, a local-files storage on the
    frames' folder, and the tasks file written by ``training.labelio`` imported as a file upload."""
    frames = _cut_frames(server.files_root)
    images = []
    for path, w, h in frames:
        images.append(LabelledImage(path, w, h, [Box(lab, xyxy, s) for lab, xyxy, s in PREDICTED]))
    out = tmp_path_factory.mktemp("ls-export")
    names = [*RULE_LABELS, THEIR_CLASS]
    tasks = write_label_studio(
        images,
        out / "tasks.json",
        image_url=local_files_url(server.files_root),
        model_version=MODEL,
        names=names,
        config_out=out / "config.xml",
    )
    with server.client() as client:
        made = _ok(
            client.post(
                "/api/projects",
                json={"title": "citywatch round trip", "label_config": (out / "config.xml").read_text()},
            )
        )
        pid = int(made["id"])
        storage = {"project": pid, "path": str(server.files_root / "cam-01"), "title": "frames"}
        _ok(client.post("/api/storages/localfiles", json={**storage, "use_blob_urls": True}))
        with tasks.open("rb") as f:
            imported = _ok(client.post(f"/api/projects/{pid}/import", files={"file": ("tasks.json", f)}))
        assert (imported["task_count"], imported["prediction_count"]) == (len(images), len(images))
        listed = _ok(client.get("/api/tasks", params={"project": pid, "page_size": 100}))["tasks"]
        by_image = {t["data"]["image"]: int(t["id"]) for t in listed}
        task_ids = [by_image[local_files_url(server.files_root)(img)] for img in images]
        yield Project(server, client, pid, images, task_ids, server.files_root)


def _ok(resp: httpx.Response) -> Any:
    assert resp.is_success, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text[:2000]}"
    return resp.json()


def _close(got: list[Box], want: list[Box]) -> None:
    """Same labels and scores in order, every corner within ``PX``."""
    assert [b.label for b in got] == [b.label for b in want]
    for g, w in zip(got, want, strict=True):
        assert g.xyxy == pytest.approx(w.xyxy, abs=PX), (g, w)
        assert (g.score is None) == (w.score is None)
        if w.score is not None:
            assert g.score == pytest.approx(w.score, abs=1e-4)


def test_tasks_open_with_their_frames_and_our_boxes_as_predictions(project: Project, tmp_path: Path) -> None:
    c = project.client
    config = _ok(c.get(f"/api/projects/{project.id}"))["label_config"]
    assert all(f'value="{n}"' in config for n in [*RULE_LABELS, THEIR_CLASS])
    fetched = []
    for img, tid in zip(project.images, project.task_ids, strict=True):
        task = _ok(c.get(f"/api/tasks/{tid}"))
        assert task["annotations"] == []  # pre-annotations are predictions, not finished labels
        (pred,) = task["predictions"]
        assert pred["model_version"] == MODEL
        assert pred["score"] == pytest.approx(min(s for _, _, s in PREDICTED), abs=1e-4)
        assert [r["value"]["rectanglelabels"] for r in pred["result"]] == [[b.label] for b in img.boxes]
        frame = c.get(task["data"]["image"])  # the frame the labelling screen loads
        assert frame.status_code == 200, frame.text[:500]
        assert frame.headers["content-type"] == "image/jpeg"
        assert frame.content == img.path.read_bytes()
        fetched.append(task)
    # what Label Studio holds, converted back to pixels, is what we sent (within a pixel)
    (tmp_path / "tasks.json").write_text(json.dumps(fetched))
    back, report = read_label_studio(
        tmp_path / "tasks.json", images_dir=project.files_root, source="predictions"
    )
    assert [b.path for b in back] == [img.path for img in project.images]
    assert report.boxes == len(PREDICTED) * len(FRAMES)
    for got, sent in zip(back, project.images, strict=True):
        assert (got.width, got.height) == (sent.width, sent.height) == (640, 360)
        _close(got.boxes, sent.boxes)


def _percent(region: dict[str, Any], xyxy: tuple[float, float, float, float]) -> dict[str, Any]:
    """A copy of ``region`` moved to ``xyxy`` (pixels), as the labelling screen stores a region."""
    w, h = region["original_width"], region["original_height"]
    x1, y1, x2, y2 = xyxy
    value = {**region["value"], "x": x1 / w * 100, "y": y1 / h * 100}
    value |= {"width": (x2 - x1) / w * 100, "height": (y2 - y1) / h * 100}
    out = {k: v for k, v in region.items() if k != "score"}
    return out | {"value": value, "origin": "prediction-changed"}


def _new_region(
    template: dict[str, Any], rid: str, label: str, xyxy: tuple[float, float, float, float]
) -> dict[str, Any]:
    region = _percent(template, xyxy)
    region["value"]["rectanglelabels"] = [label]
    return region | {"id": rid, "origin": "manual"}


def _annotate(c: httpx.Client, tid: int, result: list[dict[str, Any]], *, cancelled: bool = False) -> None:
    pred_id = _ok(c.get(f"/api/tasks/{tid}"))["predictions"][0]["id"]
    body = {"result": result, "was_cancelled": cancelled, "ground_truth": False, "parent_prediction": pred_id}
    _ok(c.post(f"/api/tasks/{tid}/annotations", json=body))


def test_a_labellers_corrections_come_back_from_the_export(project: Project, tmp_path: Path) -> None:
    c = project.client
    t0, t1, t2 = project.task_ids
    pred = _ok(c.get(f"/api/tasks/{t0}"))["predictions"][0]["result"]
    hummer, white, red, _shadow = (box.xyxy for box in project.images[0].boxes)
    moved = (hummer[0] + 12.0, hummer[1] - 4.0, hummer[2] - 9.0, hummer[3])
    missed = (85.0, 105.0, 150.0, 148.0)  # the silver car the model did not find
    # task 0: one box moved, the shadow deleted, a missed car added, the other two kept
    _annotate(
        c,
        t0,
        [
            _percent(pred[0], moved),
            _percent(pred[1], white),
            _percent(pred[2], red),
            _new_region(pred[0], "n1", "vehicle", missed),
        ],
    )
    # task 1: every prediction deleted, one box of a class our map does not know
    bike = (90.0, 240.0, 126.0, 281.0)
    _annotate(c, t1, [_new_region(pred[0], "n2", THEIR_CLASS, bike)])
    # task 2: skipped by the labeller
    _annotate(c, t2, [], cancelled=True)

    export = tmp_path / "export.json"
    resp = c.get(
        f"/api/projects/{project.id}/export", params={"exportType": "JSON", "download_all_tasks": "true"}
    )
    assert resp.status_code == 200, resp.text[:2000]
    export.write_bytes(resp.content)

    with pytest.raises(LabelImportError, match=THEIR_CLASS) as refused:
        read_label_studio(export, images_dir=project.files_root)
    refusal = refused.value.report
    assert isinstance(refusal, ImportReport)
    assert {k: v.count for k, v in refusal.unknown.items()} == {THEIR_CLASS: 1}

    back, report = read_label_studio(
        export, images_dir=project.files_root, class_map=ClassMap({THEIR_CLASS: None})
    )
    assert report.ignored == {THEIR_CLASS: 1}
    assert (report.images, report.empty, report.cancelled, report.unlabelled) == (2, 1, 1, 1)
    got = {img.path: img for img in back}
    first, second = project.images[0].path, project.images[1].path
    assert set(got) == {first, second}
    want = [Box("vehicle", moved), Box("vehicle", white), Box("vehicle", red), Box("vehicle", missed)]
    _close(got[first].boxes, want)
    assert got[second].boxes == []  # labelled: no box of ours on it

    _, skipped = read_label_studio(export, images_dir=project.files_root, skip_unknown=True)
    assert (skipped.skipped, skipped.boxes) == (1, 4)
