"""Roll a new model out to a running detector: watch the manifest, load beside, swap between batches.

``citywatch models promote`` / ``rollback`` change ``default`` in ``models/manifest.yaml``. Every
``models.watch_s`` seconds (streams.yaml, default 5; 0 = off) :class:`ManifestWatcher` looks at the
manifest's mtime and, when it changed, its content hash. On new content each loaded model (one instance
per distinct model, :mod:`detector.inference.rule_models`) whose sections all follow the manifest — a
section naming no version: ``name: null`` (the default) or a bare name (its highest version) — is
resolved again; when it now resolves to another artefact (another name@version, or the same one with
another backend, precision or sha256), the new model is loaded on the watcher's thread (off the hot
path, its files checked against their sha256 like any load), then :meth:`InferenceService.swap` puts it
in place between two batches: no stream stops, no sample is dropped (every queued frame is inferred
once, by the old model or the new one). Right after the swap, still on the inference thread, each
pipeline's :class:`ModelInfo` becomes the new one — events from then on carry the new name, version and
sha256 (the digest of the artefact actually loaded) — and the old backend is closed.

A load that fails (a file whose sha256 differs, a missing export) keeps the running model and logs the
error; touching the manifest (``touch models/manifest.yaml``) retries it. A section that pins
``name@version`` or a ``path`` never moves; an instance that serves both pinned and following sections
(they resolved to the same model at start-up) cannot be split while running: the watcher logs that a
restart applies the change. The instance keeps its id (``data["model"]`` of merged detections, the
service's model key) across swaps; what is loaded is in its :class:`ModelInfo`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.config.model import ModelConfig
from detector.contracts.errors import DetectorError
from detector.contracts.manifest import Manifest, ManifestError, ModelEntry, load_manifest, manifest_path
from detector.inference import InferenceBackend
from detector.inference.model import LoadedModel, load_model
from detector.inference.rule_models import RuleModelSet
from detector.inference.service import InferenceService
from detector.pipeline import ModelInfo, StreamPipeline
from detector.rules.engine import label_map

log = logging.getLogger(__name__)

Loader = Callable[[ModelConfig, int | None, Path | None], LoadedModel]
Fingerprint = tuple[Any, ...]


def follows(mc: ModelConfig) -> bool:
    """A section that moves with the manifest: no ``path`` and no pinned ``@version``."""
    return mc.path is None and (mc.name is None or "@" not in mc.name)


def fingerprint(entry: ModelEntry) -> Fingerprint:
    """What decides the artefact a section resolves to (and what the events would say about it)."""
    return (
        entry.ref,
        entry.backend,
        entry.precision,
        entry.sha256,
        tuple(sorted(entry.checksums.items())),
        tuple(sorted(entry.exports.items())),
        entry.imgsz,
        tuple(entry.classes),
        tuple(sorted(entry.rule_labels.items())),
    )


@dataclass(frozen=True)
class SwapRecord:
    """One model swapped in while running."""

    model: str  # the instance id
    old: ModelInfo
    new: ModelInfo
    streams: tuple[str, ...]


@dataclass
class _Slot:
    mid: str
    sections: list[ModelConfig]
    loaded: LoadedModel
    target: Fingerprint | None  # the manifest entry it runs (None: unknown yet)
    failed: Fingerprint | None = None  # the entry whose load failed (retried when the manifest is touched)
    pending: bool = False  # a swap is queued in the service
    warned: str | None = None  # the last "cannot move" warning, not repeated

    @property
    def follows(self) -> bool:
        return all(follows(mc) for mc in self.sections)


def apply_info(
    models: RuleModelSet, pipelines: Mapping[str, StreamPipeline], mid: str, info: ModelInfo
) -> list[str]:
    """Make ``info`` the model ``mid`` everywhere it is named: the streams' plans (the merge reads its rule
    labels) and pipelines (events, the rule engine's label map). Returns the streams it changed."""
    for plan in list(models.plans.values()):  # streams come and go while running (live config)
        if mid in plan.infos:
            plan.infos[mid] = info
    changed = []
    for sid, pipe in list(pipelines.items()):
        hit = False
        if pipe.model.key == mid:
            pipe.model = info
            pipe.engine.label_of = label_map(dict(info.rule_labels))
            hit = True
        if any(i.key == mid for i in pipe.rule_models.values()):
            pipe.rule_models = {rule: info if i.key == mid else i for rule, i in pipe.rule_models.items()}
            hit = True
        if hit:
            changed.append(sid)
    return changed


class ManifestWatcher(threading.Thread):
    """Polls the manifest and swaps models in; :meth:`poll` is one look (the thread calls it)."""

    def __init__(
        self,
        models: RuleModelSet,
        service: InferenceService,
        pipelines: Mapping[str, StreamPipeline],
        stop: threading.Event,
        interval_s: float = 5.0,
        threads: int | None = None,
        base_dir: Path | None = None,
        *,
        loader: Loader = load_model,
        path: Path | None = None,
        on_swap: Callable[[SwapRecord], None] | None = None,
    ) -> None:
        super().__init__(name="manifest-watch", daemon=True)
        self.models, self.service, self.pipelines = models, service, pipelines
        self.stop_event, self.interval_s = stop, interval_s
        self.threads, self.base_dir, self.loader = threads, base_dir, loader
        self.path = path or manifest_path()
        self.on_swap = on_swap
        self.swaps: list[SwapRecord] = []
        self._sig: tuple[int, int, int] | None = None
        self._hash: str | None = None
        self._bad: str | None = None
        try:
            manifest: Manifest | None = load_manifest(self.path)
        except ManifestError:
            manifest = None
        self._slots: list[_Slot] = []
        for mid, loaded in models.models.items():
            entry = manifest.find(f"{loaded.info.name}@{loaded.info.version}") if manifest else None
            sections = models.sections.get(mid) or []
            self._slots.append(_Slot(mid, sections, loaded, fingerprint(entry) if entry else None))
        self._recheck = True  # the first look compares with what was loaded, whatever changed since

    # ------------------------------------------------------------------ the thread
    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # the watcher must not die of one bad look; the next one tries again
                log.exception("watching %s failed", self.path)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> list[str]:
        """One look at the manifest; returns the ids of the models whose swap it queued."""
        sig = self._signature()
        touched = sig != self._sig
        if not touched and not self._recheck:
            return []
        self._sig = sig
        try:
            content = self.path.read_bytes()
        except OSError as err:
            self._complain(f"{self.path}: cannot read it ({err}); the running models stay")
            return []
        digest = hashlib.sha256(content).hexdigest()
        changed, self._hash = digest != self._hash, digest
        retry = touched and any(s.failed is not None for s in self._slots)
        if not (changed or retry or self._recheck):
            return []
        self._recheck = False
        try:
            manifest = load_manifest(self.path)
        except ManifestError as err:
            self._complain(f"{self.path} is not valid; the running models stay:\n{err}")
            return []
        self._bad = None
        queued = []
        for slot in self._slots:
            if slot.pending:
                self._recheck = True  # look again once it is in place
            elif self._consider(slot, manifest, retry):
                queued.append(slot.mid)
        return queued

    def _complain(self, message: str) -> None:
        if message != self._bad:
            log.error("%s", message)
            self._bad = message

    # ------------------------------------------------------------------ one model
    def _consider(self, slot: _Slot, manifest: Manifest, retry: bool) -> bool:
        moving = [mc for mc in slot.sections if follows(mc)]
        if not moving:
            return False
        try:
            entries = {mc.name: manifest.get(mc.name) for mc in moving}
        except ManifestError as err:
            log.error("model %s: %s; it keeps running %s", slot.mid, err, slot.loaded.info.id)
            return False
        prints = {fingerprint(e) for e in entries.values()}
        if prints == {slot.target}:
            slot.failed = None  # back to what runs: nothing to retry
            return False
        if len(prints) > 1 or not slot.follows:
            refs = ", ".join(sorted({e.ref for e in entries.values()}))
            note = (
                f"model {slot.mid} serves sections that pin it and sections that follow the manifest (now "
                f"{refs}); it cannot be split while running: restart the detector to apply the change"
            )
            if note != slot.warned:
                log.warning("%s", note)
                slot.warned = note
            return False
        target = prints.pop()
        if target == slot.failed and not retry:
            return False
        return self._load(slot, slot.sections[0], target)

    def _load(self, slot: _Slot, cfg: ModelConfig, target: Fingerprint) -> bool:
        old = slot.loaded.info
        log.info(
            "model %s: the manifest now resolves it to %s; loading it beside %s@%s",
            slot.mid, target[0], old.name, old.version,
        )  # fmt: skip
        try:
            loaded = self.loader(cfg, self.threads, self.base_dir)
        except (DetectorError, OSError, RuntimeError, ValueError) as err:
            slot.failed = target
            log.error(
                "model %s: not switching to %s, its load failed; still running %s %s (sha256 %s). %s",
                slot.mid, target[0], old.name, old.version, old.sha256, err,
            )  # fmt: skip
            return False
        slot.failed = None
        i = loaded.info
        loaded.info = new = ModelInfo(i.name, i.version, i.sha256, i.class_names, i.rule_labels, slot.mid)
        slot.target = target
        if (new.name, new.version, new.sha256) == (old.name, old.version, old.sha256):
            loaded.backend.close()  # the same artefact (metadata of the entry changed): nothing to swap
            return False
        slot.pending = True
        self.service.swap(slot.mid, loaded.backend, lambda prev: self._swapped(slot, loaded, prev))
        return True

    def _swapped(self, slot: _Slot, loaded: LoadedModel, prev: InferenceBackend) -> None:
        """On the inference thread, right after the swap: name the new model everywhere, close the old."""
        old = slot.loaded.info
        slot.loaded = loaded
        self.models.models[slot.mid] = loaded
        streams = apply_info(self.models, self.pipelines, slot.mid, loaded.info)
        slot.pending = False
        try:
            prev.close()
        except Exception:  # a runtime that fails to free itself must not stop the swap
            log.exception("model %s: closing the old backend failed", slot.mid)
        new = loaded.info
        record = SwapRecord(slot.mid, old, new, tuple(streams))
        self.swaps.append(record)
        log.info(
            "model %s: now running %s %s (%s %s, sha256 %s) instead of %s %s (sha256 %s); streams: %s",
            slot.mid, new.name, new.version, loaded.kind, loaded.precision, new.sha256, old.name, old.version,
            old.sha256, ", ".join(streams) or "none",
        )  # fmt: skip
        if self.on_swap is not None:
            self.on_swap(record)


def start_watch(
    models: RuleModelSet,
    service: InferenceService,
    pipelines: Mapping[str, StreamPipeline],
    stop: threading.Event,
    interval_s: float,
    threads: int | None = None,
    base_dir: Path | None = None,
) -> ManifestWatcher | None:
    """Start watching (None when ``interval_s`` is 0 or no loaded model follows the manifest)."""
    if interval_s <= 0:
        log.info("models.watch_s is 0: the manifest is not watched; a new default needs a restart")
        return None
    if not any(follows(mc) for sections in models.sections.values() for mc in sections):
        return None
    watcher = ManifestWatcher(models, service, pipelines, stop, interval_s, threads, base_dir)
    watcher.start()
    log.info("watching %s every %g s for a new default model", watcher.path, interval_s)
    return watcher
