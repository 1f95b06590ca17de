"""The sha256 of a model's artefacts: what the manifest records for them and the check when one is loaded.

The manifest (contracts README section 3) records ``sha256`` for the ``.pt`` and, in ``checksums``, the
sha256 of every file of every export by its path in the models folder; an OpenVINO export folder
(``*_openvino_model/``: ``.xml``, ``.bin``, ``metadata.yaml``) lists each of its files. Before a model is
loaded its files are hashed and compared with the manifest: a changed, missing or extra file refuses the
load with a :class:`ManifestError` that names the file, both hashes and the fix. A file's check is
remembered for the process (keyed on its size, mtime and inode), so loading the same export again does not
hash it again.

An artefact's *digest*, the ``model.sha256`` a violation event carries, identifies exactly what was loaded:
for a file (``.pt``, ``.onnx``) its sha256; for a folder the sha256 of its ``sha256sum``-style listing, one
line ``<sha256>  <name>`` per file, names relative to the folder, sorted, each line ending in ``\\n``
(for the flat OpenVINO folders: ``cd models/X_openvino_model && sha256sum $(LC_ALL=C ls) | sha256sum``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from detector.contracts.manifest import (
    ArtifactKind,
    ManifestError,
    ModelEntry,
    Precision,
    resolve_path,
    sha256_file,
)

#: (path, expected hashes, stat of each file) -> digest, for checks that passed in this process.
_verified: dict[tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, int, int, int], ...]], str] = {}


def _files(path: Path) -> list[Path]:
    """The file itself, or every file under the folder (sorted by relative name)."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())


def listing_digest(hashes: Mapping[str, str]) -> str:
    """sha256 of the ``sha256sum`` listing of ``name -> sha256`` (names relative to the folder)."""
    text = "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def artifact_checksums(folder: Path, rel: str) -> dict[str, str]:
    """``{path in folder: sha256}`` for the artefact ``rel`` (a file, or every file of a folder)."""
    path = folder / rel
    if not path.exists():
        raise ManifestError(f"{path} is missing")
    files = _files(path)
    if not files:
        raise ManifestError(f"{path} is an empty folder")
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


def export_checksums(folder: Path, exports: Mapping[str, str]) -> dict[str, str]:
    """The manifest's ``checksums`` for ``exports`` (kind -> path), hashed from the files in ``folder``."""
    out: dict[str, str] = {}
    for rel in exports.values():
        out.update(artifact_checksums(folder, rel))
    return out


def path_digest(path: Path) -> str:
    """The digest of a file or folder that is not in the manifest (``model.path`` in a config)."""
    if path.is_file():
        return sha256_file(path)
    return listing_digest({p.relative_to(path).as_posix(): sha256_file(p) for p in _files(path)})


def _expected(entry: ModelEntry, rel: str) -> dict[str, str]:
    if rel == entry.file:
        return {rel: entry.sha256}
    return {k: v for k, v in entry.checksums.items() if k == rel or k.startswith(f"{rel}/")}


def _digest(rel: str, hashes: Mapping[str, str], is_dir: bool) -> str:
    if not is_dir:
        return hashes[rel]
    return listing_digest({k.removeprefix(f"{rel}/"): v for k, v in hashes.items()})


def _signature(files: list[Path]) -> tuple[tuple[str, int, int, int], ...]:
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _refusal(entry: ModelEntry, folder: Path, rel: str, problems: list[str]) -> ManifestError:
    restore = (
        f"Restore the original (`git checkout -- {folder / rel}` in a checkout, or copy it back from the "
        "release); "
        f"if you exported or replaced it on purpose, record it with `citywatch models rehash {entry.ref}`"
        if rel != entry.file
        else "Restore the original weights (`git checkout`, or copy them back from the release), or "
        "register the new weights as a new version"
    )
    return ManifestError(
        f"{entry.ref}: refusing {folder / rel}: it does not match {folder / 'manifest.yaml'}\n  "
        + "\n  ".join(problems)
        + f"\n{restore}."
    )


def verify_artifact(entry: ModelEntry, path: Path, folder: Path | None = None) -> str:
    """Check the artefact at ``path`` (the entry's .pt or one of its exports) against the manifest and
    return its digest; raises ManifestError naming each file that differs, is missing or is not listed."""
    folder = folder or entry.models_dir
    try:
        rel = path.relative_to(folder).as_posix()
    except ValueError as err:
        raise ManifestError(f"{entry.ref}: {path} is not in the models folder {folder}") from err
    expected = _expected(entry, rel)
    if not expected:
        raise ManifestError(f"{entry.ref}: {rel} is no artefact of this entry in {folder / 'manifest.yaml'}")
    if not path.exists():
        raise ManifestError(f"{entry.ref}: {path} is listed in the manifest but missing")
    files = _files(path)
    key = (str(path), tuple(sorted(expected.items())), _signature(files))
    if key in _verified:
        return _verified[key]
    actual = {f.relative_to(folder).as_posix(): sha256_file(f) for f in files}
    problems = [
        f"{name}: sha256 {actual[name]}, the manifest says {expected[name]}"
        for name in sorted(set(expected) & set(actual))
        if actual[name] != expected[name]
    ]
    problems += [
        f"{name}: missing (the manifest says sha256 {expected[name]})"
        for name in sorted(set(expected) - set(actual))
    ]
    problems += [
        f"{name}: not listed in the manifest (sha256 {actual[name]})"
        for name in sorted(set(actual) - set(expected))
    ]
    if problems:
        raise _refusal(entry, folder, rel, problems)
    digest = _digest(rel, actual, path.is_dir())
    _verified[key] = digest
    return digest


def verify_sha256(entry: ModelEntry) -> Path:
    """Check the .pt file against the manifest's ``sha256``; returns its path or raises ManifestError."""
    path = entry.models_dir / entry.file
    verify_artifact(entry, path)
    return path


def verified_path(
    entry: ModelEntry, kind: ArtifactKind | None = None, precision: Precision | None = None
) -> tuple[Path, str]:
    """:func:`resolve_path` and :func:`verify_artifact`: the artefact's path and digest, checked."""
    path = resolve_path(entry, kind, precision)
    return path, verify_artifact(entry, path)


def verify_entry(entry: ModelEntry, folder: Path | None = None) -> None:
    """Check the .pt and every export of ``entry`` (registration: the files are the ones recorded)."""
    folder = folder or entry.models_dir
    for rel in [entry.file, *entry.exports.values()]:
        verify_artifact(entry, folder / rel, folder)


def clear_cache() -> None:
    """Forget the checks made in this process (tests)."""
    _verified.clear()


__all__ = [
    "artifact_checksums",
    "clear_cache",
    "export_checksums",
    "listing_digest",
    "path_digest",
    "verified_path",
    "verify_artifact",
    "verify_entry",
    "verify_sha256",
]
