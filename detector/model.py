"""Resolve the configured model (manifest name or explicit file) into a backend and its ModelInfo."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from detector.config import ModelConfig
from detector.inference import InferenceBackend, load_backend
from detector.manifest import ManifestError, load_manifest, resolve_path, sha256_file
from detector.pipeline import ModelInfo

log = logging.getLogger(__name__)

#: For a model file given by path (no manifest entry): class names we know, mapped onto the four
#: rule labels — citywatch's own classes and the COCO vehicle classes.
KNOWN_RULE_LABELS = {
    "vehicle": "vehicle",
    "car": "vehicle",
    "truck": "vehicle",
    "bus": "vehicle",
    "motorcycle": "vehicle",
    "stall": "vendor",
    "vendor": "vendor",
    "litter": "litter",
    "garbage": "litter",
    "structure": "structure",
}


class ModelResolveError(Exception):
    """The configured model cannot be found or loaded; the message says what to fix."""


@dataclass
class LoadedModel:
    backend: InferenceBackend
    info: ModelInfo
    path: Path
    kind: str


def _backend_for(path: Path) -> str:
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".pt":
        return "ultralytics"
    if path.is_dir() and path.name.endswith("_openvino_model"):
        return "openvino"
    raise ModelResolveError(f"model.path {path}: expected a .onnx or .pt file or an *_openvino_model folder")


def load_model(cfg: ModelConfig, threads: int | None = None, base_dir: Path | None = None) -> LoadedModel:
    """A manifest entry (``cfg.name``, None = the default) or an explicit ``cfg.path``."""
    if cfg.path is not None:
        path = cfg.path if cfg.path.is_absolute() or base_dir is None else base_dir / cfg.path
        if not path.exists():
            raise ModelResolveError(f"model.path {path} does not exist")
        kind = cfg.backend or _backend_for(path)
        backend = load_backend(kind, path, None, cfg.imgsz, cfg.conf, cfg.iou, threads)
        names = tuple(backend.class_names)
        labels = {n: KNOWN_RULE_LABELS[n] for n in names if n in KNOWN_RULE_LABELS}
        sha = sha256_file(path) if path.is_file() else None
        info = ModelInfo(path.stem, "0.0.0", sha, names, labels)
        return LoadedModel(backend, info, path, kind)
    try:
        entry = load_manifest().get(cfg.name)
        kind = cfg.backend or entry.backend
        path = resolve_path(entry, kind)
    except ManifestError as err:
        raise ModelResolveError(str(err)) from err
    backend = load_backend(kind, path, entry.classes, cfg.imgsz or entry.imgsz, cfg.conf, cfg.iou, threads)
    info = ModelInfo(entry.name, entry.version, entry.sha256, tuple(entry.classes), dict(entry.rule_labels))
    log.info("model %s@%s (%s, %s) from %s", entry.name, entry.version, kind, entry.precision, path)
    return LoadedModel(backend, info, path, kind)
