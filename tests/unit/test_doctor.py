"""``citywatch doctor``: each check's OK / WARN / FAIL with fake probes, the exit code and --json, and the
real probes that need nothing outside this process (directories, ports, decoders, files)."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from detector.commands import doctor
from detector.commands.doctor_checks import Finding, Probes, open_stream, port_free, writable
from detector.config import CitywatchConfig, ModelConfig
from detector.config.loader import load_config_text
from detector.contracts.errors import DetectorError

CLIP = Path(__file__).resolve().parents[2] / "training" / "synth" / "scenarios" / "street-demo.mp4"
BASE_YAML = "version: 1\nmetrics: {port: 9464}\nstreams:\n- id: cam-1\n  url: clip.mp4\n"


def cfg(extra: str = "") -> CitywatchConfig:
    return load_config_text(BASE_YAML + extra).config


def fake_probes(**over: Any) -> Probes:
    """Every probe answers "fine" unless a test says otherwise."""
    base = Probes(
        package_version=lambda dist: "1.0",
        module_imports=lambda module: None,
        mqtt_login=lambda c: None,
        http_get=lambda url: (200, "{}"),
        db_ping=lambda url: None,
        writable=lambda path: None,
        disk_free=lambda path: 100 * 1024**3,
        decoders=lambda: {"h264", "hevc"},
        open_stream=lambda url: None,
        port_free=lambda host, port: True,
        verify_model=lambda m, base: ("citywatch-synth@1.2.0 (sha256 verified)", "openvino"),
        python_version=(3, 11),
        environ={},
    )
    return replace(base, **over)


def statuses(found: list[Finding], prefix: str) -> list[str]:
    return [f.status for f in found if f.check.startswith(prefix)]


def _no_decoder() -> set[str]:
    return {"h264"}


def _refuse_model(m: ModelConfig, base: Path) -> tuple[str, str]:
    raise DetectorError("citywatch-synth@1.2.0: refusing it: it does not match the manifest\n  restore it")


CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    # (id, check, probe overrides, finding prefix, expected status)
    ("python ok", "python", {}, "python", "OK"),
    ("python old", "python", {"python_version": (3, 10)}, "python", "FAIL"),
    (
        "package missing",
        "python",
        {"package_version": lambda d: None if d == "av" else "1"},
        "package av",
        "FAIL",
    ),
    ("broker ok", "broker", {}, "broker", "OK"),
    (
        "broker refuses",
        "broker",
        {"mqtt_login": lambda c: "the broker refused the login: bad"},
        "broker",
        "FAIL",
    ),
    ("broker down", "broker", {"mqtt_login": lambda c: "cannot connect: refused"}, "broker", "FAIL"),
    ("api ready", "api", {}, "api", "OK"),
    ("api not ready", "api", {"http_get": lambda u: (503, '{"reasons": ["db"]}')}, "api", "FAIL"),
    ("api down", "api", {"http_get": lambda u: (0, "Connection refused")}, "api", "FAIL"),
    ("db unset", "database", {}, "database", "OK"),
    ("db ok", "database", {"environ": {"CITYWATCH_DATABASE_URL": "sqlite://"}}, "database", "OK"),
    (
        "db down",
        "database",
        {
            "environ": {"CITYWATCH_DATABASE_URL": "postgresql+psycopg://u:pw@db/x"},
            "db_ping": lambda u: "refused",
        },
        "database",
        "FAIL",
    ),
    ("model ok", "models", {}, "model model", "OK"),
    ("model tampered", "models", {"verify_model": _refuse_model}, "model model", "FAIL"),
    (
        "backend used missing",
        "models",
        {"module_imports": lambda m: "No module named openvino"},
        "backend openvino",
        "FAIL",
    ),
    ("backend unused missing", "models", {"module_imports": lambda m: "gone"}, "backend onnx", "WARN"),
    ("dirs ok", "disk", {}, "dir", "OK"),
    ("dir not writable", "disk", {"writable": lambda p: f"{p}: Permission denied"}, "dir outbox", "FAIL"),
    ("disk low", "disk", {"disk_free": lambda p: 5 * 1024**3}, "disk", "WARN"),
    ("disk full", "disk", {"disk_free": lambda p: 100 * 1024**2}, "disk", "FAIL"),
    ("decoders ok", "decode", {}, "decode", "OK"),
    ("no hevc", "decode", {"decoders": _no_decoder}, "decode", "FAIL"),
    ("file stream missing", "decode", {"open_stream": lambda u: "No such file"}, "stream cam-1", "FAIL"),
    ("metrics port free", "metrics", {}, "metrics", "OK"),
    ("metrics port: our detector", "metrics", {"port_free": lambda h, p: False}, "metrics", "OK"),
    (
        "metrics port taken",
        "metrics",
        {"port_free": lambda h, p: False, "http_get": lambda u: (0, "refused")},
        "metrics",
        "FAIL",
    ),
]


@pytest.mark.parametrize(
    ("check", "over", "prefix", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_check(check: str, over: dict[str, Any], prefix: str, expected: str, tmp_path: Path) -> None:
    probes = fake_probes(**over)
    config = cfg()
    found = {
        "python": lambda: doctor.check_python(probes),
        "broker": lambda: doctor.check_broker(config, probes),
        "api": lambda: doctor.check_api(config, probes),
        "database": lambda: doctor.check_database(config, probes),
        "models": lambda: doctor.check_models(config, tmp_path, probes),
        "disk": lambda: doctor.check_disk(config, tmp_path, probes),
        "decode": lambda: doctor.check_decode(config, tmp_path, probes),
        "metrics": lambda: doctor.check_metrics_port(config, probes),
    }[check]()
    got = statuses(found, prefix)
    assert got, f"no finding for {prefix}: {found}"
    assert expected in got if expected != "OK" else set(got) == {"OK"}, found
    for f in found:
        if f.status != "OK":
            assert f.fix, f"{f.check} says what is wrong but not what to fix"


def test_network_stream_that_does_not_open_is_a_warning(tmp_path: Path) -> None:
    config = load_config_text("version: 1\nstreams:\n- id: cam-1\n  url: rtsp://cam.example/main\n").config
    found = doctor.check_decode(config, tmp_path, fake_probes(open_stream=lambda u: "timed out"))
    assert statuses(found, "stream cam-1") == ["WARN"]


def test_metrics_off_is_not_checked() -> None:
    found = doctor.check_metrics_port(
        cfg().model_copy(update={"metrics": cfg().metrics.model_copy(update={"port": 0})}),
        fake_probes(port_free=lambda h, p: False),
    )
    assert [f.status for f in found] == ["OK"]


def test_run_checks_exit_code_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "streams.yaml"
    good.write_text("version: 1\nstreams: []\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nstreams:\n- id: cam 1\n  url: x.mp4\n  typo_key: 1\n")
    found = doctor.run_checks(good, fake_probes())
    assert {f.status for f in found} == {"OK"}, found
    found = doctor.run_checks(bad, fake_probes())
    assert statuses(found, "config") == ["FAIL"] and statuses(found, "the rest") == ["WARN"]

    monkeypatch.setattr(doctor, "Probes", lambda: fake_probes(mqtt_login=lambda c: "cannot connect: refused"))
    assert doctor.main(["--config", str(good), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and any(
        f["check"] == "broker" and f["status"] == "FAIL" for f in out["findings"]
    )
    monkeypatch.setattr(doctor, "Probes", fake_probes)
    assert doctor.main(["--config", str(good)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("0 FAIL, 0 WARN: ready")


def test_real_probes_dirs_ports_files(tmp_path: Path) -> None:
    assert writable(tmp_path) is None
    assert writable(tmp_path / "new" / "deeper") is None  # created later by the detector
    (tmp_path / "file").write_text("x")
    assert writable(tmp_path / "file" / "sub") is not None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_free("127.0.0.1", sock.getsockname()[1])
    assert open_stream(str(tmp_path / "missing.mp4")) is not None
    if CLIP.exists():
        assert open_stream(str(CLIP)) is None


def test_real_model_verification_refuses_a_changed_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.commands.doctor_checks import verify_model

    what, backend = verify_model(ModelConfig(name="citywatch-synth", backend="onnx"), tmp_path)
    assert "sha256 verified" in what and backend == "onnx"
    weights = tmp_path / "w.onnx"
    with pytest.raises(DetectorError):
        verify_model(ModelConfig(path=weights), tmp_path)
    weights.write_bytes(b"x")
    assert verify_model(ModelConfig(path=weights), tmp_path)[1] == "onnx"
