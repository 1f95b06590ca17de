"""``citywatch collect export|import`` (training/collect_cli.py, training/collection.py): the collection
out to the labelling tools with the desk's verdicts applied to the pre-annotations, and their labels back
into the sidecars. A small collection built with the FrameRecord model; no model runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import detector.collect.record as collect_record
from detector.commands import cli as citywatch
from detector.contracts import frames
from detector.contracts.frames import FrameRecord, Label, Prediction, Review, frame_dir, read_record, utc_ms
from training.collect_cli import import_source, main
from training.collection import (
    CollectionError,
    Selection,
    VerdictCounts,
    frame_boxes,
    parse_since,
    pick_frames,
)
from training.labelio import FORMATS, import_labels

W, H = 200, 100
DAY1 = 1_780_272_000.0  # 2026-06-01T00:00:00Z
DAY2 = DAY1 + 86_400
XYXY = tuple[float, float, float, float]


def pred(label: str, xyxy: XYXY, score: float = 0.5) -> Prediction:
    return Prediction(label=label, xyxy=xyxy, score=score, model="citywatch-synth@1.2.0")


def make(fid: str, stream: str = "cam-01", ts: float = DAY1 + 3600, **extra: Any) -> FrameRecord:
    extra.setdefault("reasons", ["near_threshold"])
    return FrameRecord(id=fid, stream=stream, captured_at=utc_ms(ts), width=W, height=H, **extra)


FRAMES = {
    "near": make(
        "cam-01-20260601T010000000-near_threshold",
        model={"name": "citywatch-synth", "version": "1.2.0"},
        predictions=[pred("vehicle", (10, 10, 50, 40), 0.41), pred("litter", (120, 60, 140, 80), 0.35)],
    ),
    "rejected": make(
        "cam-01-20260601T020000000-case",
        ts=DAY1 + 7200,
        reasons=["case", "rejected"],
        violation_id="v-rejected",
        predictions=[pred("vehicle", (20, 20, 60, 50), 0.8), pred("vendor", (100, 10, 150, 60), 0.7)],
        review=Review(
            verdict="rejected",
            case_id=1,
            reason="false_positive",
            case_label="vehicle",
            case_xyxy=(21, 19, 61, 51),
        ),
    ),
    "corrected": make(
        "cam-02-20260602T010000000-case",
        stream="cam-02",
        ts=DAY2 + 3600,
        reasons=["case", "corrected"],
        violation_id="v-corrected",
        predictions=[pred("vehicle", (30, 30, 90, 80), 0.9), pred("litter", (150, 70, 170, 90), 0.6)],
        review=Review(
            verdict="corrected",
            case_id=2,
            label="vendor",
            xyxy=(28, 25, 95, 85),
            case_label="vehicle",
            case_xyxy=(30, 30, 90, 80),
        ),
    ),
    "labelled": make(
        "cam-02-20260602T020000000-uniform",
        stream="cam-02",
        ts=DAY2 + 7200,
        reasons=["uniform"],
        predictions=[pred("vehicle", (0, 0, 10, 10), 0.3)],
        labels=[Label(label="structure", xyxy=(5, 5, 100, 90))],
        labelled_by="cvat",
    ),
}
#: what each frame goes out with: (label, xyxy), scores aside
EXPECTED: dict[str, set[tuple[str, XYXY]]] = {
    "near": {("vehicle", (10, 10, 50, 40)), ("litter", (120, 60, 140, 80))},
    "rejected": {("vendor", (100, 10, 150, 60))},  # the false positive's box is left out
    "corrected": {("vendor", (28, 25, 95, 85)), ("litter", (150, 70, 170, 90))},  # the desk's box
    "labelled": {("structure", (5, 5, 100, 90))},
}


def sidecar(root: Path, rec: FrameRecord) -> Path:
    return frame_dir(root, rec.stream, rec.ts) / f"{rec.id}.json"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "collect"
    for rec in FRAMES.values():
        path = sidecar(root, rec)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path.with_suffix(".jpg")), np.full((H, W, 3), 90, np.uint8))
        frames.write_record(path, rec)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def close(got: set[tuple[str, XYXY]], want: set[tuple[str, XYXY]], tol: float = 1.0) -> bool:
    def match(a: tuple[str, XYXY], b: tuple[str, XYXY]) -> bool:
        return a[0] == b[0] and all(abs(x - y) <= tol for x, y in zip(a[1], b[1], strict=True))

    return len(got) == len(want) and all(any(match(g, w) for g in got) for w in want)


# ---------------------------------------------------------------- the verdicts on the pre-annotations
P2 = [pred("vehicle", (20, 20, 60, 50)), pred("vendor", (100, 10, 150, 60))]
P1 = [pred("vehicle", (20, 20, 60, 50))]


@pytest.mark.parametrize(
    ("predictions", "review", "want", "counts"),
    [
        (P2, None, {"vehicle", "vendor"}, {}),
        (P2, Review(verdict="confirmed", case_id=1), {"vehicle", "vendor"}, {}),
        (P2, Review(verdict="rejected", case_id=1, reason="false_positive", case_xyxy=(20, 20, 60, 50)),
         {"vendor"}, {"removed": 1}),
        (P2, Review(verdict="rejected", case_id=1, case_label="vendor"), {"vehicle"}, {"removed": 1}),
        (P1, Review(verdict="rejected", case_id=1, reason="false_positive"), set(), {"removed": 1}),
        (P2, Review(verdict="rejected", case_id=1, reason="false_positive"), {"vehicle", "vendor"},
         {"unmatched": 1}),  # two boxes, which was the case's is not known
        (P2, Review(verdict="rejected", case_id=1, reason="false_positive", case_xyxy=(0, 70, 10, 80)),
         {"vehicle", "vendor"}, {"unmatched": 1}),  # the case's box overlaps no prediction
        (P2, Review(verdict="rejected", case_id=1, reason="out_of_scope", case_label="vehicle"),
         {"vehicle", "vendor"}, {"kept": 1}),  # the vehicle was there; only the violation was not
        (P2, Review(verdict="rejected", case_id=1, reason="self_resolved", case_label="vehicle"),
         {"vehicle", "vendor"}, {"kept": 1}),
        (P2, Review(verdict="corrected", case_id=1, label="litter", xyxy=(22, 22, 58, 48),
                    case_xyxy=(20, 20, 60, 50)), {"litter", "vendor"}, {"replaced": 1}),
        (P2, Review(verdict="corrected", case_id=1, label="structure", xyxy=(100, 10, 150, 60)),
         {"vehicle", "structure"}, {"replaced": 1}),  # no case box: the prediction under the desk's goes
        (P2, Review(verdict="rejected", case_id=1, reason="out_of_scope", label="litter",
                    xyxy=(20, 20, 60, 50), case_label="vehicle"),
         {"litter", "vendor"}, {"replaced": 1}),  # the desk said what was there
        (P2, Review(verdict="corrected", case_id=1, case_label="vehicle"), {"vehicle", "vendor"},
         {"unmatched": 1}),  # a correction without the desk's box
    ],
)  # fmt: skip
def test_verdicts_on_the_pre_annotations(
    predictions: list[Prediction], review: Review | None, want: set[str], counts: dict[str, int]
) -> None:
    got = VerdictCounts()
    boxes = frame_boxes(make("f", predictions=predictions, review=review), got)
    assert {b.label for b in boxes} == want
    assert len(boxes) == len(want)
    assert all(b.score is not None for b in boxes if b.label in {p.label for p in predictions})
    assert (got.removed, got.replaced, got.kept, len(got.unmatched)) == (
        counts.get("removed", 0),
        counts.get("replaced", 0),
        counts.get("kept", 0),
        counts.get("unmatched", 0),
    )


def test_a_labelled_frame_goes_out_with_its_labels() -> None:
    boxes = frame_boxes(FRAMES["labelled"], VerdictCounts())
    assert [(b.label, b.xyxy, b.score) for b in boxes] == [("structure", (5, 5, 100, 90), None)]


# ---------------------------------------------------------------- selection
@pytest.mark.parametrize(
    ("selection", "want"),
    [
        (Selection(), {"near", "rejected", "corrected", "labelled"}),
        (Selection(reasons=frozenset({"rejected", "corrected"})), {"rejected", "corrected"}),
        (Selection(streams=frozenset({"cam-02"})), {"corrected", "labelled"}),
        (Selection(since=parse_since("2026-06-02")), {"corrected", "labelled"}),
        (Selection(since=parse_since("2026-06-01T01:30:00")), {"rejected", "corrected", "labelled"}),
        (Selection(unlabelled_only=True), {"near", "rejected", "corrected"}),
        (Selection(reasons=frozenset({"uniform"}), unlabelled_only=True), set()),
    ],
)
def test_pick_frames(root: Path, selection: Selection, want: set[str]) -> None:
    ids = {f.record.id for f in pick_frames(root, selection).frames}
    assert ids == {FRAMES[k].id for k in want}


def test_pick_frames_counts_unreadable_sidecars_and_missing_jpegs(root: Path) -> None:
    sidecar(root, FRAMES["near"]).with_suffix(".jpg").unlink()
    (root / "cam-01" / "2026-06-01" / "broken.json").write_text("{")
    picked = pick_frames(root, Selection())
    assert (len(picked.frames), picked.no_image, len(picked.unreadable)) == (3, 1, 1)
    with pytest.raises(CollectionError, match="no such collection folder"):
        pick_frames(root / "nowhere", Selection())


# ---------------------------------------------------------------- export
def read_back(fmt: str, out: Path) -> dict[str, set[tuple[str, XYXY]]]:
    """The export read with labelio's readers: frame id -> boxes."""
    if fmt == "labelstudio":
        tasks = json.loads((out / "tasks.json").read_text())
        got = {}
        for t in tasks:
            entry = (t.get("predictions") or t.get("annotations"))[0]
            got[t["data"]["frame_id"]] = {
                (r["value"]["rectanglelabels"][0], tuple(r["value"][k] * (W if k in "xwidth" else H) / 100
                 for k in ("x", "y", "width", "height")))
                for r in entry["result"]
            }  # fmt: skip
        return {k: {(lb, (x, y, x + w, y + h)) for lb, (x, y, w, h) in v} for k, v in got.items()}
    file = {"yolo": out, "coco": out / "annotations.json", "cvat": out / "annotations.xml"}[fmt]
    images, _ = import_labels(fmt, file, images_dir=out / "images")
    return {img.path.stem: {(b.label, b.xyxy) for b in img.boxes} for img in images}


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_applies_the_verdicts_in_every_format(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    code, out, err = run(capsys, "export", "--format", fmt, "--out", tmp_path / "out", "--dir", root)
    assert (code, err) == (0, "")
    got = read_back(fmt, tmp_path / "out")
    assert set(got) == {r.id for r in FRAMES.values()}
    for key, rec in FRAMES.items():
        assert close(got[rec.id], EXPECTED[key]), (key, got[rec.id])
    assert "4 frames (1 labelled" in out
    assert "desk verdicts: 1 false-positive boxes left out, 1 boxes replaced by the desk's correction" in out
    assert "by reason: near_threshold 1, uniform 1, case 2, rejected 1, corrected 1" in out
    assert "next:" in out and f"--format {fmt} --dir {root}`" in out


def test_label_studio_tasks_carry_the_frame_and_point_into_the_collection(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "export", "--format", "labelstudio", "--out", tmp_path / "ls", "--dir", root)
    assert code == 0
    tasks = {t["data"]["frame_id"]: t for t in json.loads((tmp_path / "ls" / "tasks.json").read_text())}
    rej = tasks[FRAMES["rejected"].id]
    # the collection's parent is the document root: Label Studio wants its storage below the root
    want = f"/data/local-files/?d=collect/cam-01/2026-06-01/{FRAMES['rejected'].id}.jpg"
    assert rej["data"]["image"] == want
    assert {k: rej["data"][k] for k in ("stream", "reasons", "violation_id", "verdict")} == {
        "stream": "cam-01", "reasons": "case,rejected", "violation_id": "v-rejected", "verdict": "rejected"
    }  # fmt: skip
    near = tasks[FRAMES["near"].id]["predictions"][0]
    assert near["model_version"] == "citywatch-synth@1.2.0"
    assert [r["score"] for r in near["result"]] == [0.41, 0.35]
    assert "annotations" in tasks[FRAMES["labelled"].id]  # labelled: a finished annotation
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root.resolve().parent}" in out
    assert (tmp_path / "ls" / "labeling_config.xml").read_text().count("<Label ") == 4


@pytest.mark.parametrize(
    ("option", "want"),
    [
        (["--image-url", "prefix:http://frames.local/c"], "http://frames.local/c/cam-01/2026-06-01/"),
        (["--image-url", "local-files:{parent}"], "/data/local-files/?d=collect/cam-01/2026-06-01/"),
        (["--image-url", "local-files:{root}"], "/data/local-files/?d=cam-01/2026-06-01/"),
    ],
)
def test_image_url_option(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], want: str
) -> None:
    option = [o.format(parent=root.parent, root=root) for o in option]
    code, _, _ = run(
        capsys, "export", "--format", "labelstudio", "--out", tmp_path / "o", "--dir", root, *option
    )
    assert code == 0
    tasks = json.loads((tmp_path / "o" / "tasks.json").read_text())
    assert tasks[0]["data"]["image"].startswith(want)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--reasons", "rejected,bogus"], 2, "bogus not among"),
        (["--since", "yesterday"], 2, "is not a day"),
        (["--image-url", "ftp:x"], 2, "local-files:ROOT or prefix:URL"),
        (["--format", "yolo", "--image-url", "prefix:http://x"], 2, "is for Label Studio"),
        (["--format", "pdf"], 2, "invalid choice"),
        (["--streams", "cam-09"], 1, "no frame of the 4"),
        (["--dir", "{tmp}/nowhere"], 1, "no such collection folder"),
    ],
)
def test_export_refusals(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    base = ["export", "--format", "labelstudio", "--out", str(tmp_path / "o"), "--dir", str(root)]
    got, _, err = run(capsys, *base, *(a.format(tmp=tmp_path) for a in argv))
    assert got == code
    assert message in err


# ---------------------------------------------------------------- import
def ls_export(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], labels: dict[str, list[Any]]
) -> Path:
    """Label Studio's JSON export of our tasks after a person labelled ``labels`` (frame key -> regions)."""
    assert run(capsys, "export", "--format", "labelstudio", "--out", tmp_path / "ls", "--dir", root)[0] == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    by_id = {rec.id: key for key, rec in FRAMES.items()}
    for n, task in enumerate(tasks, 1):
        task["id"] = n
        regions = labels.get(by_id[task["data"]["frame_id"]])
        result = [
            {"id": f"r{i}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
             "original_width": W, "original_height": H, "image_rotation": 0, "origin": "manual",
             "value": {"x": x1 / W * 100, "y": y1 / H * 100, "width": (x2 - x1) / W * 100,
                       "height": (y2 - y1) / H * 100, "rotation": 0, "rectanglelabels": [name]}}
            for i, (name, (x1, y1, x2, y2)) in enumerate(regions or [])
        ]  # fmt: skip
        task["annotations"] = (
            [{"id": 100 + n, "completed_by": 1, "result": result, "was_cancelled": False,
              "ground_truth": False, "created_at": "2026-06-03T08:00:00.000000Z",
              "updated_at": "2026-06-03T08:00:00.000000Z", "lead_time": 3.1, "task": n}]
            if regions is not None else []
        )  # fmt: skip
    path = tmp_path / "project-1-at-2026-06-03-08-00-abc.json"
    path.write_text(json.dumps(tasks))
    return path


LABELLED: dict[str, list[Any]] = {
    "near": [("car", (10.4, 9.6, 50.2, 40.3)), ("garbage", (119, 61, 141, 79))],
    "rejected": [],  # labelled: nothing there
    "corrected": [("stall", (28, 25, 95, 85))],
}


def labels_of(root: Path, key: str) -> list[tuple[str, XYXY]] | None:
    rec = read_record(sidecar(root, FRAMES[key]))
    return None if rec.labels is None else [(lb.label, lb.xyxy) for lb in rec.labels]


def test_label_studio_labels_come_back_into_their_sidecars(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = ls_export(root, tmp_path, capsys, LABELLED)
    cmap = "car=vehicle,garbage=litter,stall=vendor"
    code, out, err = run(
        capsys, "import", export, "--format", "labelstudio", "--dir", root, "--class-map", cmap
    )
    assert (code, err) == (0, "")
    want: dict[str, set[tuple[str, XYXY]]] = {
        "near": {("vehicle", (10.4, 9.6, 50.2, 40.3)), ("litter", (119, 61, 141, 79))},
        "rejected": set(),
        "corrected": {("vendor", (28, 25, 95, 85))},
    }
    for key, boxes in want.items():
        got = labels_of(root, key)
        assert got is not None and close(set(got), boxes), (key, got)
        rec = read_record(sidecar(root, FRAMES[key]))
        assert rec.labelled_by == "label-studio"
        assert rec.reasons == FRAMES[key].reasons  # why it was kept, unchanged
        assert rec.review == FRAMES[key].review and rec.predictions == FRAMES[key].predictions
    assert labels_of(root, "labelled") == [("structure", (5, 5, 100, 90))]  # not labelled again: untouched
    assert read_record(sidecar(root, FRAMES["labelled"])).labelled_by == "cvat"
    assert "3 images (1 labelled empty), 3 boxes" in out
    assert "1 images without a usable annotation" in out
    assert "sidecars: 3 labelled (litter 1, vehicle 1, vendor 1), 0 already so" in out
    code, out, _ = run(
        capsys, "import", export, "--format", "labelstudio", "--dir", root, "--class-map", cmap
    )
    assert code == 0 and "sidecars: 0 labelled (litter 1, vehicle 1, vendor 1), 3 already so" in out


def test_unknown_classes_fail_with_their_names_and_write_nothing(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = ls_export(root, tmp_path, capsys, LABELLED)
    code, _, err = run(
        capsys, "import", export, "--format", "labelstudio", "--dir", root, "--class-map", "car=vehicle"
    )
    assert code == 1
    assert "'garbage' (1 box" in err and "'stall' (1 box" in err and "--skip-unknown" in err
    assert all(labels_of(root, k) is None for k in ("near", "rejected", "corrected"))


def test_skip_unknown_counts_the_boxes_it_leaves_out(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = ls_export(root, tmp_path, capsys, LABELLED)
    code, out, _ = run(
        capsys, "import", export, "--format", "labelstudio", "--dir", root, "--class-map", "car=vehicle",
        "--skip-unknown", "--by", "annotator-7",
    )  # fmt: skip
    assert code == 0
    assert "skipped classes: 'garbage' (1 box" in out and "'stall' (1 box" in out
    near = labels_of(root, "near")
    assert near is not None and close(set(near), {("vehicle", (10.4, 9.6, 50.2, 40.3))})
    assert labels_of(root, "corrected") == []  # its only box was of a skipped class
    assert read_record(sidecar(root, FRAMES["near"])).labelled_by == "annotator-7"


def test_yolo_export_comes_back_as_labels(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "export", "--format", "yolo", "--out", tmp_path / "y", "--dir", root)[0] == 0
    code, out, _ = run(capsys, "import", tmp_path / "y", "--format", "yolo", "--dir", root)
    assert code == 0
    assert "model score" not in out  # YOLO labels carry none
    for key, boxes in EXPECTED.items():
        got = labels_of(root, key)
        assert got is not None and close(set(got), boxes), (key, got)
    assert read_record(sidecar(root, FRAMES["near"])).labelled_by == "yolo"


def test_an_import_of_model_scores_is_flagged(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "export", "--format", "coco", "--out", tmp_path / "c", "--dir", root)[0] == 0
    code, out, _ = run(capsys, "import", tmp_path / "c", "--format", "coco", "--dir", root)
    assert code == 0
    assert "4 boxes carry a model score (imported as labels): did a person check them?" in out


def test_import_source_in_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "export.json").write_text("[]")
    assert import_source(tmp_path / "a", "labelstudio") == tmp_path / "a" / "export.json"
    (tmp_path / "a" / "other.json").write_text("[]")
    with pytest.raises(CollectionError, match="give the labelstudio file itself"):
        import_source(tmp_path / "a", "labelstudio")
    (tmp_path / "a" / "annotations.json").write_text("{}")
    assert import_source(tmp_path / "a", "coco") == tmp_path / "a" / "annotations.json"
    assert import_source(tmp_path / "a", "yolo") == tmp_path / "a"


# ---------------------------------------------------------------- wiring
def test_the_citywatch_command_hands_export_and_import_to_training(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = citywatch.main(
        ["collect", "export", "--format", "coco", "--out", str(tmp_path / "c"), "--dir", str(root)]
    )
    assert code == 0 and (tmp_path / "c" / "annotations.json").is_file()
    assert "collect export" in citywatch.USAGE and "collect import" in citywatch.USAGE


def test_the_sidecar_model_is_the_contracts_one() -> None:
    for name in (
        "FrameRecord",
        "Review",
        "Label",
        "Prediction",
        "read_record",
        "write_record",
        "CollectError",
    ):
        assert getattr(collect_record, name) is getattr(frames, name)
    rec = FrameRecord.model_validate_json(FRAMES["rejected"].model_dump_json())
    assert rec.review is not None and rec.review.case_xyxy == (21, 19, 61, 51)
