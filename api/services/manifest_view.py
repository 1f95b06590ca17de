"""The data team's view of the models (``GET /models``): the manifest (through
``detector.contracts.manifest``), which model serves which rule (the streams file, read as plain
YAML: the API may not import ``detector.config``) and what the collection holds (the sidecars,
through ``detector.contracts.frames``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from api.models import Rule
from detector.contracts.frames import CollectError, read_record, sidecars
from detector.contracts.manifest import Manifest, ManifestError, ModelEntry, load_manifest, manifest_path

CARD_MAX_CHARS = 64 * 1024
COLLECT_MAX_FILES = 50_000
"""Most sidecars counted per request; past it the counts say ``truncated``."""


def _card(entry: ModelEntry) -> str | None:
    path = entry.models_dir / entry.card
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.read(CARD_MAX_CHARS)
    except OSError:
        return None


def model_view(entry: ModelEntry, default_ref: str | None) -> dict[str, Any]:
    return {
        "ref": entry.ref,
        "name": entry.name,
        "version": entry.version,
        "default": entry.ref == default_ref,
        "backend": entry.backend,
        "precision": entry.precision,
        "imgsz": entry.imgsz,
        "classes": entry.classes,
        "rule_labels": entry.rule_labels,
        "exports": sorted(entry.exports),
        "metrics": entry.metrics.model_dump(mode="json") if entry.metrics else None,
        "created": entry.created.isoformat(),
        "data_hash": entry.data_hash,
        "licence": entry.licence,
        "source": entry.source,
        "card_path": entry.card,
        "card": _card(entry),
    }


def _name(spec: Any) -> str | None:
    """A model section's ``name`` (``{name: yolov8n-coco, tiles: 2}``), None when unset."""
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return str(spec["name"])
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _resolve(manifest: Manifest | None, name: str | None) -> str | None:
    """``name`` (or the default when None) as the ``name@version`` the manifest resolves it to."""
    if manifest is None:
        return name
    ref = name if name is not None else manifest.default
    entry = manifest.find(ref) if ref else None
    return entry.ref if entry is not None else ref


def rule_models(streams_file: Path | None, manifest: Manifest | None) -> dict[str, Any]:
    """Each rule's model: ``rule_models`` over ``model`` over the manifest default, and the streams
    whose own ``rule_models`` serve a rule with another model."""
    view: dict[str, Any] = {"source": str(streams_file) if streams_file else None, "error": None, "rules": []}
    data: dict[str, Any] = {}
    if streams_file is not None:
        try:
            data = _mapping(yaml.safe_load(streams_file.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as exc:
            view["error"] = f"{streams_file}: {exc}"
    default_name = _name(data.get("model"))
    shared = _mapping(data.get("rule_models"))
    streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    for rule in Rule:
        name = _name(shared.get(rule.value)) or default_name
        overrides = {}
        for stream in streams:
            own = _mapping(stream.get("rule_models"))
            if _name(own.get(rule.value)) is not None:
                overrides[str(stream.get("id"))] = _resolve(manifest, _name(own.get(rule.value)))
        view["rules"].append({"rule": rule.value, "model": _resolve(manifest, name), "streams": overrides})
    return view


def collection_counts(root: Path | None, limit: int = COLLECT_MAX_FILES) -> dict[str, Any] | None:
    """Frames per stream: by reason, by the desk's verdict, labelled; None without a collection."""
    if root is None:
        return None
    view: dict[str, Any] = {"dir": str(root), "frames": 0, "unreadable": 0, "truncated": False, "streams": {}}
    if not root.is_dir():
        view["error"] = f"{root} is not a folder"
        return view
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"frames": 0, "reasons": Counter(), "verdicts": Counter(), "labelled": 0, "last": None}
    )
    paths = sidecars(root)
    view["truncated"] = len(paths) > limit
    for path in paths[-limit:]:
        try:
            record = read_record(path)
        except CollectError:
            view["unreadable"] += 1
            continue
        counts = per[record.stream]
        counts["frames"] += 1
        counts["reasons"].update(record.reasons)
        if record.review is not None:
            counts["verdicts"][record.review.verdict] += 1
        counts["labelled"] += record.labels is not None
        at = record.captured_at.isoformat()
        counts["last"] = max(counts["last"] or at, at)
    view["frames"] = sum(c["frames"] for c in per.values())
    view["streams"] = {
        stream: {**c, "reasons": dict(c["reasons"]), "verdicts": dict(c["verdicts"])}
        for stream, c in sorted(per.items())
    }
    return view


def models_view(streams_file: Path | None, collect_dir: Path | None) -> dict[str, Any]:
    manifest: Manifest | None
    try:
        manifest = load_manifest()
        error = None
    except ManifestError as exc:
        manifest, error = None, str(exc)
    default_ref = _resolve(manifest, None) if manifest is not None else None
    return {
        "manifest": str(manifest_path()),
        "error": error,
        "default": manifest.default if manifest is not None else None,
        "default_ref": default_ref,
        "models": [model_view(m, default_ref) for m in manifest.models] if manifest else [],
        "history": [h.model_dump(mode="json", by_alias=True) for h in manifest.history] if manifest else [],
        "rules": rule_models(streams_file, manifest),
        "collection": collection_counts(collect_dir),
    }
