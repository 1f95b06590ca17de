"""``config check``: every enabled rule is served by a model that has the rule's label.

A rule reads the detections of one model (``model:``, or ``rule_models:`` globally or per stream). When
that model has no class mapped onto the rule's label — e.g. ``street_vending`` served by the COCO model,
which has no ``vendor`` class — the rule can never fire; ``citywatch config check`` says so, at the
section that chose the model, with the fix. Only rules enabled on some zone are checked.

What a model has comes from the manifest (``rule_labels``) for a manifest name. For ``model.path`` the
class names are read cheaply: an ONNX file's metadata ``names``, an OpenVINO export's ``metadata.yaml``;
a ``.pt`` cannot be read without loading torch, so it is skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.config.errors import Loc, Problem
from detector.config.model import ModelConfig
from detector.config.schema import CitywatchConfig, StreamConfig
from detector.contracts.manifest import Manifest, ManifestError, load_manifest
from detector.inference.base import parse_names
from detector.inference.model import KNOWN_RULE_LABELS, model_path
from detector.inference.rule_models import RULE_LABELS, enabled_rules, rule_classes


@dataclass(frozen=True)
class ModelLabels:
    """What a model section's model can detect; ``classes`` None: unknown (``note`` says why)."""

    name: str
    classes: tuple[str, ...] | None
    rule_labels: frozenset[str] = frozenset()
    note: str | None = None
    error: str | None = None  # the section names no usable model (unknown manifest name)

    def sees(self, wanted: set[str]) -> bool:
        return bool(wanted & self.rule_labels) or bool(wanted & set(self.classes or ()))


Describe = Callable[[ModelConfig], ModelLabels]
Suggest = Callable[[str], str | None]


def onnx_names(path: Path) -> list[str] | None:
    """Class names from an ONNX file's metadata (``names``), without an inference session if possible."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
    except ImportError:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = dict(session.get_modelmeta().custom_metadata_map)
    return parse_names(meta.get("names"))


def openvino_names(folder: Path) -> list[str] | None:
    import yaml

    meta_file = folder / "metadata.yaml"
    if not meta_file.is_file():
        return None
    data: Any = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
    return parse_names(data.get("names")) if isinstance(data, dict) else None


def describe_path(path: Path) -> ModelLabels:
    """What a model file given by ``model.path`` detects, read from its metadata."""
    if not path.exists():
        return ModelLabels(str(path), None, note=f"{path} does not exist here; its classes are not checked")
    if path.suffix == ".pt":
        return ModelLabels(
            str(path), None, note=f"{path.name}: a .pt cannot be read without loading it; not checked"
        )
    try:
        names = openvino_names(path) if path.is_dir() else onnx_names(path)
    except Exception as err:  # onnx / onnxruntime raise their own types for a broken file
        return ModelLabels(str(path), None, note=f"cannot read the class names of {path}: {err}")
    if names is None:
        return ModelLabels(str(path), None, note=f"{path} declares no class names; not checked")
    labels = frozenset(KNOWN_RULE_LABELS[n] for n in names if n in KNOWN_RULE_LABELS)
    return ModelLabels(path.name, tuple(names), labels)


def describer(base_dir: Path | None, manifest: Manifest | None, manifest_error: str | None) -> Describe:
    """Describe model sections against ``manifest`` (names) and the files (paths), each once."""
    seen: dict[str, ModelLabels] = {}

    def describe(mc: ModelConfig) -> ModelLabels:
        path = model_path(mc, base_dir)
        key = f"path:{path}" if path is not None else f"name:{mc.name}"
        if key in seen:
            return seen[key]
        if path is not None:
            seen[key] = describe_path(path)
        elif manifest is None:
            seen[key] = ModelLabels(mc.name or "the default model", None, note=manifest_error)
        else:
            try:
                entry = manifest.get(mc.name)
            except ManifestError as err:
                seen[key] = ModelLabels(mc.name or "the default model", None, error=str(err))
            else:
                seen[key] = ModelLabels(
                    entry.ref, tuple(entry.classes), frozenset(entry.rule_labels.values())
                )
        return seen[key]

    return describe


def suggester(manifest: Manifest | None) -> Suggest:
    """A manifest model with a rule label (the default model first), for the hint."""

    def suggest(label: str) -> str | None:
        if manifest is None:
            return None
        try:
            default = manifest.get(None).name
        except ManifestError:
            default = None
        names = [e.name for e in manifest.models if label in e.rule_labels.values()]
        return default if default in names else (names[0] if names else None)

    return suggest


def _serving(
    cfg: CitywatchConfig, index: int, stream: StreamConfig, rule: str
) -> tuple[ModelConfig, Loc, str]:
    """The section serving ``rule`` on a stream, where it is written, and how to name it."""
    if rule in stream.rule_models:
        return (
            stream.rule_models[rule],
            ("streams", index, "rule_models", rule),
            f"streams[{index}].rule_models",
        )
    if rule in cfg.rule_models:
        return cfg.rule_models[rule], ("rule_models", rule), "rule_models"
    return cfg.model, ("model",), "model"


def label_problems(
    cfg: CitywatchConfig, describe: Describe, suggest: Suggest
) -> tuple[list[Problem], list[str]]:
    """(problems, notes): one problem per model section and rule whose model lacks the rule's label."""
    where: dict[tuple[Loc, str], list[str]] = {}  # (section loc, rule) -> "stream/zone" list
    wanted: dict[tuple[Loc, str], set[str]] = {}  # (section loc, rule) -> labels / class names watched
    first_zone: dict[tuple[Loc, str], Loc] = {}
    sections: dict[Loc, tuple[ModelConfig, str]] = {}
    for index, stream in enumerate(cfg.streams):
        for rule in enabled_rules(stream):
            mc, loc, shown = _serving(cfg, index, stream, rule)
            sections[loc] = (mc, shown)
            key = (loc, rule)
            zones = [z for z in stream.zones if rule in z.rules and getattr(z.effective_rules, rule).enabled]
            where.setdefault(key, []).extend(f"{stream.id}/{z.id}" for z in zones)
            wanted.setdefault(key, set()).update(rule_classes(stream, rule))
            zone_index, rule_index = stream.zones.index(zones[0]), zones[0].rules.index(rule)
            first_zone.setdefault(key, ("streams", index, "zones", zone_index, "rules", rule_index))
    problems: list[Problem] = []
    notes: list[str] = []
    explicit = "model" in cfg.model_fields_set
    for (loc, rule), places in where.items():
        mc, shown = sections[loc]
        info = describe(mc)
        at = loc if loc != ("model",) or explicit else first_zone[(loc, rule)]
        if info.error is not None:
            if not any(p.loc == at and p.message == info.error for p in problems):
                problems.append(
                    Problem(at, info.error, "run `citywatch models list` for the registered models")
                )
            continue
        if info.classes is None:
            if info.note and info.note not in notes:
                notes.append(info.note)
            continue
        if info.sees(wanted[(loc, rule)]):
            continue
        label = RULE_LABELS[rule]
        other = suggest(label)
        eg = f", e.g. {other}," if other and other != info.name.split("@")[0] else ""
        labels = ", ".join(sorted(info.rule_labels)) or "none"
        message = (
            f"{rule} is served by {info.name} ({shown}), which has no `{label}` rule label "
            f"(its rule labels: {labels}); enabled on {', '.join(places)}"
        )
        hint = f"serve {rule} from a model with a `{label}` rule label{eg} under rule_models"
        problems.append(Problem(at, message, hint))
    return problems, notes


def check_labels(cfg: CitywatchConfig, base_dir: Path | None) -> tuple[list[Problem], list[str]]:
    """:func:`label_problems` against the real manifest and model files."""
    if not any(enabled_rules(s) for s in cfg.streams):
        return [], []
    manifest: Manifest | None
    try:
        manifest, error = load_manifest(), None
    except ManifestError as err:
        manifest, error = None, f"model labels not checked: {err}"
    return label_problems(cfg, describer(base_dir, manifest, error), suggester(manifest))
