"""The model manifest, ``models/manifest.yaml`` (contracts section 3).

Read by the detector at run time, written by ``training/``. This module must stay light: no torch, no
ultralytics. The models folder is the repository's ``models/`` unless ``CITYWATCH_MODELS_DIR`` names another.

``default`` names the promoted model either as ``name`` (its highest version) or as ``name@version``;
``history`` records each promotion and rollback (:mod:`detector.contracts.history`). Every artefact has
its sha256: ``sha256`` for the .pt, ``checksums`` for each file of each export (checked at load by
:mod:`detector.contracts.artifacts`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from detector.contracts.errors import DetectorError
from detector.contracts.history import HistoryRecord

MODELS_DIR_ENV = "CITYWATCH_MODELS_DIR"
MANIFEST_NAME = "manifest.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]

RuleLabel = Literal["vehicle", "vendor", "litter", "structure"]
Backend = Literal["ultralytics", "onnx", "openvino"]
Precision = Literal["fp32", "int8"]
ArtifactKind = Literal["pt", "ultralytics", "onnx", "openvino"]

_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_EXPORT_KEYS = ("onnx", "onnx_int8", "openvino", "openvino_int8")


class ManifestError(DetectorError):
    """The manifest or a model file it lists is missing, malformed or does not match."""


def _check_relative(value: str) -> str:
    p = Path(value)
    if p.is_absolute() or ".." in p.parts or not value.strip():
        raise ValueError(f"must be a plain path relative to the models folder, got {value!r}")
    return value


def _inside(path: str, export: str) -> bool:
    """``path`` is the export file itself or a file in the export folder."""
    return path == export or path.startswith(f"{export}/")


class ViewMetrics(BaseModel):
    """Metrics on one viewpoint's test split (e.g. street cameras, drones)."""

    model_config = ConfigDict(extra="forbid")

    map50: float = Field(ge=0.0, le=1.0, description="mAP at IoU 0.5 on this view")
    per_class: dict[str, float] = Field(default_factory=dict, description="class name -> AP50")
    split: str | None = Field(default=None, description="dataset yaml key evaluated")
    images: int | None = Field(default=None, ge=0, description="images evaluated")


class Metrics(BaseModel):
    """Test metrics recorded when the model was registered."""

    model_config = ConfigDict(extra="forbid")

    map50: float = Field(ge=0.0, le=1.0, description="mAP at IoU 0.5 over all classes")
    map50_95: float | None = Field(default=None, ge=0.0, le=1.0, description="mAP at IoU 0.5:0.95")
    per_class: dict[str, float] = Field(default_factory=dict, description="class name -> AP50")
    per_view: dict[str, ViewMetrics] | None = Field(default=None, description="view name -> metrics")
    split: str | None = Field(default=None, description="dataset yaml key the metrics come from")
    images: int | None = Field(default=None, ge=0, description="images evaluated")
    data: str | None = Field(default=None, description="dataset yaml evaluated, relative to the repository")
    data_hash: str | None = Field(
        default=None,
        description="sha256 over the evaluated split's label files: two entries with the same one were "
        "measured on the same holdout (the promotion gate compares their metrics directly)",
    )

    @field_validator("data_hash")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _SHA_RE.match(v):
            raise ValueError("must be 64 lower-case hex digits (a sha256)")
        return v


class ModelEntry(BaseModel):
    """One trained model: its weights, exports, classes and provenance."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="model name, lower case, e.g. citywatch-synth")
    version: str = Field(description="semantic version X.Y.Z (quote it in YAML)")
    file: str = Field(description="the .pt file, relative to the models folder")
    exports: dict[str, str] = Field(default_factory=dict, description="export kind -> path in models/")
    task: Literal["detect"] = "detect"
    imgsz: int = Field(gt=0, le=4096, description="square input size in pixels")
    classes: list[str] = Field(min_length=1, description="model class names by class id")
    rule_labels: dict[str, RuleLabel] = Field(default_factory=dict, description="class name -> rule label")
    backend: Backend = Field(default="onnx", description="which runtime the detector uses")
    precision: Precision = Field(default="fp32", description="fp32 or int8 artifact for the backend")
    metrics: Metrics | None = Field(
        default=None, description="test metrics measured at registration; None for a model brought in"
    )
    data_hash: str | None = Field(
        default=None, description="sha256 over the training split's label files; None when not ours"
    )
    licence: str | None = Field(default=None, description="licence of the weights (SPDX id), when not ours")
    source: str | None = Field(default=None, description="where weights brought in from elsewhere came from")
    sha256: str = Field(description="sha256 of `file`")
    checksums: dict[str, str] = Field(
        default_factory=dict,
        description="sha256 of every file of every export, by path in models/ (a folder's files one by one)",
    )
    card: str = Field(description="model card (markdown), relative to the models folder")
    created: AwareDatetime
    train_args: dict[str, Any] | None = Field(
        default=None, description="arguments the model was trained with"
    )

    _models_dir: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"use lower case letters, digits, '.', '_' or '-', got {v!r}")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION_RE.match(v):
            raise ValueError(f"must look like 1.2.3, got {v!r}")
        return v

    @field_validator("data_hash", "sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _SHA_RE.match(v):
            raise ValueError("must be 64 lower-case hex digits (a sha256)")
        return v

    @field_validator("file", "card")
    @classmethod
    def _relative(cls, v: str) -> str:
        return _check_relative(v)

    @field_validator("checksums")
    @classmethod
    def _checksums(cls, v: dict[str, str]) -> dict[str, str]:
        for path, digest in v.items():
            _check_relative(path)
            if not _SHA_RE.match(digest):
                raise ValueError(f"checksum of {path}: must be 64 lower-case hex digits (a sha256)")
        return v

    @field_validator("exports")
    @classmethod
    def _exports(cls, v: dict[str, str]) -> dict[str, str]:
        for key, path in v.items():
            if key not in _EXPORT_KEYS:
                raise ValueError(f"unknown export kind {key!r}; known: {', '.join(_EXPORT_KEYS)}")
            _check_relative(path)
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> ModelEntry:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes repeat a name: {self.classes}")
        unknown = sorted(set(self.rule_labels) - set(self.classes))
        if unknown:
            raise ValueError(f"rule_labels maps names that are not classes: {unknown}")
        fix = (
            f"run `citywatch models rehash {self.ref}` to record the files as they are now (only files you "
            "trust), or export them again with `citywatch export`"
        )
        bare = [k for k, p in self.exports.items() if not any(_inside(c, p) for c in self.checksums)]
        if bare:
            raise ValueError(f"{self.ref}: exports {bare} have no sha256 in `checksums`; {fix}")
        stray = sorted(c for c in self.checksums if not any(_inside(c, p) for p in self.exports.values()))
        if stray:
            raise ValueError(f"{self.ref}: `checksums` lists files of no export: {stray}; {fix}")
        return self

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    @property
    def models_dir(self) -> Path:
        """The folder this entry's paths are relative to."""
        return self._models_dir if self._models_dir is not None else models_dir()


def check_name_version(name: str, version: str) -> None:
    """Raise ManifestError unless ``name`` and ``version`` would pass the manifest's checks."""
    if not _NAME_RE.match(name):
        raise ManifestError(f"model name {name!r}: use lower case letters, digits, '.', '_' or '-'")
    if not _VERSION_RE.match(version):
        raise ManifestError(f"model version {version!r}: must look like 1.2.3")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"name@1.2.3"`` -> ``("name", "1.2.3")``; ``"name"`` -> ``("name", None)``."""
    name, sep, version = ref.partition("@")
    return name, (version if sep else None)


class Manifest(BaseModel):
    """The whole ``models/manifest.yaml``."""

    model_config = ConfigDict(extra="forbid")

    default: str | None = Field(default=None, description="promoted model: name or name@version")
    models: list[ModelEntry] = Field(default_factory=list)
    history: list[HistoryRecord] = Field(
        default_factory=list, description="promotions and rollbacks, oldest first (absent in old manifests)"
    )

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_checks(self) -> Manifest:
        seen: set[tuple[str, str]] = set()
        files: set[str] = set()
        for entry in self.models:
            key = (entry.name, entry.version)
            if key in seen:
                raise ValueError(f"{entry.ref} is listed twice")
            if entry.file in files:
                raise ValueError(f"file {entry.file} is listed by two entries")
            seen.add(key)
            files.add(entry.file)
        if self.default is not None and self.find(self.default) is None:
            raise ValueError(f"default {self.default!r} names no model in the list")
        return self

    def find(self, ref: str) -> ModelEntry | None:
        """The entry for ``name`` (highest version) or ``name@version``, or None."""
        name, version = split_ref(ref)
        matches = [m for m in self.models if m.name == name and (version is None or m.version == version)]
        if not matches:
            return None
        return max(matches, key=lambda m: _version_key(m.version))

    def get(self, ref: str | None = None) -> ModelEntry:
        """The entry for ``ref`` (``name`` or ``name@version``); None means the default model."""
        where = self._path or "the manifest"
        if ref is None:
            if self.default is None:
                raise ManifestError(f"{where}: no default model; run `citywatch models promote NAME`")
            ref = self.default
        entry = self.find(ref)
        if entry is None:
            known = ", ".join(sorted({m.ref for m in self.models})) or "none"
            raise ManifestError(f"{where}: no model {ref!r}; known: {known}")
        return entry

    def add(self, entry: ModelEntry) -> None:
        """Append an entry; refuses a name@version that is already listed."""
        if self.find(entry.ref) is not None:
            raise ManifestError(f"{entry.ref} is already in the manifest; use another version")
        self.models.append(entry)
        if self.default is None:
            self.default = entry.name


def models_dir() -> Path:
    """``$CITYWATCH_MODELS_DIR`` if set, else the repository's ``models/``."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "models"


def manifest_path() -> Path:
    return models_dir() / MANIFEST_NAME


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} error(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key {e['loc'][-1]!r}")
        elif isinstance(value, dict | list):
            lines.append(f"  {loc}: {e['msg']}")
        else:
            hint = (
                " (quote it in YAML)" if e["type"] == "string_type" and isinstance(value, int | float) else ""
            )
            lines.append(f"  {loc}: {e['msg']} (got {value!r}){hint}")
    return "\n".join(lines)


def parse_manifest(data: Any, path: Path) -> Manifest:
    """Validate already-parsed YAML; errors name ``path`` and the key path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ManifestError(f"{path}: the top level must be a mapping with `default` and `models`")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        raise ManifestError(_format_errors(path, err)) from err
    manifest._path = path
    for entry in manifest.models:
        entry._models_dir = path.parent
    return manifest


def load_manifest(path: str | Path | None = None, *, missing_ok: bool = False) -> Manifest:
    """Load and validate the manifest (default ``models/manifest.yaml``).

    ``missing_ok`` returns an empty manifest when the file does not exist (used when registering the first
    model).
    """
    p = Path(path) if path is not None else manifest_path()
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        if missing_ok:
            return parse_manifest({}, p)
        raise ManifestError(f"{p}: manifest not found (set {MODELS_DIR_ENV} or train a model first)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ManifestError(f"{p}: not valid YAML: {err}") from err
    return parse_manifest(data, p)


def save_manifest(manifest: Manifest, path: str | Path | None = None) -> Path:
    """Write the manifest atomically (temp file in the same folder, then rename)."""
    p = Path(path) if path is not None else (manifest._path or manifest_path())
    p.parent.mkdir(parents=True, exist_ok=True)
    data = manifest.model_dump(mode="json", exclude_none=True, by_alias=True)
    if not data.get("history"):
        data.pop("history", None)  # a manifest that never saw a promotion keeps its old shape
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".yaml", dir=p.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; the manifest is read by other users (the detector)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest._path = p
    for entry in manifest.models:
        entry._models_dir = p.parent
    return p


def resolve_path(
    entry: ModelEntry, kind: ArtifactKind | None = None, precision: Precision | None = None
) -> Path:
    """Absolute path of an entry's artifact.

    ``kind`` defaults to the entry's backend, ``precision`` to the entry's precision. ``pt``/``ultralytics``
    is the .pt file; ``onnx`` the .onnx file; ``openvino`` the ``*_openvino_model`` folder. Raises
    ManifestError when the manifest lists no such export or the file is missing.
    """
    kind = kind or entry.backend
    precision = precision or entry.precision
    if kind in ("pt", "ultralytics"):
        if precision != "fp32":
            raise ManifestError(
                f"{entry.ref}: the .pt file is fp32 only; use an onnx or openvino int8 export"
            )
        rel = entry.file
    else:
        key = kind if precision == "fp32" else f"{kind}_int8"
        if key not in entry.exports:
            raise ManifestError(
                f"{entry.ref}: no {key} export in the manifest; run "
                f"`citywatch export {entry.ref} --format {kind}"
                f"{' --int8 --data DATASET_YAML' if precision == 'int8' else ''}`"
            )
        rel = entry.exports[key]
    p = entry.models_dir / rel
    if not p.exists():
        raise ManifestError(f"{entry.ref}: {p} is listed in the manifest but missing")
    return p


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
