"""Shared by the benchmarks: repo on sys.path, JSON output, the default model, process CPU and memory."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VAR = REPO / "var" / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def emit(result: dict[str, Any]) -> None:
    """The benchmark's one JSON object on stdout (logs go to stderr)."""
    print(json.dumps(result, ensure_ascii=False, sort_keys=False), flush=True)


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """The BGR image at ``path``; exits naming the file when it cannot be read."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read the image {path}")
    return np.asarray(img, dtype=np.uint8)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process in MB (this one by default)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds a process has used (its threads included)."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class ModelUnderTest:
    name: str
    version: str
    pt: Path
    imgsz: int
    classes: list[str]
    backend: str
    precision: str
    exports: dict[str, Path]


def default_model(pt_override: str | None = None, imgsz: int | None = None) -> ModelUnderTest:
    """The manifest's default model and its exports; ``pt_override`` benches a bare .pt instead."""
    from detector.contracts.manifest import load_manifest, resolve_path

    if pt_override:
        from detector.inference import load_backend

        probe = load_backend("ultralytics", pt_override, None, imgsz)
        return ModelUnderTest(
            Path(pt_override).stem, "dev", Path(pt_override), imgsz or probe.imgsz, probe.class_names, "onnx",
            "int8", {},
        )  # fmt: skip
    entry = load_manifest().get(None)
    exports = {key: entry.models_dir / rel for key, rel in entry.exports.items()}
    return ModelUnderTest(
        entry.name, entry.version, resolve_path(entry, "ultralytics", "fp32"), imgsz or entry.imgsz,
        list(entry.classes), entry.backend, entry.precision, exports,
    )  # fmt: skip


def cpu_model() -> str:
    """The CPU's model name (figures differ between CPUs, e.g. with AMX or without)."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    if names:
        amx = any(line.startswith("flags") and "amx_tile" in line for line in info)
        return f"{names[0]}, {'with' if amx else 'without'} AMX"
    import platform

    return platform.processor() or "unknown"
