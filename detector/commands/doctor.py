"""``citywatch doctor [--config streams.yaml] [--json]``: is this machine ready to run citywatch?

Each check prints ``OK``, ``WARN`` or ``FAIL`` with what it saw and, when not OK, what to fix: Python
and the packages, the config (``config check``), the broker (a login with the configured credentials),
the API (``/readyz`` at ``api.url``), the database (when ``CITYWATCH_DATABASE_URL`` or ``api.database_url``
names one), the models (the manifest loads, each configured model's artefact matches its sha256, its
backend imports), disk space and writable directories, decoding (H.264 / HEVC decoders; each enabled
stream opens), and the metrics port. Exit 0 when nothing FAILs, 1 otherwise (deploy/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from detector.commands.doctor_checks import (
    BACKEND_MODULES,
    CODECS,
    DISK_FAIL_BYTES,
    DISK_WARN_BYTES,
    PACKAGES,
    Finding,
    Probes,
)
from detector.config import CitywatchConfig, ModelConfig
from detector.config.check import run_check
from detector.contracts.errors import DetectorError
from detector.sources.worker import resolve_url

GiB = 1024**3


def check_python(probes: Probes) -> list[Finding]:
    found = [
        Finding("python", "OK", f"Python {probes.python_version[0]}.{probes.python_version[1]}")
        if probes.python_version >= (3, 11)
        else Finding(
            "python",
            "FAIL",
            f"Python {probes.python_version[0]}.{probes.python_version[1]}",
            "citywatch needs Python 3.11 or newer: create the venv with python3.11",
        )
    ]
    for dist, what in PACKAGES:
        version = probes.package_version(dist)
        found.append(
            Finding(f"package {dist}", "OK", version)
            if version
            else Finding(
                f"package {dist}", "FAIL", f"not installed ({what})", "pip install citywatch into this venv"
            )
        )
    return found


def check_config(path: Path) -> tuple[list[Finding], CitywatchConfig | None, Path]:
    result = run_check(path)
    base = path.resolve().parent
    if result.loaded is None:
        problems = "; ".join(line for line in result.lines if "note:" not in line)[:2000]
        return (
            [Finding("config", "FAIL", problems, f"run `citywatch config check {path}` and fix each line")],
            None,
            base,
        )
    return [Finding("config", "OK", result.lines[-1])], result.loaded.config, result.loaded.base_dir


def check_broker(cfg: CitywatchConfig, probes: Probes) -> list[Finding]:
    m = cfg.mqtt
    who = f"{m.username}@" if m.username else ""
    error = probes.mqtt_login(cfg)
    if error is None:
        return [
            Finding("broker", "OK", f"mqtt{'s' if m.tls else ''}://{who}{m.host}:{m.port} accepts the login")
        ]
    fix = (
        "check mqtt.username / the password variable against the broker's password file "
        "(deploy/mosquitto/README.md)"
        if "refused" in error
        else "start the broker (systemctl start mosquitto) or correct mqtt.host / mqtt.port"
    )
    return [Finding("broker", "FAIL", error, fix)]


def check_api(cfg: CitywatchConfig, probes: Probes) -> list[Finding]:
    url = f"{cfg.api.url}/readyz"
    status, body = probes.http_get(url)
    if status == 200:
        return [Finding("api", "OK", f"{url} answers 200")]
    if status == 0:
        return [
            Finding(
                "api",
                "FAIL",
                f"{url}: nothing answers ({body})",
                "start the API (systemctl start citywatch-api) or correct api.url in the config",
            )
        ]
    return [
        Finding(
            "api",
            "FAIL",
            f"{url} answers {status}: {body[:500]}",
            "fix what /readyz names (database, broker)",
        )
    ]


def check_database(cfg: CitywatchConfig | None, probes: Probes) -> list[Finding]:
    url = probes.environ.get("CITYWATCH_DATABASE_URL") or (cfg.api.database_url if cfg else None)
    if not url:
        return [Finding("database", "OK", "not checked: CITYWATCH_DATABASE_URL is not set")]
    shown = url.split("@")[-1] if "@" in url else url
    error = probes.db_ping(url)
    if error is None:
        return [Finding("database", "OK", f"{shown} answers SELECT 1")]
    return [
        Finding(
            "database",
            "FAIL",
            f"{shown}: {error}",
            "start PostgreSQL, create the role and database (deploy/README.md), "
            "or correct CITYWATCH_DATABASE_URL",
        )
    ]


def model_sections(cfg: CitywatchConfig) -> list[tuple[str, ModelConfig]]:
    sections = [("model", cfg.model)] + [(f"rule_models.{r}", m) for r, m in cfg.rule_models.items()]
    for stream in cfg.streams:
        sections += [(f"{stream.id}.rule_models.{r}", m) for r, m in (stream.rule_models or {}).items()]
    seen: set[tuple[str | None, str | None, str | None]] = set()
    unique = []
    for where, m in sections:
        key = (m.name, str(m.path) if m.path else None, m.backend)
        if key not in seen:
            seen.add(key)
            unique.append((where, m))
    return unique


def check_models(cfg: CitywatchConfig, base: Path, probes: Probes) -> list[Finding]:
    found: list[Finding] = []
    backends: set[str] = set()
    for where, m in model_sections(cfg):
        try:
            what, backend = probes.verify_model(m, base)
        except DetectorError as exc:
            found.append(
                Finding(
                    f"model {where}",
                    "FAIL",
                    str(exc).splitlines()[0],
                    " ".join(str(exc).splitlines()[1:])
                    or "check models/manifest.yaml and CITYWATCH_MODELS_DIR (`citywatch models list`)",
                )
            )
            continue
        backends.add(backend)
        found.append(Finding(f"model {where}", "OK", what))
    for backend in sorted(BACKEND_MODULES):
        module = BACKEND_MODULES[backend]
        error = probes.module_imports(module)
        if error is None:
            found.append(Finding(f"backend {backend}", "OK", f"{module} imports"))
        elif backend in backends:
            extra = "pip install 'citywatch[train]'" if backend == "ultralytics" else f"pip install {module}"
            found.append(Finding(f"backend {backend}", "FAIL", f"{module}: {error}", extra))
        elif backend != "ultralytics":  # torch is a training dependency: not having it is normal
            found.append(
                Finding(f"backend {backend}", "WARN", f"{module}: {error}", "not used by this config")
            )
    return found


def _dirs(cfg: CitywatchConfig, base: Path) -> list[tuple[str, Path]]:
    dirs = [("outbox", cfg.outbox.dir), ("evidence", cfg.evidence.dir)]
    if cfg.collect.enabled:
        dirs.append(("collect", cfg.collect.dir))
    return [(name, d if d.is_absolute() else base / d) for name, d in dirs]


def check_disk(cfg: CitywatchConfig, base: Path, probes: Probes) -> list[Finding]:
    found = []
    for name, path in _dirs(cfg, base):
        error = probes.writable(path)
        found.append(
            Finding(f"dir {name}", "OK", f"{path} is writable")
            if error is None
            else Finding(
                f"dir {name}",
                "FAIL",
                error,
                f"create {path} owned by the service user (citywatch), or set "
                f"{name}.dir to a writable place (absolute paths under /var/lib/citywatch)",
            )
        )
    evidence = _dirs(cfg, base)[1][1]
    free = probes.disk_free(evidence)
    detail = f"{free / GiB:.1f} GiB free at {evidence}"
    fix = "free space or move var/ to a larger disk (deploy/README.md: evidence per day)"
    if free < DISK_FAIL_BYTES:
        found.append(Finding("disk", "FAIL", detail, fix))
    elif free < DISK_WARN_BYTES:
        found.append(Finding("disk", "WARN", detail, fix))
    else:
        found.append(Finding("disk", "OK", detail))
    return found


def check_decode(cfg: CitywatchConfig, base: Path, probes: Probes) -> list[Finding]:
    try:
        have = probes.decoders()
    except ImportError as exc:
        return [Finding("decode", "FAIL", f"PyAV does not import: {exc}", "pip install av")]
    missing = [c for c in CODECS if c not in have]
    found = [
        Finding("decode", "OK", f"decoders {', '.join(CODECS)}")
        if not missing
        else Finding(
            "decode",
            "FAIL",
            f"no {', '.join(missing)} decoder in PyAV's FFmpeg",
            "pip install --force-reinstall av",
        )
    ]
    streams = cfg.enabled_streams
    urls = [resolve_url(s.detect_url or s.url, base) for s in streams]
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(urls)))) as pool:
        errors = list(pool.map(probes.open_stream, urls))
    for stream, url, error in zip(streams, urls, errors, strict=True):
        name = f"stream {stream.id}"
        if error is None:
            found.append(Finding(name, "OK", "opens, video found"))
        elif "://" in url:  # a camera may be down now; the detector retries it
            found.append(Finding(name, "WARN", error, "check the camera, the URL and its credentials"))
        else:
            found.append(Finding(name, "FAIL", f"{url}: {error}", "correct the path in the config"))
    return found


def check_metrics_port(cfg: CitywatchConfig, probes: Probes) -> list[Finding]:
    m = cfg.metrics
    if not m.port:
        return [Finding("metrics", "OK", "off (metrics.port: 0)")]
    if probes.port_free(m.host, m.port):
        return [Finding("metrics", "OK", f"{m.host}:{m.port} is free for the detector's metrics server")]
    status, _ = probes.http_get(f"http://{m.host}:{m.port}/healthz")
    if status == 200:
        return [Finding("metrics", "OK", f"{m.host}:{m.port}: a detector runs and answers /healthz")]
    return [
        Finding(
            "metrics",
            "FAIL",
            f"{m.host}:{m.port} is taken by another process",
            "stop that process or set metrics.port to a free port (0 turns the server off)",
        )
    ]


def run_checks(config: Path, probes: Probes) -> list[Finding]:
    found = check_python(probes)
    config_found, cfg, base = check_config(config)
    found += config_found
    if cfg is None:
        found += check_database(None, probes)
        found.append(
            Finding("the rest", "WARN", "not checked: the config does not load", "fix the config first")
        )
        return found
    for check in (check_broker, check_api, check_database, check_metrics_port):
        found += check(cfg, probes)
    for based in (check_models, check_disk, check_decode):
        found += based(cfg, base, probes)
    return found


def render(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.status:<4} {f.check}: {f.detail}")
        if f.fix and f.status != "OK":
            lines.append(f"     fix: {f.fix}")
    fails = sum(f.status == "FAIL" for f in findings)
    warns = sum(f.status == "WARN" for f in findings)
    lines.append(f"{fails} FAIL, {warns} WARN" + ("" if fails else ": ready"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="citywatch doctor", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("streams.yaml"))
    p.add_argument("--json", action="store_true", help="one JSON object: ok, findings")
    a = p.parse_args(argv)
    findings = run_checks(a.config, Probes())
    ok = not any(f.status == "FAIL" for f in findings)
    if a.json:
        print(json.dumps({"ok": ok, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        print(render(findings))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
