"""Every model artefact is checked against its sha256 in the manifest when it is loaded.

``detector.contracts.artifacts`` (the check and the digests), the loader that refuses a changed file
(``detector.inference.model.load_model``), and the registry paths that write the hashes (``record_export``,
``rehash``, ``register``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.contracts import artifacts
from detector.contracts.artifacts import export_checksums, listing_digest, verified_path, verify_artifact
from detector.contracts.manifest import REPO_ROOT, ManifestError, ModelEntry, load_manifest, sha256_file

OV = "m-1.0.0_openvino_model"
FILES = {
    "m-1.0.0.pt": b"weights",
    "m-1.0.0.onnx": b"an onnx graph",
    f"{OV}/m-1.0.0.xml": b"<net/>",
    f"{OV}/m-1.0.0.bin": bytes(range(256)) * 4,
    f"{OV}/metadata.yaml": b"names: {0: vehicle}\n",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_models(folder: Path, **over: Any) -> Path:
    """A models folder with a .pt, an ONNX export and an OpenVINO export folder, all hashed."""
    for rel, data in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    entry: dict[str, Any] = {
        "name": "m", "version": "1.0.0", "file": "m-1.0.0.pt",
        "exports": {"onnx": "m-1.0.0.onnx", "openvino": OV}, "imgsz": 64, "classes": ["vehicle"],
        "rule_labels": {"vehicle": "vehicle"}, "backend": "openvino", "sha256": sha(FILES["m-1.0.0.pt"]),
        "checksums": {rel: sha(data) for rel, data in FILES.items() if rel != "m-1.0.0.pt"},
        "card": "m-1.0.0.md", "created": "2026-12-01T00:00:00+00:00",
    }  # fmt: skip
    entry.update(over)
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump({"default": "m", "models": [entry]}, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    artifacts.clear_cache()


def _flip_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        ("openvino", None, None),
        ("onnx", None, None),
        ("pt", None, None),
        (
            "openvino",
            lambda d: _flip_byte(d / OV / "m-1.0.0.bin"),
            [f"{OV}/m-1.0.0.bin: sha256 ", "the manifest says " + sha(FILES[f"{OV}/m-1.0.0.bin"]),
             "`git checkout -- <tmp>/" + OV + "`", "`citywatch models rehash m@1.0.0`"],
        ),
        (
            "openvino",
            lambda d: (d / OV / "metadata.yaml").unlink(),
            [f"{OV}/metadata.yaml: missing (the manifest says sha256 {sha(FILES[f'{OV}/metadata.yaml'])})"],
        ),
        (
            "openvino",
            lambda d: (d / OV / "extra.xml").write_bytes(b"<net/>"),
            [f"{OV}/extra.xml: not listed in the manifest (sha256 {sha(b'<net/>')})"],
        ),
        (
            "onnx",
            lambda d: (d / "m-1.0.0.onnx").write_bytes(b"another graph"),
            [f"m-1.0.0.onnx: sha256 {sha(b'another graph')}, the manifest says {sha(FILES['m-1.0.0.onnx'])}"],
        ),
        (
            "pt",
            lambda d: (d / "m-1.0.0.pt").write_bytes(b"other weights"),
            ["m-1.0.0.pt: sha256 ", "register the new weights as a new version"],
        ),
    ],
    ids=["ov-good", "onnx-good", "pt-good", "ov-bin-byte", "ov-file-gone", "ov-extra-file", "onnx-other",
         "pt-other"],
)  # fmt: skip
def test_loading_checks_every_file(
    tmp_path: Path, kind: str, change: Any, expected: list[str] | None
) -> None:
    entry = load_manifest(write_models(tmp_path)).get("m")
    if change is not None:
        change(tmp_path)
    if expected is None:
        path, digest = verified_path(entry, kind)  # type: ignore[arg-type]
        want = {"pt": "m-1.0.0.pt", "onnx": "m-1.0.0.onnx", "openvino": OV}[kind]
        assert path == tmp_path / want
        assert digest == (
            sha(FILES[want]) if kind != "openvino" else listing_digest({n: sha(FILES[f"{OV}/{n}"]) for n in
                                                                          ("m-1.0.0.xml", "m-1.0.0.bin",
                                                                           "metadata.yaml")})
        )  # fmt: skip
        return
    with pytest.raises(ManifestError) as err:
        verified_path(entry, kind)  # type: ignore[arg-type]
    text = str(err.value)
    assert (
        text.startswith(f"m@1.0.0: refusing {tmp_path}/")
        and f"does not match {tmp_path}/manifest.yaml" in text
    )
    for part in expected:
        assert part.replace("<tmp>", str(tmp_path)) in text


def test_folder_digest_is_the_documented_sha256sum_listing(tmp_path: Path) -> None:
    """``cd X_openvino_model && sha256sum $(LC_ALL=C ls) | sha256sum`` gives the digest events carry."""
    entry = load_manifest(write_models(tmp_path)).get("m")
    _, digest = verified_path(entry, "openvino")
    shell = subprocess.run(
        "sha256sum $(LC_ALL=C ls) | sha256sum", shell=True, cwd=tmp_path / OV, capture_output=True, text=True
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split()[0] == digest
    assert digest != entry.sha256  # the export's digest, not the .pt's


def test_a_check_is_remembered_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = load_manifest(write_models(tmp_path)).get("m")
    hashed: list[str] = []

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return sha256_file(path)

    monkeypatch.setattr(artifacts, "sha256_file", counting)
    first = verify_artifact(entry, tmp_path / OV)
    assert sorted(hashed) == ["m-1.0.0.bin", "m-1.0.0.xml", "metadata.yaml"]
    assert verify_artifact(entry, tmp_path / OV) == first
    assert len(hashed) == 3  # the second load hashed nothing
    _flip_byte(tmp_path / OV / "m-1.0.0.bin")  # same size; the mtime moves
    with pytest.raises(ManifestError, match=r"m-1\.0\.0\.bin: sha256"):
        verify_artifact(entry, tmp_path / OV)


def test_the_shipped_manifest_lists_a_sha256_for_every_file_it_ships() -> None:
    manifest = load_manifest(REPO_ROOT / "models" / "manifest.yaml")
    for entry in manifest.models:
        for kind in entry.exports.values():
            assert verify_artifact(entry, entry.models_dir / kind)
        assert verify_artifact(entry, entry.models_dir / entry.file) == entry.sha256


# ------------------------------------------------------------------ the detector's loader


@pytest.fixture
def real_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder holding a copy of the shipped citywatch-synth 1.1.0 OpenVINO INT8 export (2.6 MB)."""
    shipped = load_manifest(REPO_ROOT / "models").get("citywatch-synth@1.1.0")
    rel = shipped.exports["openvino_int8"]
    shutil.copytree(REPO_ROOT / "models" / rel, tmp_path / rel)
    data = shipped.model_dump(mode="json", exclude_none=True)
    data.update(
        exports={"openvino_int8": rel},
        checksums={k: v for k, v in shipped.checksums.items() if k.startswith(f"{rel}/")},
        precision="int8",
        backend="openvino",
    )
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({"default": "citywatch-synth", "models": [data]}))
    monkeypatch.setenv("CITYWATCH_MODELS_DIR", str(tmp_path))
    return tmp_path / rel


@pytest.mark.parametrize("case", ["good", "bin-byte", "hash-missing"])
def test_load_model_refuses_an_export_that_is_not_the_registered_one(real_export: Path, case: str) -> None:
    from detector.config.model import ModelConfig
    from detector.inference.model import ModelResolveError, load_model

    cfg = ModelConfig(name="citywatch-synth", backend="openvino")
    manifest = real_export.parent / "manifest.yaml"
    if case == "bin-byte":
        _flip_byte(next(real_export.glob("*.bin")), at=4096)
    elif case == "hash-missing":
        data = yaml.safe_load(manifest.read_text())
        data["models"][0]["checksums"] = {}
        manifest.write_text(yaml.safe_dump(data))
    if case == "good":
        loaded = load_model(cfg, threads=1)
        listing = {p.name: sha256_file(p) for p in real_export.iterdir()}
        assert loaded.info.sha256 == listing_digest(listing)  # the events name the export that was loaded
        assert loaded.info.as_event()["sha256"] != load_manifest().get(None).sha256
        loaded.backend.close()
        return
    with pytest.raises(ModelResolveError) as err:
        load_model(cfg, threads=1)
    text = str(err.value)
    if case == "bin-byte":
        name = next(real_export.glob("*.bin")).name
        expected = load_manifest().get(None).checksums[f"{real_export.name}/{name}"]
        actual = sha256_file(next(real_export.glob("*.bin")))
        assert f"{real_export.name}/{name}: sha256 {actual}, the manifest says {expected}" in text
        assert "citywatch models rehash citywatch-synth@1.1.0" in text
    else:
        assert str(manifest) in text
        assert "exports ['openvino_int8'] have no sha256 in `checksums`" in text
        assert "run `citywatch models rehash citywatch-synth@1.1.0`" in text


# ------------------------------------------------------------------ the writers


def test_record_export_writes_the_hashes_of_a_new_export(tmp_path: Path) -> None:
    from training.registry import record_export

    write_models(tmp_path)
    new = tmp_path / "m-1.0.0_int8_openvino_model"
    new.mkdir()
    (new / "m-1.0.0_int8.xml").write_bytes(b"<int8/>")
    (new / "m-1.0.0_int8.bin").write_bytes(b"int8 weights")
    record_export("m", "openvino_int8", new, tmp_path)
    entry = load_manifest(tmp_path).get("m")
    assert entry.checksums[f"{new.name}/m-1.0.0_int8.bin"] == sha(b"int8 weights")
    assert verified_path(entry, "openvino", "int8")[0] == new
    # an export made again under the same key replaces the old hashes
    (tmp_path / "m-1.0.0-v2.onnx").write_bytes(b"graph v2")
    record_export("m", "onnx", tmp_path / "m-1.0.0-v2.onnx", tmp_path)
    entry = load_manifest(tmp_path).get("m")
    assert "m-1.0.0.onnx" not in entry.checksums
    assert entry.checksums["m-1.0.0-v2.onnx"] == sha(b"graph v2")


def test_rehash_mends_a_manifest_written_before_checksums(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    write_models(tmp_path, checksums={})
    with pytest.raises(ManifestError, match="have no sha256"):
        load_manifest(tmp_path)
    (tmp_path / OV / "m-1.0.0.xml").write_bytes(b"<net version='2'/>")  # re-exported by hand, trusted
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYWATCH_MODELS_DIR", str(tmp_path))
        assert main(["models", "rehash", "m"]) == 0
        assert "m@1.0.0: recorded" in capsys.readouterr().out
        assert main(["models", "rehash", "nope"]) == 1
        assert "no model 'nope'" in capsys.readouterr().err
    entry = load_manifest(tmp_path).get("m")
    assert entry.checksums[f"{OV}/m-1.0.0.xml"] == sha(b"<net version='2'/>")
    assert verified_path(entry, "openvino")[0] == tmp_path / OV


def test_register_refuses_files_that_differ_from_the_entry(tmp_path: Path) -> None:
    from training.errors import RegistryError
    from training.registry import register

    write_models(tmp_path)
    data = yaml.safe_load((tmp_path / "manifest.yaml").read_text())["models"][0]
    (tmp_path / "manifest.yaml").unlink()
    entry = ModelEntry.model_validate({**data, "checksums": export_checksums(tmp_path, data["exports"])})
    _flip_byte(tmp_path / OV / "m-1.0.0.bin")
    with pytest.raises(
        RegistryError, match=r"(?s)cannot register m@1\.0\.0: .*" + re.escape(f"{OV}/m-1.0.0.bin: sha256")
    ):
        register(entry, "# card\n", tmp_path)
    assert not (tmp_path / "manifest.yaml").exists()
