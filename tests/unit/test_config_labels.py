"""`citywatch config check`: a rule served by a model without the rule's label is refused (config_labels)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.config.check import check
from detector.config.labels import ModelLabels, describe_path, label_problems
from detector.config.model import ModelConfig
from tests.unit.factories import rule_models_config

COCO = ModelLabels("yolov8n-coco@1.0.0", ("person", "car", "bus"), frozenset({"vehicle"}))
SYNTH = ModelLabels("citywatch-synth@1.1.0", ("vehicle", "stall", "litter", "structure"),
                    frozenset({"vehicle", "vendor", "litter", "structure"}))  # fmt: skip
UNKNOWN = ModelLabels("x.pt", None, note="x.pt: a .pt cannot be read without loading it; not checked")
MISSING = ModelLabels("nope", None, error="no model 'nope'; known: citywatch-synth@1.1.0")
MODELS = {None: SYNTH, "citywatch-synth": SYNTH, "yolov8n-coco": COCO, "pt": UNKNOWN, "nope": MISSING}
ALL = "[illegal_parking, street_vending, illegal_structure, unclean_road]"


config = rule_models_config


def describe(mc: ModelConfig) -> ModelLabels:
    return MODELS["pt" if mc.path is not None else mc.name]


def suggest(label: str) -> str | None:
    return "citywatch-synth" if label in SYNTH.rule_labels else None


# (global rule_models, stream rule_models, zone rules, model section, expected [(key path, message part)])
# fmt: off
CASES = [
    ("{}", "{}", ALL, "", []),
    ("{illegal_parking: {name: yolov8n-coco}}", "{}", ALL, "", []),
    ("{street_vending: {name: yolov8n-coco}}", "{}", ALL, "",
     [(("rule_models", "street_vending"), "street_vending is served by yolov8n-coco@1.0.0")]),
    ("{street_vending: {name: yolov8n-coco}}", "{}", "[illegal_parking]", "", []),  # vending not enabled
    ("{}", "{street_vending: {name: yolov8n-coco}}", "[street_vending]", "",
     [(("streams", 0, "rule_models", "street_vending"), "no `vendor` rule label")]),
    ("{}", "{}", ALL, "model: {name: yolov8n-coco}\n",
     [(("model",), "street_vending"), (("model",), "illegal_structure"), (("model",), "unclean_road")]),
    ("{unclean_road: {name: yolov8n-coco}}", "{unclean_road: {name: citywatch-synth}}", ALL, "", []),
    ("{illegal_structure: {path: x.pt}}", "{}", ALL, "", []),  # cannot tell: a note, no problem
    ("{illegal_parking: {name: nope}}", "{}", ALL, "",
     [(("rule_models", "illegal_parking"), "no model 'nope'")]),
]
# fmt: on


@pytest.mark.parametrize(("global_rm", "stream_rm", "rules", "model", "expected"), CASES)
def test_label_problems(
    global_rm: str, stream_rm: str, rules: str, model: str, expected: list[tuple[tuple[Any, ...], str]]
) -> None:
    problems, notes = label_problems(config(global_rm, stream_rm, rules, model), describe, suggest)
    assert len(problems) == len(expected), problems
    for problem, (loc, part) in zip(problems, expected, strict=True):
        assert problem.loc == loc and part in problem.message
        assert "under rule_models" in problem.hint or "models list" in problem.hint
    assert notes == ([UNKNOWN.note] if "x.pt" in global_rm else [])


def test_the_hint_names_a_model_that_has_the_label() -> None:
    problems, _ = label_problems(
        config("{street_vending: {name: yolov8n-coco}}", "{}", ALL), describe, suggest
    )
    assert problems[0].hint == (
        "serve street_vending from a model with a `vendor` rule label, e.g. citywatch-synth, "
        "under rule_models"
    )
    assert "enabled on cam/z" in problems[0].message


def test_a_rule_whose_classes_name_a_model_class_is_served() -> None:
    extra = "    rules: {street_vending: {classes: [bus]}}\n"  # odd, but the COCO model has `bus`
    cfg = config("{street_vending: {name: yolov8n-coco}}", "{}", "[street_vending]", extra=extra)
    assert label_problems(cfg, describe, suggest) == ([], [])


def test_an_unwritten_model_section_is_reported_at_the_zone_rule() -> None:
    """`model:` absent from the file: the problem points at the zone's rule instead."""
    problems, _ = label_problems(config("{}", "{}", "[street_vending]"), _only_coco, suggest)
    assert [p.loc for p in problems] == [("streams", 0, "zones", 0, "rules", 0)]


def _only_coco(mc: ModelConfig) -> ModelLabels:
    return COCO


# ---------------------------------------------------------------------- model files


def make_onnx(path: Path, names: str | None) -> Path:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    x = helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph)
    if names is not None:
        helper.set_model_props(model, {"names": names})
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("kind", "classes", "labels", "note"),
    [
        ("onnx", ("person", "car", "truck"), {"vehicle"}, None),
        ("onnx-no-names", None, set(), "declares no class names"),
        ("openvino", ("vehicle", "stall"), {"vehicle", "vendor"}, None),
        ("pt", None, set(), "cannot be read without loading"),
        ("missing", None, set(), "does not exist"),
    ],
)
def test_describe_path(
    tmp_path: Path, kind: str, classes: tuple[str, ...] | None, labels: set[str], note: str | None
) -> None:
    if kind == "onnx":
        path = make_onnx(tmp_path / "m.onnx", "{0: 'person', 1: 'car', 2: 'truck'}")
    elif kind == "onnx-no-names":
        path = make_onnx(tmp_path / "m.onnx", None)
    elif kind == "openvino":
        path = tmp_path / "m_openvino_model"
        path.mkdir()
        (path / "metadata.yaml").write_text(yaml.safe_dump({"names": {0: "vehicle", 1: "stall"}}))
    elif kind == "pt":
        path = tmp_path / "m.pt"
        path.write_bytes(b"weights")
    else:
        path = tmp_path / "gone.onnx"
    got = describe_path(path)
    assert got.classes == classes and set(got.rule_labels) == labels
    assert (got.note is None) if note is None else (note in (got.note or ""))


# ---------------------------------------------------------------------- the command


def entry(name: str, classes: list[str], rule_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name, "version": "1.0.0", "file": f"{name}.pt", "imgsz": 640, "classes": classes,
        "rule_labels": rule_labels, "metrics": {"map50": 0.5}, "data_hash": "a" * 64, "sha256": "b" * 64,
        "card": f"{name}.md", "created": "2026-12-01T00:00:00+00:00",
    }  # fmt: skip


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = {
        "default": "synth",
        "models": [
            entry("synth", ["vehicle", "stall"], {"vehicle": "vehicle", "stall": "vendor"}),
            entry("coco", ["person", "car"], {"car": "vehicle"}),
        ],
    }
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "manifest.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CITYWATCH_MODELS_DIR", str(tmp_path / "models"))


@pytest.mark.usefixtures("manifest")
@pytest.mark.parametrize(
    ("vending_model", "code", "expected"),
    [
        ("coco", 1, "streams.yaml:4:3: rule_models.street_vending = {\"name\": \"coco\"}: street_vending "
                    "is served by coco@1.0.0 (rule_models), which has no `vendor` rule label (its rule "
                    "labels: vehicle); enabled on cam/z (hint: serve street_vending from a model with a "
                    "`vendor` rule label, e.g. synth, under rule_models)"),
        ("synth", 0, "streams.yaml: OK: 1 stream (1 enabled), 1 zone"),
    ],
)  # fmt: skip
def test_config_check_refuses_a_rule_its_model_cannot_see(
    tmp_path: Path, vending_model: str, code: int, expected: str
) -> None:
    file = tmp_path / "streams.yaml"
    file.write_text(
        "version: 1\n"
        "rule_models:\n"
        "  illegal_parking: {name: coco}\n"
        f"  street_vending: {{name: {vending_model}}}\n"
        "streams:\n"
        "  - id: cam\n"
        "    url: a.mp4\n"
        "    zones: [{id: z, polygon: [[0, 0.5], [1, 0.5], [1, 1]],\n"
        "             rules: [illegal_parking, street_vending]}]\n"
    )
    out = io.StringIO()
    assert check(file, out=out) == code
    assert out.getvalue().splitlines()[0].startswith(f"{tmp_path}/{expected}")
