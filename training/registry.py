"""The model folder: model cards, manifest entries, exports, listing (promotion: :mod:`training.promotion`).

Every change to ``manifest.yaml`` happens under an exclusive lock on ``models/.manifest.lock`` (load, change,
atomic save), so two commands cannot lose each other's entries. Whatever writes an artefact's entry writes
its sha256 too (``sha256``, ``checksums``: :mod:`detector.contracts.artifacts`), hashed from the files.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from detector.contracts.artifacts import artifact_checksums, export_checksums, verify_entry
from detector.contracts.history import HistoryRecord
from detector.contracts.manifest import (
    MANIFEST_NAME,
    REPO_ROOT,
    Manifest,
    ManifestError,
    ModelEntry,
    load_manifest,
    models_dir,
    parse_manifest,
    save_manifest,
    split_ref,
)
from training.errors import RegistryError

LOCK_NAME = ".manifest.lock"
HISTORY_SHOWN = 10  # `models list` / `models show`: the newest history records


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_NAME).open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def editing_manifest(folder: Path | None = None) -> Iterator[Manifest]:
    """Lock, load (an empty manifest if none yet), yield for changes, save when the block ends without
    error."""
    folder = folder or models_dir()
    with _locked(folder):
        manifest = load_manifest(folder, missing_ok=True)
        yield manifest
        save_manifest(manifest, folder / MANIFEST_NAME)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def card_text(
    entry: ModelEntry, *, data_yaml: str, model_info: dict[str, Any], full_args: dict[str, Any]
) -> str:
    """The model card (markdown) for a newly trained entry."""
    m = entry.metrics
    if m is None:
        raise RegistryError(f"{entry.ref}: a trained model's card needs its test metrics")
    out = [
        f"# {entry.name} {entry.version}",
        "",
        f"- created: {entry.created.isoformat()}",
        f"- task: {entry.task}, input {entry.imgsz}x{entry.imgsz} px (letterboxed RGB)",
        f"- weights: `{entry.file}` (sha256 `{entry.sha256}`)",
        f"- exports: {', '.join(f'{k}: `{v}`' for k, v in entry.exports.items()) or 'none'}",
        f"- architecture: `{model_info.get('arch', '?')}`, "
        f"{model_info.get('params', 0) / 1e6:.2f} M parameters, "
        f"{model_info.get('gflops', 0.0):.2f} GFLOPs at {entry.imgsz} px",
        "",
        "## Data",
        "",
        f"- dataset yaml: `{data_yaml}`",
        f"- data hash (sha256 over the train split's label files): `{entry.data_hash}`",
        f"- train images: {model_info.get('train_images', '?')}",
        "",
        "## Classes and rule labels",
        "",
        "| id | class | rule label |",
        "|---:|---|---|",
        *(
            f"| {i} | {c} | {entry.rule_labels.get(c, '— (not used by rules)')} |"
            for i, c in enumerate(entry.classes)
        ),
        "",
        f"## Metrics ({m.split or '?'} split, {m.images if m.images is not None else '?'} images)",
        "",
        f"mAP50 **{m.map50:.3f}**" + (f", mAP50-95 {m.map50_95:.3f}" if m.map50_95 is not None else ""),
        "",
        "| class | AP50 |",
        "|---|---:|",
        *(
            f"| {c} | {m.per_class[c]:.3f} |" if c in m.per_class else f"| {c} | no labels |"
            for c in entry.classes
        ),
    ]
    if m.per_view:
        head = "| view | split | images | mAP50 | " + " | ".join(entry.classes) + " |"
        out += [
            "",
            "### Per view (AP50 per class)",
            "",
            head,
            "|---|---|---:|---:|" + "---:|" * len(entry.classes),
        ]
        out += [
            f"| {v} | {vm.split} | {vm.images} | {vm.map50:.3f} | "
            + " | ".join(f"{vm.per_class[c]:.3f}" if c in vm.per_class else "—" for c in entry.classes)
            + " |"
            for v, vm in m.per_view.items()
        ]
    out += [
        "",
        "## Training",
        "",
        (
            f"Fine-tuned from `{full_args.get('pretrained')}`, ultralytics, fp32 (no AMP). Arguments:"
            if isinstance(full_args.get("pretrained"), str)
            else "From scratch (no pretrained weights), ultralytics, fp32 (no AMP). Arguments:"
        ),
        "",
        "```yaml",
        yaml.safe_dump(full_args, sort_keys=True, allow_unicode=True).rstrip(),
        "```",
        "",
        "## Limits",
        "",
        "Metrics hold for the data above only. Check a new camera view or drone altitude against labelled "
        "frames "
        "from it (`citywatch eval`) before relying on the model there.",
        "",
    ]
    return "\n".join(out)


def repo_relative(value: Any) -> Any:
    """``value`` with this checkout's absolute path removed from every string in it: cards and manifest
    entries travel with the repository, so they name paths relative to its root."""
    root = f"{REPO_ROOT}/"
    if isinstance(value, str):
        return value.replace(root, "")
    if isinstance(value, dict):
        return {k: repo_relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repo_relative(v) for v in value]
    return value


def register(entry: ModelEntry, card: str, folder: Path | None = None) -> ModelEntry:
    """Write the card and add the entry (its .pt and exports must already be in the folder)."""
    folder = folder or models_dir()
    card = repo_relative(card)
    if entry.train_args is not None:
        entry.train_args = repo_relative(entry.train_args)
    missing = [p for p in [entry.file, *entry.exports.values()] if not (folder / p).exists()]
    if missing:
        raise RegistryError(f"cannot register {entry.ref}: missing in {folder}: {', '.join(missing)}")
    try:
        verify_entry(entry, folder)  # the files in the folder are the ones the entry's hashes describe
    except ManifestError as err:
        raise RegistryError(f"cannot register {entry.ref}: {err}") from err
    with editing_manifest(folder) as manifest:
        try:
            manifest.add(entry)
        except ManifestError as err:
            raise RegistryError(str(err)) from err
        (folder / entry.card).write_text(card, encoding="utf-8")
    return entry


def record_export(ref: str, key: str, artifact: Path, folder: Path | None = None) -> ModelEntry:
    """Add ``key -> artifact`` to the entry's ``exports`` and the sha256 of its files to ``checksums``."""
    folder = folder or models_dir()
    rel = artifact.relative_to(folder).as_posix()
    hashes = artifact_checksums(folder, rel)
    with editing_manifest(folder) as manifest:
        entry = manifest.get(ref)
        old = entry.exports.get(key)
        entry.checksums = {
            k: v
            for k, v in entry.checksums.items()
            if old is None or not (k == old or k.startswith(f"{old}/"))
        }
        entry.exports[key] = rel
        entry.checksums.update(hashes)
        ModelEntry.model_validate(entry.model_dump())  # exports and checksums still agree
    return entry


def rehash(refs: list[str], folder: Path | None = None) -> list[str]:
    """Record the sha256 of every file of each entry's exports as the files are now (``checksums``).

    For exports made or replaced by hand, and for a manifest written before ``checksums`` existed: the entries
    are read as plain YAML, so a manifest that fails validation for want of checksums can be mended. Only run
    it on files you trust: it makes the detector accept them. Returns the ``name@version`` of each entry.
    """
    folder = folder or models_dir()
    path = folder / MANIFEST_NAME
    with _locked(folder):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise RegistryError(f"cannot read {path}: {err}") from err
        entries = data.get("models") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise RegistryError(f"{path}: no `models` list")
        done = []
        for ref in refs:
            name, version = split_ref(ref)
            found = [
                e
                for e in entries
                if isinstance(e, dict) and e.get("name") == name and version in (None, str(e.get("version")))
            ]
            if not found:
                raise RegistryError(f"{path}: no model {ref!r}")
            e = max(
                found, key=lambda f: [int(p) if p.isdigit() else -1 for p in str(f.get("version")).split(".")]
            )
            try:
                e["checksums"] = export_checksums(folder, e.get("exports") or {})
            except ManifestError as err:
                raise RegistryError(f"{ref}: {err}") from err
            done.append(f"{name}@{e.get('version')}")
        save_manifest(parse_manifest(data, path), path)
    return done


def list_table(manifest: Manifest) -> str:
    """name, version, classes, map50, backend, default marker."""
    if not manifest.models:
        return "no models in the manifest"
    default = manifest.find(manifest.default) if manifest.default else None
    rows = [
        [
            "*" if default is e else "",
            e.name,
            e.version,
            ",".join(e.classes) if len(e.classes) <= 6 else f"{len(e.classes)} classes",
            f"{e.metrics.map50:.3f}" if e.metrics is not None else "—",
            f"{e.backend}/{e.precision}",
            e.created.date().isoformat(),
        ]
        for e in manifest.models
    ]
    table = _table(rows, ["", "name", "version", "classes", "map50", "backend", "created"])
    if not manifest.history:
        return table
    shown = manifest.history[-HISTORY_SHOWN:]
    more = len(manifest.history) - len(shown)
    head = f"\nhistory (the last {len(shown)} of {len(manifest.history)}):" if more else "\nhistory:"
    return "\n".join([table, head, *(f"  {history_line(r)}" for r in shown)])


def history_line(rec: HistoryRecord) -> str:
    """``2026-12-08 09:30Z promote citywatch-synth@1.2.0 -> citywatch-synth@1.3.0 by alice [FORCED: ...]``."""
    line = f"{rec.at:%Y-%m-%d %H:%M}Z {rec.action:<8} {rec.from_ or '(none)'} -> {rec.to} by {rec.by}"
    if rec.forced:
        line += " FORCED past " + ", ".join(f.figure for f in rec.failures)
    return line + (f": {rec.reason}" if rec.reason else "")


def show(ref: str) -> str:
    """The model card followed by the manifest entry."""
    manifest = load_manifest()
    entry = manifest.get(ref)
    card_file = entry.models_dir / entry.card
    card = (
        card_file.read_text(encoding="utf-8") if card_file.is_file() else f"(card {card_file} is missing)\n"
    )
    listed = yaml.safe_dump(
        entry.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True
    )
    is_default = manifest.default is not None and manifest.find(manifest.default) is entry
    mine = [r for r in manifest.history if entry.ref in (r.from_, r.to)]
    history = "".join(f"- {history_line(r)}\n" for r in mine[-HISTORY_SHOWN:])
    return (
        f"{card.rstrip()}\n\n## Manifest entry{' (default)' if is_default else ''}\n\n```yaml\n{listed}```\n"
        + (f"\n## Promotions and rollbacks\n\n{history}" if history else "")
    )
