"""Resolve a configured model (manifest name or explicit file) into a backend and its ModelInfo.

The backend of a manifest model is, in this order: the config's ``model.backend``; else the winner in
this host's tune cache (``citywatch models tune``); else, with ``model.tune: auto``, the winner of a
quick measurement at start-up (written to the cache); else the manifest's backend. The log says which,
and why. A manifest model's files are checked against their sha256 in the manifest before they are
loaded (:mod:`detector.contracts.artifacts`); a mismatch refuses the load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from detector.config.model import ModelConfig
from detector.contracts.artifacts import path_digest, verified_path
from detector.contracts.errors import DetectorError
from detector.contracts.manifest import ManifestError, ModelEntry, load_manifest
from detector.inference import InferenceBackend, load_backend
from detector.inference.tiling import TiledBackend
from detector.inference.zoom import ZoomBackend
from detector.pipeline import ModelInfo

log = logging.getLogger(__name__)
# runtime threads of a zoomed pass: in the live service it runs beside the main pass (zoom.py)
ZOOM_THREADS = 1

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


class ModelResolveError(DetectorError):
    """The configured model cannot be found or loaded; the message says what to fix."""


@dataclass
class LoadedModel:
    backend: InferenceBackend
    info: ModelInfo
    path: Path
    kind: str
    precision: str = "fp32"
    why: str = ""


@dataclass(frozen=True)
class BackendChoice:
    kind: str
    precision: str
    why: str


def backend_for_path(path: Path) -> str:
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".pt":
        return "ultralytics"
    if path.is_dir() and path.name.endswith("_openvino_model"):
        return "openvino"
    raise ModelResolveError(f"model.path {path}: expected a .onnx or .pt file or an *_openvino_model folder")


def model_path(cfg: ModelConfig, base_dir: Path | None) -> Path | None:
    """``cfg.path`` made absolute (relative to the config file's folder), or None for a manifest name."""
    if cfg.path is None:
        return None
    return cfg.path if cfg.path.is_absolute() or base_dir is None else base_dir / cfg.path


def _explicit(entry: ModelEntry, kind: str) -> BackendChoice:
    """``model.backend`` given: the entry's precision when it has that export, else the other one."""
    if kind == "ultralytics":
        return BackendChoice(kind, "fp32", "model.backend in the config")
    others = [p for p in ("fp32", "int8") if p != entry.precision]
    for precision in (entry.precision, *others):
        key = kind if precision == "fp32" else f"{kind}_int8"
        if key in entry.exports:
            return BackendChoice(kind, precision, "model.backend in the config")
    return BackendChoice(kind, entry.precision, "model.backend in the config")


def choose_backend(entry: ModelEntry, cfg: ModelConfig, threads: int | None = None) -> BackendChoice:
    """Which backend and precision to run ``entry`` with, and why (see the module docstring)."""
    if cfg.backend is not None:
        return _explicit(entry, cfg.backend)
    from detector.inference import tune_cache

    host = tune_cache.host_info()
    path = tune_cache.cache_path(host)
    cached = tune_cache.lookup(entry, host, path)
    if cached is not None:
        fps = cached.fps[cached.winner].get(f"batch{cached.batch}", 0.0)
        why = f"fastest on this host in the tune cache {path} ({fps:.0f} frames/s at batch {cached.batch})"
        return BackendChoice(cached.backend, cached.precision, why)
    if cfg.tune == "auto":
        from detector.inference.tune import QUICK, tune_and_cache

        log.info("model %s: no tune cache for this host (%s); measuring its exports", entry.ref, host.cpu)
        try:
            result, written = tune_and_cache(
                entry, batch=cfg.batch, threads=threads, budget=QUICK, mode="start-up"
            )
        except (tune_cache.TuneError, OSError) as err:
            log.warning("model %s: tuning failed (%s); using the manifest's backend", entry.ref, err)
        else:
            fps = result.fps[result.winner].get(f"batch{result.batch}", 0.0)
            tried = ", ".join(result.candidates)
            why = f"measured at start-up, fastest of {tried} ({fps:.0f} frames/s); cached in {written}"
            return BackendChoice(result.backend, result.precision, why)
    return BackendChoice(
        entry.backend, entry.precision, "the manifest's backend (no tune cache for this host)"
    )


def label_groups(class_names: Sequence[str], rule_labels: Mapping[str, str]) -> tuple[tuple[int, ...], ...]:
    """Class ids that feed the same rule label (COCO car, truck, bus, motorcycle -> vehicle): the ONNX and
    OpenVINO backends score each such group as one class ("is it any vehicle?", noisy-OR of the members)
    and keep one box per object, so a rule is not starved by a model that cannot decide between car and
    truck. Groups of one are left out. (The ultralytics backend runs ultralytics' own decoding.)"""
    by_label: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        if name in rule_labels:
            by_label.setdefault(rule_labels[name], []).append(i)
    return tuple(tuple(ids) for ids in by_label.values() if len(ids) > 1)


def load_model(cfg: ModelConfig, threads: int | None = None, base_dir: Path | None = None) -> LoadedModel:
    """A manifest entry (``cfg.name``, None = the default) or an explicit ``cfg.path``."""
    path = model_path(cfg, base_dir)
    if path is not None:
        if not path.exists():
            raise ModelResolveError(f"model.path {path} does not exist")
        kind = cfg.backend or backend_for_path(path)
        backend = load_backend(kind, path, None, cfg.imgsz, cfg.conf, cfg.iou, threads)
        names = tuple(backend.class_names)
        labels = {n: KNOWN_RULE_LABELS[n] for n in names if n in KNOWN_RULE_LABELS}
        info = ModelInfo(path.stem, "0.0.0", path_digest(path), names, labels)
        backend.class_groups = label_groups(names, labels)
        why = "model.backend in the config" if cfg.backend else f"the file type of model.path ({path.name})"
        log.info("model %s (%s) from %s: %s", path.stem, kind, path, why)
        zoom = partial(load_backend, kind, path, None, conf=cfg.conf, iou=cfg.iou, threads=threads)
        return LoadedModel(with_passes(backend, cfg, zoom, threads), info, path, kind, "fp32", why)
    try:
        entry = load_manifest().get(cfg.name)
        choice = choose_backend(entry, cfg, threads)
        path, digest = verified_path(entry, choice.kind, choice.precision)  # type: ignore[arg-type]
    except ManifestError as err:
        raise ModelResolveError(str(err)) from err
    backend = load_backend(
        choice.kind, path, entry.classes, cfg.imgsz or entry.imgsz, cfg.conf, cfg.iou, threads
    )
    # the events name what was loaded: the sha256 of the export file, or of an export folder's listing
    info = ModelInfo(entry.name, entry.version, digest, tuple(entry.classes), dict(entry.rule_labels))
    backend.class_groups = label_groups(info.class_names, info.rule_labels)
    log.info("model %s: %s %s from %s: %s", entry.ref, choice.kind, choice.precision, path, choice.why)
    zoom = partial(
        load_backend, choice.kind, path, entry.classes, conf=cfg.conf, iou=cfg.iou, threads=threads
    )
    return LoadedModel(
        with_passes(backend, cfg, zoom, threads), info, path, choice.kind, choice.precision, choice.why
    )


def with_passes(
    backend: InferenceBackend,
    cfg: ModelConfig,
    load_at: Callable[..., InferenceBackend],
    threads: int | None = None,
) -> InferenceBackend:
    """``backend`` with the zoomed whole-frame pass of ``cfg.zoom_imgsz`` and the tile pass of ``cfg.tiles``
    (detector/inference/zoom.py, tiling.py) where asked for; ``load_at(imgsz=N)`` loads the model at N px."""
    if cfg.zoom_imgsz is not None:
        if cfg.zoom_imgsz <= backend.imgsz:
            raise ModelResolveError(
                f"zoom_imgsz {cfg.zoom_imgsz} must be larger than the model's input size {backend.imgsz}"
            )
        if cfg.zoom_model is not None:
            other = cfg.model_copy(update={"name": cfg.zoom_model, "path": None, "imgsz": cfg.zoom_imgsz})
            zoomed = load_model(
                other.model_copy(update={"zoom_imgsz": None, "zoom_model": None, "tiles": 1}), ZOOM_THREADS
            )
            zoomed_backend = zoomed.backend
            what = f"{zoomed.info.name}@{zoomed.info.version}"
        else:
            zoomed_backend, what = load_at(imgsz=cfg.zoom_imgsz, threads=ZOOM_THREADS), "the same model"
        if list(zoomed_backend.class_names) != list(backend.class_names):
            raise ModelResolveError(
                f"zoom_model {cfg.zoom_model} does not have the classes of the model it confirms"
            )
        zoomed_backend.class_groups = backend.class_groups
        log.info("model confirmed by a whole-frame pass at %d px (zoom_imgsz) of %s", cfg.zoom_imgsz, what)
        backend = ZoomBackend(backend, zoomed_backend, zoomed_by=what, every_s=cfg.zoom_every_s)
    if cfg.tiles < 2:
        return backend
    log.info("model runs on the whole frame plus %dx%d tiles (tiles: %d)", cfg.tiles, cfg.tiles, cfg.tiles)
    return TiledBackend(backend, cfg.tiles)
