"""Several models in one deployment: which model serves which rule, one instance per model, merging.

Each rule is served by the model its stream's ``rule_models`` names, else the global ``rule_models``,
else ``model:``. Model sections that name the same model (manifest ref or file) with the same backend,
conf, iou and imgsz share one loaded instance (the largest ``batch`` of them applies). A stream needs the
models of the rules enabled on its zones (a stream without any enabled rule needs ``model:``, as before).

A frame's detections reach the stream's pipeline merged into one :class:`Detections`: every detection
carries its rule label (``data["label"]``, mapped by the rule labels of the model that found it) and that
model (``data["model"]``), and only detections that a rule served by that model watches (its ``classes``:
rule labels or class names) are kept. So a COCO ``car`` feeds illegal_parking when the COCO model serves
it, and the bureau model's ``vehicle`` is dropped: two models never feed one rule.

    models = load_rule_models(cfg, threads, base_dir)          # every model the enabled streams need
    plan = models.plan(cfg, stream)                             # what this stream needs
    dets = plan.merge({mid: models.models[mid].backend.infer([img])[0] for mid in plan.needed})
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.config.model import ModelConfig
from detector.config.schema import CitywatchConfig, EvidenceConfig, StreamConfig
from detector.contracts.detections import NATIVE_CONFIDENCE, Detections
from detector.delivery.publisher import EventSink
from detector.inference import InferenceBackend
from detector.inference.model import LoadedModel, ModelResolveError, load_model, model_path
from detector.pipeline import ModelInfo, StreamPipeline
from detector.rules.params import RULE_NAMES

log = logging.getLogger(__name__)

#: the rule label each rule is about (its default ``classes``)
RULE_LABELS = {
    "illegal_parking": "vehicle",
    "street_vending": "vendor",
    "illegal_structure": "structure",
    "unclean_road": "litter",
}


def rule_model_configs(cfg: CitywatchConfig, stream: StreamConfig) -> dict[str, ModelConfig]:
    """Rule name -> its model section on ``stream``: the stream's rule_models, the global ones, model."""
    return {
        rule: stream.rule_models.get(rule) or cfg.rule_models.get(rule) or cfg.model for rule in RULE_NAMES
    }


def enabled_rules(stream: StreamConfig) -> list[str]:
    """Rules that some zone of ``stream`` enforces with the rule enabled, in ``RULE_NAMES`` order."""
    on = {rule for zone in stream.zones for rule in zone.rules if getattr(zone.effective_rules, rule).enabled}
    return [rule for rule in RULE_NAMES if rule in on]


def rule_classes(stream: StreamConfig, rule: str) -> set[str]:
    """The labels and class names ``rule`` judges on ``stream`` (its ``classes``, every zone's too)."""
    out = set(getattr(stream.effective_rules, rule).classes)
    for zone in stream.zones:
        if rule in zone.rules:
            out |= set(getattr(zone.effective_rules, rule).classes)
    return out


def watched(stream: StreamConfig, rule: str) -> set[str]:
    """What the model serving ``rule`` must hand on: the rule's classes, and every enabled rule's
    ``veto`` labels (what overrules a rule's detections must reach the engine too)."""
    out = rule_classes(stream, rule)
    for other in enabled_rules(stream):
        out |= set(getattr(stream.effective_rules, other).veto)
    return out


@dataclass(frozen=True)
class ModelKey:
    """What makes two model sections one instance."""

    source: str  # "ref:name@version" or "path:/abs/file"
    backend: str | None
    conf: float
    iou: float
    imgsz: int | None
    tiles: int = 1
    zoom_imgsz: int | None = None
    zoom_model: str | None = None
    zoom_every_s: float = 10.0


def model_key(mc: ModelConfig, base_dir: Path | None, ref_of: Callable[[str | None], str]) -> ModelKey:
    path = model_path(mc, base_dir)
    source = f"path:{path.resolve()}" if path is not None else f"ref:{ref_of(mc.name)}"
    return ModelKey(
        source, mc.backend, mc.conf, mc.iou, mc.imgsz, mc.tiles, mc.zoom_imgsz, mc.zoom_model, mc.zoom_every_s
    )


def manifest_ref(name: str | None) -> str:
    """``name@version`` of a manifest name (None: the default); ModelResolveError when unknown."""
    from detector.contracts.manifest import ManifestError, load_manifest

    try:
        return load_manifest().get(name).ref
    except ManifestError as err:
        raise ModelResolveError(str(err)) from err


def label_detections(
    dets: Detections, model_id: str, rule_labels: Mapping[str, str], watch: set[str] | None
) -> Detections:
    """``dets`` of one model with ``data["label"]``, ``data["model"]`` and ``data["native_confidence"]``
    (the score before a zoomed pass confirmed it: the score itself for a model without one), keeping only
    what ``watch`` (labels or class names; None = everything) names."""
    names = [str(n) for n in dets.class_name]
    labels = np.array([rule_labels.get(n, n) for n in names], dtype=object)
    keep = np.array(
        [watch is None or lab in watch or name in watch for lab, name in zip(labels, names, strict=True)],
        dtype=bool,
    ).reshape(-1)
    data = dict(dets.data)
    data["label"] = labels
    data["model"] = np.array([model_id] * len(dets), dtype=object)
    data.setdefault(NATIVE_CONFIDENCE, dets.confidence)
    if "class_name" not in data:
        data["class_name"] = np.array(names, dtype=object)
    out = Detections(dets.xyxy, dets.confidence, dets.class_id, dets.tracker_id, data)
    return out if keep.all() else out[keep]


@dataclass(frozen=True)
class StreamModels:
    """What one stream needs: the model of each enabled rule, and how to merge their detections."""

    stream_id: str
    rules: Mapping[str, str]  # enabled rule -> model id
    needed: tuple[str, ...]  # model ids, each once
    infos: dict[str, ModelInfo]  # model id -> info (a model swapped in while running replaces its info)
    watch: Mapping[str, set[str] | None]  # model id -> labels / class names kept (None: all)

    @property
    def default(self) -> ModelInfo:
        """The model events fall back to (the first one this stream needs)."""
        return self.infos[self.needed[0]]

    @property
    def rule_infos(self) -> dict[str, ModelInfo]:
        return {rule: self.infos[mid] for rule, mid in self.rules.items()}

    def merge(self, results: Mapping[str, Detections]) -> Detections:
        """One Detections from every needed model's detections of one frame."""
        parts = [
            label_detections(results[mid], mid, self.infos[mid].rule_labels, self.watch[mid])
            for mid in self.needed
        ]
        if len(parts) == 1:
            return parts[0]
        return Detections.merge(parts)


def plan_stream(
    stream: StreamConfig,
    rule_ids: Mapping[str, str],
    default_id: str,
    infos: Mapping[str, ModelInfo],
) -> StreamModels:
    """The plan of ``stream`` given rule -> model id for all four rules and the id of ``model:``."""
    rules = {rule: rule_ids[rule] for rule in enabled_rules(stream)}
    if not rules:
        return StreamModels(stream.id, {}, (default_id,), {default_id: infos[default_id]}, {default_id: None})
    needed = tuple(dict.fromkeys(rules.values()))
    watch: dict[str, set[str] | None] = {mid: set() for mid in needed}
    for rule, mid in rules.items():
        watch[mid] = (watch[mid] or set()) | watched(stream, rule)
    return StreamModels(stream.id, rules, needed, {mid: infos[mid] for mid in needed}, watch)


@dataclass
class RuleModelSet:
    """The loaded models of a deployment (one instance per distinct model) and each stream's plan."""

    models: dict[str, LoadedModel] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    plans: dict[str, StreamModels] = field(default_factory=dict)
    #: model id -> the sections of the enabled rules it serves (what the manifest watcher re-resolves)
    sections: dict[str, list[ModelConfig]] = field(default_factory=dict)

    def plan(self, stream: StreamConfig | str) -> StreamModels:
        sid = stream if isinstance(stream, str) else stream.id
        try:
            return self.plans[sid]
        except KeyError:
            raise KeyError(f"stream {sid!r} was not planned when the models were loaded") from None

    @property
    def backends(self) -> dict[str, InferenceBackend]:
        return {mid: m.backend for mid, m in self.models.items()}

    def pipeline(
        self, stream: StreamConfig, sink: EventSink, evidence: EvidenceConfig | None = None
    ) -> StreamPipeline:
        """A :class:`StreamPipeline` for ``stream`` whose events name the model of each rule."""
        plan = self.plan(stream)
        return StreamPipeline(stream, plan.default, sink, evidence or EvidenceConfig(), plan.rule_infos)

    def describe(self) -> str:
        """``citywatch-synth@1.1.0 (openvino fp32), yolov8n-coco@1.0.0 (onnx int8)``."""
        return ", ".join(f"{mid} ({m.kind} {m.precision})" for mid, m in self.models.items())

    def close(self) -> None:
        for m in self.models.values():
            m.backend.close()


def load_rule_models(
    cfg: CitywatchConfig,
    threads: int | None = None,
    base_dir: Path | None = None,
    streams: Iterable[StreamConfig] | None = None,
    *,
    loader: Callable[[ModelConfig, int | None, Path | None], LoadedModel] = load_model,
    ref_of: Callable[[str | None], str] = manifest_ref,
) -> RuleModelSet:
    """Load every model that ``streams`` (default: the enabled ones) need, once each, and plan them."""
    chosen = list(cfg.enabled_streams if streams is None else streams)
    keys: dict[ModelKey, str] = {}
    sections: dict[str, list[ModelConfig]] = {}

    def id_for(mc: ModelConfig) -> str:
        key = model_key(mc, base_dir, ref_of)
        if key not in keys:
            base = key.source.split(":", 1)[1]
            base = base if key.source.startswith("ref:") else Path(base).stem
            taken = sum(1 for k in keys if k.source == key.source)
            keys[key] = base if not taken else f"{base}#{taken + 1}"
        sections.setdefault(keys[key], []).append(mc)
        return keys[key]

    wanted: dict[str, tuple[dict[str, str], str]] = {}
    needed_ids: list[str] = []
    serving: dict[str, list[ModelConfig]] = {}  # model id -> the sections of the rules it serves
    for stream in chosen:
        rule_cfgs = rule_model_configs(cfg, stream)
        rule_ids = {rule: id_for(mc) for rule, mc in rule_cfgs.items()}
        default_id = id_for(cfg.model)
        wanted[stream.id] = (rule_ids, default_id)
        on = enabled_rules(stream)
        used = [(rule_ids[r], rule_cfgs[r]) for r in on] if on else [(default_id, cfg.model)]
        needed_ids += [mid for mid, _ in used]
        for mid, mc in used:
            serving.setdefault(mid, []).append(mc)
    out = RuleModelSet()
    infos: dict[str, ModelInfo] = {}
    for mid in dict.fromkeys(needed_ids):
        first = sections[mid][0]
        loaded = loader(first, threads, base_dir)
        info = loaded.info
        loaded.info = ModelInfo(info.name, info.version, info.sha256, info.class_names, info.rule_labels, mid)
        out.models[mid] = loaded
        out.batches[mid] = max(mc.batch for mc in sections[mid])
        out.sections[mid] = serving[mid]
        infos[mid] = loaded.info
    for sid, (rule_ids, default_id) in wanted.items():
        stream = next(s for s in chosen if s.id == sid)
        out.plans[sid] = plan = plan_stream(stream, rule_ids, default_id, infos)
        for rule, mid in plan.rules.items():
            info = infos[mid]
            if not rule_classes(stream, rule) & (set(info.rule_labels.values()) | set(info.class_names)):
                log.warning(
                    "stream %s: %s is served by %s, which has no %s class; it cannot fire "
                    "(see `citywatch config check`)", sid, rule, mid, RULE_LABELS[rule],
                )  # fmt: skip
    if len(out.models) > 1:
        log.info("%d models serve this deployment: %s", len(out.models), out.describe())
    return out
