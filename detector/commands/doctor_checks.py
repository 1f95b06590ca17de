"""The checks of ``citywatch doctor``: each looks at one thing a running citywatch needs and returns
findings (OK, WARN or FAIL, with what to fix). Everything that reaches outside the process (the broker,
HTTP, the database, the file system, PyAV) goes through :class:`Probes`, so the tests give fakes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detector.config import CitywatchConfig, ModelConfig
from detector.contracts.artifacts import verify_artifact
from detector.contracts.errors import DetectorError
from detector.contracts.manifest import load_manifest, resolve_path

Status = Literal["OK", "WARN", "FAIL"]

#: packages the detector and the API import at run time: (distribution, what it is for)
PACKAGES = (
    ("citywatch", "this installation"),
    ("av", "decoding camera streams (PyAV, FFmpeg inside)"),
    ("paho-mqtt", "the MQTT client"),
    ("pydantic", "the configuration"),
    ("numpy", "frames"),
    ("opencv-python-headless", "evidence images"),
)
#: backend name in the manifest / streams.yaml -> the module it needs
BACKEND_MODULES = {"openvino": "openvino", "onnx": "onnxruntime", "ultralytics": "ultralytics"}
#: decoders every camera fleet needs
CODECS = ("h264", "hevc")
DISK_FAIL_BYTES = 1024**3
DISK_WARN_BYTES = 10 * 1024**3


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""


# -- the outside world ----------------------------------------------------------------------------


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def module_imports(module: str) -> str | None:
    """None when ``module`` imports, else why not."""
    try:
        __import__(module)
    except Exception as exc:  # an ImportError, or a broken native library under it
        return f"{type(exc).__name__}: {exc}"
    return None


def mqtt_login(cfg: CitywatchConfig, timeout: float = 5.0) -> str | None:
    """Connect with the configured credentials; None when the broker accepts, else why not."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = cfg.mqtt
    result: list[str | None] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.worker_id}-doctor")
    if m.username is not None:
        client.username_pw_set(m.username, m.password.get_secret_value() if m.password else None)
    if m.tls:
        client.tls_set(
            ca_certs=str(m.ca_file) if m.ca_file else None,
            certfile=str(m.cert_file) if m.cert_file else None,
            keyfile=str(m.key_file) if m.key_file else None,
        )

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object = None) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        result.append(f"the broker refused the login: {reason}" if failed else None)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=10)
    except (OSError, ValueError) as exc:
        return f"cannot connect to {m.host}:{m.port}: {exc}"
    client.loop_start()
    try:
        if not done.wait(timeout):
            return f"{m.host}:{m.port} accepted TCP but sent no CONNACK within {timeout:.0f} s"
        return result[0]
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered (the body then says why)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(4096).decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        return 0, str(getattr(exc, "reason", exc))


def db_ping(url: str) -> str | None:
    """None when ``SELECT 1`` works on the database at ``url``, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    args = {"connect_timeout": 3} if url.startswith("postgresql") else {}
    try:
        engine = create_engine(url, connect_args=args)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except (SQLAlchemyError, ImportError) as exc:
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()


def writable(path: Path) -> str | None:
    """None when a file can be created in ``path`` (or ``path`` can be created), else why not."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"no part of {path} exists"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if probe != path:
        return (
            None if os.access(probe, os.W_OK | os.X_OK) else f"{probe} is not writable (cannot create {path})"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            return None
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"


def disk_free(path: Path) -> int:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def decoders() -> set[str]:
    """Names of the video decoders PyAV's FFmpeg has."""
    import av

    return {name for name in CODECS if _has_decoder(av, name)}


def _has_decoder(av: Any, name: str) -> bool:
    try:
        av.Codec(name, "r")
    except Exception:
        return False
    return True


def open_stream(url: str, timeout: float = 5.0) -> str | None:
    """None when PyAV opens ``url`` and finds a video stream in it, else why not."""
    import av

    options = {"rtsp_transport": "tcp"} if url.startswith("rtsp") else {}
    try:
        with av.open(url, options=options, timeout=timeout) as container:
            if not container.streams.video:
                return "no video stream in it"
    except Exception as exc:  # av.error.*, OSError: the reason is the message
        return f"{type(exc).__name__}: {exc}"
    return None


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def verify_model(m: ModelConfig, base: Path) -> tuple[str, str]:
    """(what was verified, its backend); raises DetectorError with the reason."""
    if m.path is not None:
        path = m.path if m.path.is_absolute() else base / m.path
        if not path.exists():
            raise DetectorError(f"{path} does not exist")
        backend = m.backend or {".onnx": "onnx", ".pt": "ultralytics"}.get(path.suffix, "openvino")
        return str(path), backend
    entry = load_manifest().get(m.name)
    backend = m.backend or entry.backend
    path = resolve_path(entry, backend)
    verify_artifact(entry, path)
    return f"{entry.ref} ({path.name}, sha256 verified)", backend


@dataclass
class Probes:
    """What the checks use of the world; the tests replace fields with fakes."""

    package_version: Callable[[str], str | None] = package_version
    module_imports: Callable[[str], str | None] = module_imports
    mqtt_login: Callable[[CitywatchConfig], str | None] = mqtt_login
    http_get: Callable[[str], tuple[int, str]] = http_get
    db_ping: Callable[[str], str | None] = db_ping
    writable: Callable[[Path], str | None] = writable
    disk_free: Callable[[Path], int] = disk_free
    decoders: Callable[[], set[str]] = decoders
    open_stream: Callable[[str], str | None] = open_stream
    port_free: Callable[[str, int], bool] = port_free
    verify_model: Callable[[ModelConfig, Path], tuple[str, str]] = verify_model
    python_version: tuple[int, int] = field(default_factory=lambda: sys.version_info[:2])
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
