"""The per-host tune cache (detector/inference/tune_cache.py) and the backend choice it feeds
(detector/inference/model.py).

No timing here: frames/s values are written into the cache by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from detector.config.model import ModelConfig
from detector.contracts.manifest import Manifest, ModelEntry
from detector.inference.model import choose_backend
from detector.inference.tune_cache import (
    HostInfo,
    TuneResult,
    cache_path,
    candidates,
    choose,
    host_info,
    lookup,
    parse_cpuinfo,
    read_cache,
    write_cache,
)

SPR = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile avx_vnni\n"  # noqa: E501
ICL = "model name\t: Intel(R) Xeon(R) Gold 6338\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"
ZEN = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd\nCPU part\t: 0xd0c\n"
VERSIONS = {"openvino": "2026.4.1", "onnxruntime": "1.32.0"}


@pytest.mark.parametrize(
    ("text", "cpu", "flags", "amx"),
    [
        (SPR, "Intel(R) Xeon(R) Platinum 8480+",
         ("amx_bf16", "amx_int8", "avx512_vnni", "avx512_bf16", "avx_vnni", "avx512f", "avx2"), True),
        (ICL, "Intel(R) Xeon(R) Gold 6338", ("avx512_vnni", "avx512f", "avx2"), False),
        (ZEN, "AMD EPYC 7B13", ("avx2",), False),
        (ARM, None, (), False),  # no model name: the platform's
    ],
)  # fmt: skip
def test_host_info_keeps_the_flags_that_matter(
    text: str, cpu: str | None, flags: tuple[str, ...], amx: bool
) -> None:
    host = host_info(text, cores=2, versions=VERSIONS)
    assert host.flags == flags
    if cpu is not None:
        assert host.cpu == cpu
    assert host.as_json()["amx"] is amx
    assert len(host.key) == 12 and host.as_json()["key"] == host.key


BASE = HostInfo("Intel(R) Xeon(R) Processor", ("amx_bf16", "avx2"), 2, "2026.4.1", "1.32.0")


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (HostInfo("Intel(R) Xeon(R) Processor", ("amx_bf16", "avx2"), 2, "2026.4.1", "1.32.0"), True),
        (HostInfo("Intel(R) Xeon(R) Processor", ("avx2",), 2, "2026.4.1", "1.32.0"), False),  # no AMX
        (HostInfo("Intel(R) Xeon(R) Processor", ("amx_bf16", "avx2"), 4, "2026.4.1", "1.32.0"), False),
        (HostInfo("Intel(R) Xeon(R) Processor", ("amx_bf16", "avx2"), 2, "2025.1.0", "1.32.0"), False),
        (HostInfo("Intel(R) Xeon(R) Processor", ("amx_bf16", "avx2"), 2, "2026.4.1", None), False),
        (HostInfo("AMD EPYC 7B13", ("amx_bf16", "avx2"), 2, "2026.4.1", "1.32.0"), False),
    ],
)
def test_host_key_changes_with_what_changes_the_winner(other: HostInfo, same: bool) -> None:
    assert (other.key == BASE.key) is same


def test_parse_cpuinfo_takes_the_first_cpu() -> None:
    assert parse_cpuinfo(SPR + "\n" + ZEN)[0] == "Intel(R) Xeon(R) Platinum 8480+"
    assert parse_cpuinfo("") == ("", frozenset())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, f"var/tune/{BASE.key}.json"),
        ({"CITYWATCH_TUNE_CACHE": "/tmp/x/tune.json"}, "/tmp/x/tune.json"),
    ],
)
def test_cache_path(env: dict[str, str], expected: str) -> None:
    assert str(cache_path(BASE, env)).endswith(expected)


@pytest.mark.parametrize(
    ("fps", "batch", "expected"),
    [
        ({}, 8, None),
        ({"onnx": {"batch1": 30.0, "batch8": 34.0}, "openvino": {"batch1": 100.0, "batch8": 180.0}}, 8,
         "openvino"),
        ({"openvino": {"batch1": 100.0, "batch8": 150.0}, "openvino_int8": {"batch1": 90.0, "batch8": 160.0}},
         8, "openvino_int8"),  # the configured batch decides
        ({"openvino": {"batch1": 100.0}, "openvino_int8": {"batch1": 90.0}}, 1, "openvino"),
        ({"onnx": {"batch1": 50.0, "batch8": 60.0}, "openvino": {"batch1": 40.0, "batch8": 60.0}}, 8, "onnx"),
        ({"onnx": {"batch1": 40.0, "batch8": 60.0}, "openvino": {"batch1": 40.0, "batch8": 60.0}}, 8, "onnx"),
    ],
)  # fmt: skip
def test_choose(fps: dict[str, dict[str, float]], batch: int, expected: str | None) -> None:
    assert choose(fps, batch, ["onnx", "onnx_int8", "openvino", "openvino_int8"]) == expected


def make_entry(tmp_path: Path, exports: dict[str, str], files: bool = True, **over: Any) -> ModelEntry:
    data: dict[str, Any] = {
        "name": "m", "version": "1.0.0", "file": "m.pt", "exports": exports, "imgsz": 640,
        "classes": ["vehicle"], "rule_labels": {"vehicle": "vehicle"}, "backend": "onnx",
        "precision": "fp32", "metrics": {"map50": 0.9}, "data_hash": "a" * 64, "sha256": "b" * 64,
        "card": "m.md", "created": "2026-12-01T00:00:00+00:00",
        "checksums": {  # the manifest's shape; these tests never load the files
            f"{rel}/m.xml" if rel.endswith("_openvino_model") else rel: "c" * 64 for rel in exports.values()
        },
    }  # fmt: skip
    data.update(over)
    manifest = Manifest.model_validate({"default": "m", "models": [data]})
    entry = manifest.models[0]
    entry._models_dir = tmp_path
    if files:
        (tmp_path / "m.pt").write_bytes(b"pt")
        for rel in exports.values():
            (tmp_path / rel).mkdir() if rel.endswith("_openvino_model") else (tmp_path / rel).write_bytes(
                b"x"
            )
    return entry


@pytest.mark.parametrize(
    ("exports", "files", "expected"),
    [
        ({"onnx": "m.onnx", "openvino_int8": "m_int8_openvino_model"}, True, ["onnx", "openvino_int8"]),
        ({"openvino": "m_openvino_model", "onnx_int8": "m-int8.onnx", "onnx": "m.onnx"}, True,
         ["onnx", "onnx_int8", "openvino"]),
        ({}, True, ["pt"]),  # the .pt only when nothing else exists
        ({"onnx": "m.onnx"}, False, []),  # listed but missing: not a candidate
    ],
)  # fmt: skip
def test_candidates_are_the_manifests_exports(
    tmp_path: Path, exports: dict[str, str], files: bool, expected: list[str]
) -> None:
    assert candidates(make_entry(tmp_path, exports, files)) == expected


def result(entry: ModelEntry, winner: str = "openvino", **over: Any) -> TuneResult:
    fields: dict[str, Any] = {
        "ref": entry.ref, "sha256": entry.sha256, "winner": winner, "candidates": candidates(entry),
        "fps": {k: {"batch1": 10.0, "batch8": 20.0} for k in candidates(entry)}, "batch": 8,
    }  # fmt: skip
    fields.update(over)
    return TuneResult(**fields)


EXPORTS = {"onnx": "m.onnx", "openvino": "m_openvino_model"}


def test_cache_roundtrip_keeps_other_models_and_records_the_host(tmp_path: Path) -> None:
    entry = make_entry(tmp_path, EXPORTS)
    path = tmp_path / "tune" / "host.json"
    write_cache(path, BASE, [result(entry)])
    write_cache(
        path, BASE, [TuneResult("other@2.0.0", "c" * 64, "onnx", ["onnx"], {"onnx": {"batch1": 1.0}})]
    )
    data = json.loads(path.read_text())
    assert data["host"]["cpu"] == BASE.cpu and data["host"]["flags"] == ["amx_bf16", "avx2"]
    assert sorted(data["models"]) == ["m@1.0.0", "other@2.0.0"]
    assert data["models"]["m@1.0.0"]["backend"] == "openvino" and data["models"]["m@1.0.0"]["fps"]["onnx"]
    assert read_cache(path, BASE)["m@1.0.0"] == result(entry)


@pytest.mark.parametrize(
    ("case", "found"),
    [
        ("valid", True),
        ("other host", False),
        ("sha changed", False),  # the model was re-registered: measure again
        ("new export", False),  # an export registered after the measurement: measure again
        ("corrupt", False),
        ("absent", False),
    ],
)
def test_lookup(tmp_path: Path, case: str, found: bool) -> None:
    entry = make_entry(tmp_path, EXPORTS)
    path = tmp_path / "tune.json"
    stored = result(entry, sha256="d" * 64) if case == "sha changed" else result(entry)
    if case == "new export":
        stored = result(entry, candidates=["onnx"])
    if case != "absent":
        write_cache(path, BASE if case != "other host" else HostInfo("x", (), 1, None, None), [stored])
    if case == "corrupt":
        path.write_text("{not json")
    assert (lookup(entry, BASE, path) is not None) is found


@pytest.mark.parametrize(
    ("config", "cached", "expected"),
    [
        ({"backend": "onnx"}, "openvino", ("onnx", "fp32", "model.backend in the config")),
        ({"backend": "openvino"}, None, ("openvino", "int8", "model.backend in the config")),  # only int8
        ({}, "openvino_int8", ("openvino", "int8", "tune cache")),
        ({"tune": "off"}, "onnx", ("onnx", "fp32", "tune cache")),  # off skips measuring, not the cache
        ({"tune": "off"}, None, ("onnx", "fp32", "the manifest's backend")),
    ],
)
def test_backend_choice_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], cached: str | None,
    expected: tuple[str, str, str],
) -> None:  # fmt: skip
    entry = make_entry(tmp_path, {"onnx": "m.onnx", "openvino_int8": "m_int8_openvino_model"})
    path = tmp_path / "tune.json"
    monkeypatch.setenv("CITYWATCH_TUNE_CACHE", str(path))
    if cached is not None:
        write_cache(path, host_info(), [result(entry, winner=cached)])
    choice = choose_backend(entry, ModelConfig.model_validate(config))
    assert (choice.kind, choice.precision) == expected[:2]
    assert expected[2] in choice.why


def test_tune_modules_do_not_import_runtimes() -> None:
    code = (
        "import sys, detector.inference.tune, detector.inference.tune_cache, detector.inference.model; "
        "print(sorted(m for m in ('torch', 'ultralytics', 'openvino', 'onnxruntime') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("size", "described"),
    [
        ((810, 1080), "still.png 810x455->1280x720"),  # portrait (bus.jpg): top and bottom cropped
        ((1000, 300), "still.png 533x300->1280x720"),  # too wide: the sides cropped
        (None, "synthetic 1280x720"),  # no still anywhere
    ],
)
def test_tune_frame_is_a_16_9_camera_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int] | None, described: str
) -> None:
    import cv2
    import numpy as np

    from detector.inference import tune

    monkeypatch.setattr(tune, "DEFAULT_IMAGE", tmp_path / "absent.jpg")
    monkeypatch.delenv("CITYWATCH_TUNE_IMAGE", raising=False)
    still = tmp_path / "still.png"
    if size is not None:
        cv2.imwrite(str(still), np.full((size[1], size[0], 3), 90, np.uint8))
    frame, text = tune.tune_frame(still)
    assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
    assert text == described
