"""Dataset yaml handling: names, splits, label hash, and the normalised yaml handed to ultralytics.

A dataset yaml is the ultralytics detection format (``path``, ``train``, ``val``, optional ``test``,
``names``), plus citywatch keys:

* ``rule_labels: {class name: vehicle|vendor|litter|structure}``, the class -> rule-label map for the
  manifest;
* any number of extra splits, e.g. ``test_street`` / ``test_drone``: ``citywatch eval --split test_drone``
  evaluates one, and training records ``test_*`` splits as per-view metrics.

A relative ``path`` is taken relative to the yaml's folder, then to the working directory. ultralytics never
sees the original yaml: it gets one with absolute paths and without ``download`` (so it never fetches a
dataset).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_args

import yaml

from detector.contracts.manifest import RuleLabel
from training.errors import DatasetError

IMAGE_SUFFIXES = frozenset(
    {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"}
)
RULE_LABELS: tuple[str, ...] = get_args(RuleLabel)
# COCO class names that count as a rule label when the dataset gives no `rule_labels` (contracts section 2)
COCO_RULE_LABELS = {"car": "vehicle", "truck": "vehicle", "bus": "vehicle", "motorcycle": "vehicle"}
VIEW_PREFIX = "test_"
_NOT_SPLITS = frozenset(
    {"path", "names", "nc", "download", "rule_labels", "yaml_file", "channels", "kpt_shape"}
)


@dataclass
class DatasetSpec:
    """A parsed dataset yaml."""

    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, list[Path]]
    rule_labels: dict[str, RuleLabel]
    raw: dict[str, Any] = field(repr=False)

    def has(self, split: str) -> bool:
        return split in self.splits or (split not in _NOT_SPLITS and self.raw.get(split) is not None)

    def paths(self, split: str) -> list[Path]:
        """The split's paths; any key of the yaml that holds paths can serve as a split."""
        if split not in self.splits:
            if split in _NOT_SPLITS or self.raw.get(split) is None:
                known = ", ".join(sorted(self.splits)) or "none"
                raise DatasetError(f"{self.yaml_path}: no split {split!r}; the yaml has: {known}")
            self.splits[split] = resolve_split(self.yaml_path, self.root, split, self.raw[split])
        return self.splits[split]

    def eval_split(self) -> str:
        """The split final metrics come from: ``test`` if present, else ``val``."""
        return "test" if "test" in self.splits else "val"

    def view_splits(self) -> dict[str, str]:
        """View name -> split key for the ``test_<view>`` splits."""
        return {k[len(VIEW_PREFIX) :]: k for k in sorted(self.splits) if k.startswith(VIEW_PREFIX)}

    def images(self, split: str) -> list[Path]:
        """The image files of a split, as ultralytics would find them."""
        files: list[Path] = []
        for p in self.paths(split):
            if p.is_dir():
                files += [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
            elif p.is_file() and p.suffix == ".txt":
                files += _read_list(p)
            elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
            else:
                raise DatasetError(f"{self.yaml_path}: split {split!r} path {p} does not exist")
        return sorted(set(files))

    def data_hash(self, split: str = "train") -> str:
        """sha256 over the split's label files, in sorted order: each file's path relative to the dataset root
        and its content hash. Images without a label file (background images) count with an empty label."""
        h = hashlib.sha256()
        images = self.images(split)
        if not images:
            raise DatasetError(f"{self.yaml_path}: split {split!r} has no images")
        for label in sorted(label_path(i) for i in images):
            try:
                rel = label.relative_to(self.root).as_posix()
            except ValueError:
                rel = label.as_posix()
            digest = hashlib.sha256(label.read_bytes()).hexdigest() if label.is_file() else "-"
            h.update(f"{rel}\0{digest}\n".encode())
        return h.hexdigest()

    def write_ultralytics_yaml(self, dest: Path, *, val: str = "val", train: str = "train") -> Path:
        """Write a yaml for ultralytics with absolute paths; ``val`` names the split ultralytics evaluates."""
        data: dict[str, Any] = {
            "path": str(self.root),
            "train": _as_yaml_value(self.paths(train) if self.has(train) else self.paths(val)),
            "val": _as_yaml_value(self.paths(val)),
            "names": dict(enumerate(self.names)),
            "nc": len(self.names),
        }
        if self.has("test"):
            data["test"] = _as_yaml_value(self.paths("test"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return dest


def label_path(image: Path) -> Path:
    """ultralytics' image -> label path rule: the last ``/images/`` becomes ``/labels/``, suffix ``.txt``."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(s.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _read_list(txt: Path) -> list[Path]:
    out = []
    for line in txt.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        p = Path(line)
        if line.startswith("./"):
            p = txt.parent / line[2:]
        if p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p.resolve())
    return out


def _as_yaml_value(paths: list[Path]) -> str | list[str]:
    return str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]


def _resolve_root(yaml_path: Path, raw: dict[str, Any]) -> Path:
    value = raw.get("path")
    if value is None:
        return yaml_path.parent.resolve()
    p = Path(str(value)).expanduser()
    candidates = [p] if p.is_absolute() else [yaml_path.parent / p, Path.cwd() / p]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise DatasetError(
        f"{yaml_path}: path {value!r} is not a folder (tried {', '.join(map(str, candidates))})"
    )


def _parse_names(yaml_path: Path, raw: dict[str, Any]) -> list[str]:
    names = raw.get("names")
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{yaml_path}: `names` keys must be class ids 0..n-1") from err
        if ids != list(range(len(ids))):
            raise DatasetError(f"{yaml_path}: `names` ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(
            f"{yaml_path}: `names` must be a non-empty list (or id -> name map) of class names"
        )
    if len(set(names)) != len(names):
        raise DatasetError(f"{yaml_path}: `names` repeats a class name: {names}")
    nc = raw.get("nc")
    if nc is not None and nc != len(names):
        raise DatasetError(f"{yaml_path}: nc is {nc} but `names` has {len(names)} classes")
    return names


def _parse_rule_labels(yaml_path: Path, raw: dict[str, Any], names: list[str]) -> dict[str, RuleLabel]:
    given = raw.get("rule_labels")
    if given is None:
        out = {n: n for n in names if n in RULE_LABELS}
        out.update({n: COCO_RULE_LABELS[n] for n in names if n in COCO_RULE_LABELS})
        return cast(dict[str, RuleLabel], out)
    if not isinstance(given, dict):
        raise DatasetError(f"{yaml_path}: `rule_labels` must map class names to rule labels")
    for cls, label in given.items():
        if cls not in names:
            raise DatasetError(f"{yaml_path}: rule_labels key {cls!r} is not a class; classes: {names}")
        if label not in RULE_LABELS:
            raise DatasetError(
                f"{yaml_path}: rule_labels[{cls!r}] = {label!r} is not a rule label; use one of {RULE_LABELS}"
            )
    return cast(dict[str, RuleLabel], {str(k): str(v) for k, v in given.items()})


def _is_split_key(key: str) -> bool:
    return key in {"train", "val", "test", "minival"} or key.startswith(VIEW_PREFIX)


def resolve_split(spec_path: Path, root: Path, key: str, value: Any) -> list[Path]:
    """A split's value (path or list of paths, relative to ``root``) as existing absolute paths."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise DatasetError(f"{spec_path}: {key!r} must be a path or a list of paths, got {value!r}")
    paths = [Path(v) if Path(v).is_absolute() else (root / v).resolve() for v in items]
    missing = [str(x) for x in paths if not x.exists()]
    if missing:
        raise DatasetError(f"{spec_path}: split {key!r} points to missing {', '.join(missing)}")
    return paths


def load_dataset(yaml_path: str | Path) -> DatasetSpec:
    """Parse and check a dataset yaml (the split folders must exist)."""
    p = Path(yaml_path).expanduser().resolve()
    if not p.is_file():
        raise DatasetError(f"dataset yaml {p} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DatasetError(f"{p}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise DatasetError(f"{p}: the top level must be a mapping (path, train, val, names)")
    root = _resolve_root(p, raw)
    names = _parse_names(p, raw)
    splits = {
        str(k): resolve_split(p, root, str(k), v)
        for k, v in raw.items()
        if isinstance(k, str) and _is_split_key(k) and v is not None
    }
    if "val" not in splits:
        raise DatasetError(f"{p}: no `val` split; ultralytics needs one")
    return DatasetSpec(
        yaml_path=p,
        root=root,
        names=names,
        splits=splits,
        rule_labels=_parse_rule_labels(p, raw, names),
        raw=raw,
    )
