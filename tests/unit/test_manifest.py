"""models/manifest.yaml: parsing, errors that name the file and key, sha256 checks, paths, atomic save."""

from __future__ import annotations

import copy
import hashlib
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.contracts.artifacts import verify_sha256
from detector.contracts.manifest import (
    REPO_ROOT,
    Manifest,
    ManifestError,
    load_manifest,
    resolve_path,
    save_manifest,
)

WEIGHTS = b"not really weights"
EXPORT = b"onnx"


def entry(name: str = "citywatch-synth", version: str = "1.0.0", **over: Any) -> dict[str, Any]:
    stem = f"{name}-{version}"
    e: dict[str, Any] = {
        "name": name,
        "version": version,
        "file": f"{stem}.pt",
        "exports": {"onnx": f"{stem}.onnx"},
        "task": "detect",
        "imgsz": 320,
        "classes": ["vehicle", "stall", "litter", "structure"],
        "rule_labels": {
            "vehicle": "vehicle",
            "stall": "vendor",
            "litter": "litter",
            "structure": "structure",
        },
        "backend": "onnx",
        "precision": "fp32",
        "metrics": {"map50": 0.9, "per_class": {"vehicle": 0.95, "stall": 0.9}},
        "data_hash": "a" * 64,
        "sha256": hashlib.sha256(WEIGHTS).hexdigest(),
        "checksums": {f"{stem}.onnx": hashlib.sha256(EXPORT).hexdigest()},
        "card": f"{stem}.md",
        "created": "2026-11-27T10:00:00+00:00",
    }
    e.update(over)
    return e


def manifest_data(*entries: dict[str, Any], default: str | None = "citywatch-synth") -> dict[str, Any]:
    return {"default": default, "models": list(entries) or [entry()]}


def write(folder: Path, data: Any, files: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "manifest.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    if files and isinstance(data, dict):
        for e in data.get("models", []):
            (folder / e["file"]).write_bytes(WEIGHTS)
            for rel in e.get("exports", {}).values():
                (folder / rel).write_bytes(EXPORT)
    return p


def _with(path: str, value: Any, delete: bool = False) -> dict[str, Any]:
    """manifest_data() with one key path changed ('models.0.imgsz') or deleted."""
    data = copy.deepcopy(manifest_data())
    keys = path.split(".")
    node: Any = data
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(manifest_data(), None, id="valid"),
        pytest.param(
            _with("models.0.colour", "red"), "models.0.colour: unknown key 'colour'", id="unknown-key"
        ),
        pytest.param(_with("extra", 1), "extra: unknown key 'extra'", id="unknown-top-key"),
        pytest.param(
            _with("models.0.metrics.top5", 0.5), "models.0.metrics.top5: unknown key", id="unknown-nested-key"
        ),
        pytest.param(
            _with("models.0.sha256", "xyz"), "models.0.sha256: Value error, must be 64", id="bad-sha"
        ),
        pytest.param(_with("models.0.version", 1.0), "models.0.version", id="version-float"),
        pytest.param(_with("models.0.version", "1.0"), "must look like 1.2.3", id="version-short"),
        pytest.param(_with("models.0.backend", "tensorrt"), "models.0.backend", id="bad-backend"),
        pytest.param(_with("models.0.precision", "fp16"), "models.0.precision", id="bad-precision"),
        pytest.param(_with("models.0.file", "../x.pt"), "models.0.file", id="file-escapes"),
        pytest.param(
            _with("models.0.exports", {"tflite": "x.tflite"}), "unknown export kind", id="bad-export"
        ),
        pytest.param(
            _with("models.0.rule_labels", {"bus": "vehicle"}), "not classes: ['bus']", id="rule-cls"
        ),
        pytest.param(
            _with("models.0.checksums", {}),
            "citywatch-synth@1.0.0: exports ['onnx'] have no sha256 in `checksums`; run "
            "`citywatch models rehash citywatch-synth@1.0.0`",
            id="export-without-sha",
        ),
        pytest.param(
            _with("models.0.checksums", None, delete=True),
            "exports ['onnx'] have no sha256",
            id="no-checksums",
        ),
        pytest.param(
            manifest_data(entry(checksums={**entry()["checksums"], "other.onnx": "c" * 64})),
            "`checksums` lists files of no export: ['other.onnx']",
            id="checksum-of-no-export",
        ),
        pytest.param(
            manifest_data(entry(checksums={"citywatch-synth-1.0.0.onnx": "C" * 64})),
            "checksum of citywatch-synth-1.0.0.onnx: must be 64 lower-case hex",
            id="bad-checksum",
        ),
        pytest.param(
            _with("models.0.exports.openvino", "citywatch-synth-1.0.0_openvino_model"),
            "exports ['openvino'] have no sha256",
            id="folder-export-without-sha",
        ),
        pytest.param(_with("models.0.rule_labels", {"stall": "stall"}), "rule_labels.stall", id="rule-label"),
        pytest.param(_with("models.0.created", "2026-11-27T10:00:00"), "models.0.created", id="naive-time"),
        pytest.param(
            _with("models.0.imgsz", None, delete=True), "models.0.imgsz: Field required", id="missing"
        ),
        pytest.param(_with("default", "other"), "default 'other' names no model", id="bad-default"),
        pytest.param(
            manifest_data(entry(), entry()), "citywatch-synth@1.0.0 is listed twice", id="duplicate"
        ),
        pytest.param("models: [", "not valid YAML", id="bad-yaml"),
        pytest.param("- 1\n- 2\n", "top level must be a mapping", id="not-mapping"),
    ],
)
def test_load_manifest(tmp_path: Path, data: Any, expected: str | None) -> None:
    p = write(tmp_path, data)
    if expected is None:
        m = load_manifest(p)
        assert m.get(None).ref == "citywatch-synth@1.0.0"
        assert m.get(None).rule_labels["stall"] == "vendor"
        return
    with pytest.raises(ManifestError) as err:
        load_manifest(p)
    assert str(p) in str(err.value)
    assert expected in str(err.value)


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.yaml: manifest not found"):
        load_manifest(tmp_path / "manifest.yaml")
    assert load_manifest(tmp_path, missing_ok=True).models == []


def test_env_overrides_models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "elsewhere", manifest_data())
    monkeypatch.setenv("CITYWATCH_MODELS_DIR", str(tmp_path / "elsewhere"))
    entry_ = load_manifest().get("citywatch-synth")
    assert verify_sha256(entry_) == tmp_path / "elsewhere" / "citywatch-synth-1.0.0.pt"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("ok", None),
        ("changed", r"citywatch-synth-1\.0\.0\.pt: sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}"),
        ("missing", "is listed in the manifest but missing"),
    ],
)
def test_verify_sha256(tmp_path: Path, case: str, expected: str | None) -> None:
    m = load_manifest(write(tmp_path, manifest_data()))
    e = m.get(None)
    weights = tmp_path / e.file
    if case == "changed":
        weights.write_bytes(WEIGHTS + b"!")
    elif case == "missing":
        weights.unlink()
    if expected is None:
        assert verify_sha256(e) == weights
    else:
        with pytest.raises(ManifestError, match=expected):
            verify_sha256(e)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (None, "1.1.0"),  # default 'citywatch-synth' = its highest version
        ("citywatch-synth", "1.1.0"),
        ("citywatch-synth@1.0.0", "1.0.0"),
        ("coco@2.0.0", "2.0.0"),
        ("nope", ManifestError),
        ("citywatch-synth@9.9.9", ManifestError),
    ],
)
def test_get(tmp_path: Path, ref: str | None, expected: str | type[Exception]) -> None:
    data = manifest_data(entry(), entry(version="1.1.0"), entry(name="coco", version="2.0.0"))
    m = load_manifest(write(tmp_path, data))
    if isinstance(expected, str):
        assert m.get(ref).version == expected
    else:
        with pytest.raises(expected, match="no model"):
            m.get(ref)


@pytest.mark.parametrize(
    ("kind", "precision", "expected"),
    [
        (None, None, "citywatch-synth-1.0.0.onnx"),  # the entry's backend
        ("pt", None, "citywatch-synth-1.0.0.pt"),
        ("ultralytics", "fp32", "citywatch-synth-1.0.0.pt"),
        ("onnx", "int8", "no onnx_int8 export"),
        ("openvino", None, "no openvino export"),
        ("pt", "int8", "fp32 only"),
    ],
)
def test_resolve_path(tmp_path: Path, kind: Any, precision: Any, expected: str) -> None:
    e = load_manifest(write(tmp_path, manifest_data())).get(None)
    if expected.endswith((".pt", ".onnx")):
        assert resolve_path(e, kind, precision) == tmp_path / expected
    else:
        with pytest.raises(ManifestError, match=expected):
            resolve_path(e, kind, precision)


def test_resolve_path_missing_file(tmp_path: Path) -> None:
    e = load_manifest(write(tmp_path, manifest_data())).get(None)
    (tmp_path / "citywatch-synth-1.0.0.onnx").unlink()
    with pytest.raises(ManifestError, match="listed in the manifest but missing"):
        resolve_path(e)


def test_save_roundtrip_is_atomic_and_readable(tmp_path: Path) -> None:
    p = write(tmp_path, manifest_data())
    m = load_manifest(p)
    m.get(None).exports["openvino"] = "citywatch-synth-1.0.0_openvino_model"
    m.get(None).checksums["citywatch-synth-1.0.0_openvino_model/m.xml"] = "c" * 64
    save_manifest(m)
    again = load_manifest(p)
    assert again == m
    assert again.get(None).exports["openvino"] == "citywatch-synth-1.0.0_openvino_model"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".manifest-")] == []
    assert yaml.safe_load(p.read_text())["models"][0]["version"] == "1.0.0"  # still a string in YAML


def test_add_refuses_same_version(tmp_path: Path) -> None:
    m = Manifest.model_validate(manifest_data())
    with pytest.raises(ManifestError, match="already in the manifest"):
        m.add(m.get(None).model_copy())


def test_manifest_module_does_not_import_torch() -> None:
    code = (
        "import sys, detector.contracts.manifest; "
        "print('torch' in sys.modules or 'ultralytics' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{REPO_ROOT}/datasets/x/dataset.yaml", "datasets/x/dataset.yaml"),
        ({"project": f"{REPO_ROOT}/runs/train", "epochs": 3}, {"project": "runs/train", "epochs": 3}),
        ([f"data: {REPO_ROOT}/a.yaml", 1.5], ["data: a.yaml", 1.5]),
        ("/elsewhere/data.yaml", "/elsewhere/data.yaml"),
    ],
)
def test_cards_and_entries_name_repo_relative_paths(value: object, expected: object) -> None:
    from training.registry import repo_relative

    assert repo_relative(value) == expected
