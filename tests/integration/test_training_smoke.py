"""End to end: `citywatch train` on a tiny generated dataset, then eval --json, export, models list/promote.

Runs fully offline: the ultralytics offline environment is prepared first and every socket connection or DNS
look-up in this process raises, so anything that tries to download fails the test.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from detector.contracts.artifacts import verify_sha256
from detector.contracts.manifest import load_manifest, resolve_path, sha256_file
from detector.contracts.ultralytics_env import prepare_offline

pytestmark = pytest.mark.slow

CLASSES = ["vehicle", "stall", "litter", "structure"]
COLOURS = {0: (40, 40, 220), 1: (220, 120, 30), 2: (40, 200, 40), 3: (150, 150, 150)}  # BGR
SIZES = {0: (44, 24), 1: (30, 30), 2: (14, 12), 3: (22, 50)}  # w, h in px
IMG = 128


def _write_split(root: Path, split: str, n: int, rng: np.random.Generator) -> None:
    import cv2

    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i in range(n):
        img = np.full((IMG, IMG, 3), rng.integers(60, 100), np.uint8)
        lines = []
        for cls in rng.permutation(4)[: rng.integers(1, 4)]:
            w, h = SIZES[int(cls)]
            x, y = int(rng.integers(0, IMG - w)), int(rng.integers(0, IMG - h))
            cv2.rectangle(img, (x, y), (x + w, y + h), COLOURS[int(cls)], -1)
            lines.append(f"{cls} {(x + w / 2) / IMG:.6f} {(y + h / 2) / IMG:.6f} {w / IMG:.6f} {h / IMG:.6f}")
        cv2.imwrite(str(root / "images" / split / f"{split}_{i:03d}.png"), img)
        (root / "labels" / split / f"{split}_{i:03d}.txt").write_text("\n".join(lines) + "\n")


def make_dataset(root: Path) -> Path:
    """16 train, 6 val and 4 `test_drone` images of coloured rectangles; returns the dataset yaml."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("val", 6), ("drone", 4)):
        _write_split(root, split, n, rng)
    data = {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "test_drone": "images/drone",
        "names": dict(enumerate(CLASSES)),
        "rule_labels": {
            "vehicle": "vehicle",
            "stall": "vendor",
            "litter": "litter",
            "structure": "structure",
        },
    }
    out = root / "data.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Prepare ultralytics offline and make every network attempt raise (and be recorded)."""
    prepare_offline()
    attempts: list[str] = []

    def blocked(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:2]))
        raise OSError("network access blocked by test_training_smoke")

    def blocked_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            blocked(address)
        return real_connect(self, address)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(socket.socket, "connect", blocked_connect)
    monkeypatch.setenv("CITYWATCH_MODELS_DIR", str(tmp_path / "models"))
    return attempts


def test_train_eval_export_register(
    offline: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    data = make_dataset(tmp_path / "ds")
    models = tmp_path / "models"
    rc = main(
        [
            "train",
            "--data", str(data),
            "--arch", "training/arch/citywatch-n.yaml",
            "--imgsz", "128",
            "--epochs", "2",
            "--batch", "8",
            "--workers", "0",
            "--name", "smoke",
            "--version", "0.0.1",
            "--project", str(tmp_path / "runs"),
        ]
    )  # fmt: skip
    assert rc == 0

    manifest = load_manifest(models / "manifest.yaml")
    entry = manifest.get(None)
    assert entry.ref == "smoke@0.0.1"
    assert entry.classes == CLASSES
    assert entry.rule_labels["stall"] == "vendor"
    assert entry.imgsz == 128
    assert set(entry.metrics.per_view or {}) == {"drone"}
    assert 0.0 <= entry.metrics.map50 <= 1.0
    pt = verify_sha256(entry)
    assert pt == models / "smoke-0.0.1.pt"
    assert sha256_file(pt) == entry.sha256
    onnx_file = resolve_path(entry, "onnx")
    assert onnx_file == models / "smoke-0.0.1.onnx"
    card = (models / entry.card).read_text()
    assert entry.data_hash in card and "vendor" in card
    assert len(entry.data_hash) == 64

    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": np.zeros((1, 3, 128, 128), np.float32)})
    assert out.shape == (1, 4 + len(CLASSES), 336)  # 16x16 + 8x8 + 4x4 anchors at 128 px

    from ultralytics.models.yolo import YOLO

    assert list(YOLO(str(pt)).names.values()) == CLASSES

    from training.train import scrub_checkpoint

    # the run lived in tmp_path, so here tmp_path plays the checkout: the released weights forget it
    released = tmp_path / "released.pt"
    shutil.copyfile(pt, released)
    assert str(tmp_path).encode() in released.read_bytes()
    scrub_checkpoint(released, [tmp_path])
    assert str(tmp_path).encode() not in released.read_bytes()
    assert list(YOLO(str(released)).names.values()) == CLASSES

    capsys.readouterr()
    assert main(["eval", "smoke", "--data", str(data), "--split", "test_drone", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 4 and result["split"] == "test_drone"
    assert {"map50", "map50_95", "per_class", "model"} <= set(result)
    assert set(result["per_class"]) <= set(CLASSES)

    assert main(["eval", str(onnx_file), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 6

    assert main(["export", "smoke", "--format", "onnx", "--int8", "--data", str(data)]) == 0
    entry = load_manifest(models).get("smoke")
    assert resolve_path(entry, "onnx", "int8") == models / "smoke-0.0.1_int8.onnx"

    assert main(["export", "smoke", "--format", "openvino", "--int8", "--data", str(data)]) == 0
    ov_dir = resolve_path(load_manifest(models).get("smoke"), "openvino", "int8")
    assert ov_dir == models / "smoke-0.0.1_int8_openvino_model"
    assert (ov_dir / "smoke-0.0.1_int8.xml").is_file() and (ov_dir / "metadata.yaml").is_file()
    listed = load_manifest(models).get("smoke").checksums  # every file of every export, hashed
    assert sorted(listed) == sorted(
        [f"{ov_dir.name}/{p.name}" for p in ov_dir.iterdir()] + ["smoke-0.0.1.onnx", "smoke-0.0.1_int8.onnx"]
    )
    assert all(listed[f"{ov_dir.name}/{p.name}"] == sha256_file(p) for p in ov_dir.iterdir())
    for text in ((ov_dir / "metadata.yaml").read_text(), (ov_dir / "smoke-0.0.1_int8.xml").read_text()):
        assert "citywatch-export-" not in text  # the temporary work folder is not recorded
        assert "calibration.yaml" in text
    capsys.readouterr()
    assert main(["eval", "smoke", "--data", str(data), "--kind", "openvino", "--int8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(ov_dir)

    assert main(["models", "promote", "smoke@0.0.1", "--precision", "int8"]) == 0
    assert load_manifest(models).default == "smoke@0.0.1"
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "smoke" in listing and "onnx/int8" in listing

    assert offline == [], f"something tried the network: {offline}"
