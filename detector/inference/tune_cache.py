"""Which export of a model runs fastest on this host: the host key and the per-host tune cache.

Light on purpose (no runtime is imported): the detector reads the cache on every start. The cache is a
JSON file per host, ``var/tune/<host key>.json`` in the repository, or the file ``$CITYWATCH_TUNE_CACHE``.
The host key is a short hash of what decides which export wins: the CPU model, the ISA flags that matter
(AMX, AVX-512 VNNI/BF16, AVX-VNNI, AVX-512F, AVX2), the core count and the OpenVINO and ONNX Runtime
versions. The file also records those in readable form, and the frames/s of every candidate measured.

A cached winner is used only while it still describes the model: same manifest ref and sha256, and the
same set of candidate exports (an export registered later makes the entry stale, so it is measured again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from detector.contracts.errors import DetectorError
from detector.contracts.manifest import REPO_ROOT, ModelEntry

log = logging.getLogger(__name__)

TUNE_CACHE_ENV = "CITYWATCH_TUNE_CACHE"
SCHEMA = "citywatch.tune/1"
#: the ISA flags (as /proc/cpuinfo spells them) that change which export is fastest
ISA_FLAGS = ("amx_bf16", "amx_int8", "avx512_vnni", "avx512_bf16", "avx_vnni", "avx512f", "avx2")
#: export key in the manifest -> (backend, precision); ``pt`` is the .pt file through ultralytics
EXPORT_KINDS: dict[str, tuple[Literal["ultralytics", "onnx", "openvino"], Literal["fp32", "int8"]]] = {
    "onnx": ("onnx", "fp32"),
    "onnx_int8": ("onnx", "int8"),
    "openvino": ("openvino", "fp32"),
    "openvino_int8": ("openvino", "int8"),
    "pt": ("ultralytics", "fp32"),
}


class TuneError(DetectorError):
    """Tuning cannot run (no candidate export, every candidate failed); the message says why."""


@dataclass(frozen=True)
class HostInfo:
    """What decides which export is fastest here."""

    cpu: str
    flags: tuple[str, ...]
    cores: int
    openvino: str | None
    onnxruntime: str | None

    @property
    def key(self) -> str:
        """12 hex digits of sha256 over the fields (flags in ``ISA_FLAGS`` order)."""
        text = json.dumps([self.cpu, list(self.flags), self.cores, self.openvino, self.onnxruntime])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "cpu": self.cpu,
            "flags": list(self.flags),
            "amx": "amx_bf16" in self.flags or "amx_int8" in self.flags,
            "cores": self.cores,
            "openvino": self.openvino,
            "onnxruntime": self.onnxruntime,
        }


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(CPU model name, every flag) from ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    name, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return name, flags


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_info(
    cpuinfo: str | None = None, cores: int | None = None, versions: Mapping[str, str | None] | None = None
) -> HostInfo:
    """This host (or the one the arguments describe, for tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    name, flags = parse_cpuinfo(cpuinfo)
    if not name:
        import platform

        name = platform.processor() or platform.machine() or "unknown CPU"
    if versions is None:
        versions = {"openvino": _version("openvino"), "onnxruntime": _version("onnxruntime")}
    return HostInfo(
        cpu=name,
        flags=tuple(f for f in ISA_FLAGS if f in flags),
        cores=_cores() if cores is None else cores,
        openvino=versions.get("openvino"),
        onnxruntime=versions.get("onnxruntime"),
    )


def cache_path(host: HostInfo, environ: Mapping[str, str] | None = None) -> Path:
    """``$CITYWATCH_TUNE_CACHE`` if set, else ``<repo>/var/tune/<host key>.json``."""
    env = (os.environ if environ is None else environ).get(TUNE_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_ROOT / "var" / "tune" / f"{host.key}.json"


def candidates(entry: ModelEntry) -> list[str]:
    """The export keys to measure: every export the manifest lists whose file exists (the data team
    registered them, which is the accuracy guard); the .pt (``pt``) only when there is no export."""
    found: list[str] = [k for k in ("onnx", "onnx_int8", "openvino", "openvino_int8") if k in entry.exports]
    found = [k for k in found if (entry.models_dir / entry.exports[k]).exists()]
    if not found and (entry.models_dir / entry.file).is_file():
        found = ["pt"]
    return found


@dataclass
class TuneResult:
    """One model's measurement on one host."""

    ref: str
    sha256: str
    winner: str
    candidates: list[str]
    fps: dict[str, dict[str, float]] = field(default_factory=dict)  # export -> {"batch1": fps, "batch8": ...}
    errors: dict[str, str] = field(default_factory=dict)
    batch: int = 8
    frames: dict[str, int] = field(default_factory=dict)  # warmup, timed
    image: str = ""
    mode: str = "cli"
    measured_at: str = ""

    @property
    def backend(self) -> str:
        return EXPORT_KINDS[self.winner][0]

    @property
    def precision(self) -> str:
        return EXPORT_KINDS[self.winner][1]

    def as_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "sha256": self.sha256,
            "winner": self.winner,
            "backend": self.backend,
            "precision": self.precision,
            "candidates": self.candidates,
            "fps": self.fps,
            "errors": self.errors,
            "batch": self.batch,
            "frames": self.frames,
            "image": self.image,
            "mode": self.mode,
            "measured_at": self.measured_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TuneResult:
        winner = str(data["winner"])
        if winner not in EXPORT_KINDS:
            raise ValueError(f"unknown export {winner!r}")
        return cls(
            ref=str(data["ref"]),
            sha256=str(data["sha256"]),
            winner=winner,
            candidates=[str(c) for c in data["candidates"]],
            fps={str(k): {str(b): float(v) for b, v in d.items()} for k, d in dict(data["fps"]).items()},
            errors={str(k): str(v) for k, v in dict(data.get("errors") or {}).items()},
            batch=int(data.get("batch", 8)),
            frames={str(k): int(v) for k, v in dict(data.get("frames") or {}).items()},
            image=str(data.get("image", "")),
            mode=str(data.get("mode", "cli")),
            measured_at=str(data.get("measured_at", "")),
        )


def choose(fps: Mapping[str, Mapping[str, float]], batch: int, order: Sequence[str] = ()) -> str | None:
    """The winner: most frames/s at the configured batch (what the service runs under load), then at
    batch 1, then the earlier in ``order``. None when nothing was measured."""
    if not fps:
        return None
    rank = {k: i for i, k in enumerate(order)}

    def score(key: str) -> tuple[float, float, int]:
        row = fps[key]
        return (row.get(f"batch{batch}", 0.0), row.get("batch1", 0.0), -rank.get(key, len(rank)))

    return max(fps, key=score)


def read_cache(path: Path, host: HostInfo) -> dict[str, TuneResult]:
    """The results in ``path`` measured on ``host``; empty when the file is absent, for another host,
    or unreadable (a warning: it is measured again)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != SCHEMA or data.get("host", {}).get("key") != host.key:
            log.info("tune cache %s is for another host or format; not used", path)
            return {}
        return {ref: TuneResult.from_json(item) for ref, item in dict(data["models"]).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("tune cache %s is unreadable (%s); measuring again", path, err)
        return {}


def lookup(entry: ModelEntry, host: HostInfo, path: Path) -> TuneResult | None:
    """The cached winner for ``entry`` when it is still valid (same sha256 and candidate exports)."""
    result = read_cache(path, host).get(entry.ref)
    if result is None:
        return None
    if result.sha256 != entry.sha256 or sorted(result.candidates) != sorted(candidates(entry)):
        log.info("tune cache %s: %s changed since it was measured; not used", path, entry.ref)
        return None
    return result


def write_cache(path: Path, host: HostInfo, results: Sequence[TuneResult]) -> Path:
    """Add ``results`` to the cache file (atomically), keeping other models' entries for this host."""
    models = {ref: r.as_json() for ref, r in read_cache(path, host).items()}
    models.update({r.ref: r.as_json() for r in results})
    data = {"schema": SCHEMA, "host": host.as_json(), "models": models}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tune-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
