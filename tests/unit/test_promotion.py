"""``citywatch models promote`` through the gate, ``models rollback`` and the manifest ``history``, on a
models folder in tmp_path (real manifest, real sha256 checks; no model is run: the evaluator and the
suite runner are stand-ins where a test needs them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from detector.contracts import artifacts
from detector.contracts.artifacts import verified_path
from detector.contracts.manifest import REPO_ROOT, ManifestError, load_manifest, save_manifest
from training import promotion
from training.cli import main
from training.errors import RegistryError

HOLDOUT = "d" * 64
#: version -> AP50 of (vehicle, litter) on the one holdout
SCORES = {"1.0.0": (0.90, 0.80), "1.1.0": (0.92, 0.81), "1.2.0": (0.99, 0.70)}  # 1.2.0: litter worse


def entry(version: str, **over: Any) -> dict[str, Any]:
    vehicle, litter = SCORES[version]
    weights = f"weights {version}".encode()
    return {
        "name": "m", "version": version, "file": f"m-{version}.pt", "imgsz": 64,
        "classes": ["vehicle", "litter"], "rule_labels": {"vehicle": "vehicle", "litter": "litter"},
        "backend": "ultralytics",
        "metrics": {"map50": round((vehicle + litter) / 2, 5),
                    "per_class": {"vehicle": vehicle, "litter": litter}, "split": "test", "images": 40,
                    "data": "datasets/d/dataset.yaml", "data_hash": HOLDOUT},
        "sha256": hashlib.sha256(weights).hexdigest(), "card": f"m-{version}.md",
        "created": "2026-12-01T00:00:00+00:00", **over,
    }  # fmt: skip


def write_folder(folder: Path, default: str = "m@1.0.0", history: list[Any] | None = None) -> Path:
    for version in SCORES:
        (folder / f"m-{version}.pt").write_bytes(f"weights {version}".encode())
        (folder / f"m-{version}.md").write_text(f"# m {version}\n")
    data: dict[str, Any] = {"default": default, "models": [entry(v) for v in SCORES]}
    if history is not None:
        data["history"] = history
    (folder / "manifest.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    artifacts.clear_cache()
    monkeypatch.setenv("CITYWATCH_MODELS_DIR", str(tmp_path))
    return write_folder(tmp_path)


def test_the_shipped_manifest_without_history_loads_and_is_saved_unchanged(tmp_path: Path) -> None:
    shipped = REPO_ROOT / "models" / "manifest.yaml"
    manifest = load_manifest(shipped)
    assert manifest.history == [] and "history" not in yaml.safe_load(shipped.read_text())
    save_manifest(manifest, tmp_path / "manifest.yaml")
    assert (tmp_path / "manifest.yaml").read_text() == shipped.read_text()


def test_a_history_record_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    bad = [
        {"at": "2026-12-01T00:00:00Z", "by": "a", "action": "promote", "from": None, "to": "m@1.0.0", "x": 1}
    ]
    write_folder(tmp_path, history=bad)
    with pytest.raises(ManifestError, match=r"history\.0\.x: unknown key 'x'"):
        load_manifest(tmp_path)


def test_promote_better_then_rollback_records_both(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "promote", "m@1.1.0", "--by", "alice", "--reason", "more vehicles"]) == 0
    out = capsys.readouterr().out
    assert "gate: m@1.1.0 against the current default m@1.0.0 on split test" in out and "(recorded)" in out
    assert "default model is now m@1.1.0" in out
    manifest = load_manifest(folder)
    assert manifest.default == "m@1.1.0"
    first = manifest.history[-1]
    assert (first.action, first.by, first.from_, first.to, first.forced, first.failures, first.reason) == (
        "promote", "alice", "m@1.0.0", "m@1.1.0", False, [], "more vehicles",
    )  # fmt: skip
    raw = yaml.safe_load((folder / "manifest.yaml").read_text())["history"][0]
    assert raw["from"] == "m@1.0.0" and "from_" not in raw  # the documented key

    assert main(["models", "rollback", "--by", "bob"]) == 0
    assert "default model is now m@1.0.0 (rolled back from m@1.1.0" in capsys.readouterr().out
    manifest = load_manifest(folder)
    assert manifest.default == "m@1.0.0"
    last = manifest.history[-1]
    assert (last.action, last.by, last.from_, last.to) == ("rollback", "bob", "m@1.1.0", "m@1.0.0")
    assert main(["models", "rollback"]) == 1  # the one promotion is undone: nothing left
    assert "nothing to roll back" in capsys.readouterr().err

    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "promote  m@1.0.0 -> m@1.1.0 by alice: more vehicles" in listing
    assert "rollback m@1.1.0 -> m@1.0.0 by bob" in listing
    assert main(["models", "show", "m@1.1.0"]) == 0
    assert "## Promotions and rollbacks" in capsys.readouterr().out


def test_a_worse_candidate_is_refused_with_each_failed_figure(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (folder / "manifest.yaml").read_text()
    assert main(["models", "promote", "m@1.2.0"]) == 1
    err = capsys.readouterr().err
    assert "refused: not promoting m@1.2.0" in err
    assert "AP50 litter: current 0.800, candidate 0.700, drop 0.100 > tolerance 0.020" in err
    assert "1 figure(s) failed" in err  # mAP50 0.85 -> 0.845 is within the tolerance
    assert (folder / "manifest.yaml").read_text() == before  # nothing changed, no history

    assert main(["models", "promote", "m@1.2.0", "--json", "--tolerance", "0.2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["promoted"] and doc["source"] == "recorded" and doc["failures"] == []


def test_force_needs_by_and_records_the_overridden_figures(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "promote", "m@1.2.0", "--force"]) == 1
    assert "--force needs --by NAME" in capsys.readouterr().err
    assert main(["models", "promote", "m@1.2.0", "--json"]) == 1
    refused = json.loads(capsys.readouterr().out)
    assert refused["promoted"] is False
    assert refused["failures"] == [
        {
            "figure": "AP50 litter",
            "current": 0.8,
            "candidate": 0.7,
            "drop": 0.1,
            "tolerance": 0.02,
            "note": None,
        }
    ]
    argv = ["models", "promote", "m@1.2.0", "--force", "--by", "carol", "--reason", "litter relabelled"]
    assert main(argv) == 0
    assert "FORCED past the gate" in capsys.readouterr().out
    rec = load_manifest(folder).history[-1]
    assert rec.forced and rec.by == "carol" and rec.reason == "litter relabelled"
    assert [(f.figure, f.current, f.candidate, f.drop, f.tolerance) for f in rec.failures] == [
        ("AP50 litter", 0.8, 0.7, 0.1, 0.02)
    ]
    assert main(["models", "list"]) == 0
    assert "by carol FORCED past AP50 litter: litter relabelled" in capsys.readouterr().out


def test_different_holdouts_are_evaluated_on_the_data_or_refused_with_how(
    folder: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(folder)
    manifest.models[1].metrics.data_hash = "e" * 64  # type: ignore[union-attr]
    save_manifest(manifest)
    with pytest.raises(promotion.PromotionRefused) as err:
        promotion.promote("m@1.1.0", by="x")
    text = str(err.value)
    assert "cannot compare m@1.1.0 with m@1.0.0: different holdout labels" in text
    assert "datasets/d/dataset.yaml is not here" in text
    assert "`citywatch models promote m@1.1.0 --data DATASET_YAML`" in text

    data = tmp_path / "holdout.yaml"
    data.write_text("names: [vehicle, litter]\n")
    seen: list[tuple[str, Path, str | None]] = []

    def evaluator(e: Any, path: Path, split: str | None) -> tuple[float, dict[str, float], str, int]:
        seen.append((e.ref, path, split))
        pc = {"vehicle": 0.9, "litter": 0.8 if e.version == "1.0.0" else 0.75}
        return sum(pc.values()) / 2, pc, "test", 12

    with pytest.raises(promotion.PromotionRefused, match=r"AP50 litter: current 0\.800, candidate 0\.750"):
        promotion.promote("m@1.1.0", data=data, evaluator=evaluator)
    assert seen == [("m@1.0.0", data, None), ("m@1.1.0", data, None)]
    result, _ = promotion.promote("m@1.1.0", data=data, tolerance=0.1, evaluator=evaluator, by="x")
    assert result.source == "evaluated" and result.holdout == f"split test of {data}, 12 images"


def test_the_suite_may_not_gain_failures(folder: Path) -> None:
    reports = {
        "m@1.0.0": {"totals": {"failed_clips": 1, "false_cases": 1, "missed_cases": 0},
                    "clips": [{"name": "street", "passed": True}, {"name": "dusk", "passed": False}]},
        "m@1.1.0": {"totals": {"failed_clips": 2, "false_cases": 2, "missed_cases": 0},
                    "clips": [{"name": "street", "passed": False}, {"name": "dusk", "passed": False}]},
    }  # fmt: skip
    calls: list[tuple[Path, str, Path]] = []

    def runner(models: Path, ref: str, suite: Path) -> dict[str, Any]:
        calls.append((models, ref, suite))
        return reports[ref]

    suite = Path("tests/realworld/EXPECTATIONS.yaml")
    with pytest.raises(promotion.PromotionRefused) as err:
        promotion.promote("m@1.1.0", suite=suite, suite_runner=runner)
    assert calls == [(folder, "m@1.0.0", suite), (folder, "m@1.1.0", suite)]
    assert [f.figure for f in err.value.result.failures] == [
        "eval-clips failed clips",
        "eval-clips false cases",
    ]
    assert "clips that fail only with the candidate: street" in str(err.value)
    reports["m@1.1.0"] = reports["m@1.0.0"]
    result, _ = promotion.promote("m@1.1.0", suite=suite, suite_runner=runner)
    assert result.passed and result.suite is not None and result.suite["newly_failing_clips"] == []


def test_rollback_checks_the_sha256_of_what_it_returns_to(folder: Path) -> None:
    promotion.promote("m@1.1.0", by="alice")
    (folder / "m-1.0.0.pt").write_bytes(b"tampered")
    before = (folder / "manifest.yaml").read_text()
    with pytest.raises(RegistryError, match=r"(?s)not rolling back to m@1\.0\.0: .*m-1\.0\.0\.pt: sha256"):
        promotion.rollback(by="bob")
    assert (folder / "manifest.yaml").read_text() == before


def test_promote_refuses_a_changed_artefact_and_a_default_changed_meanwhile(folder: Path) -> None:
    (folder / "m-1.1.0.pt").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match=r"(?s)not promoting m@1\.1\.0: .*m-1\.1\.0\.pt: sha256"):
        promotion.promote("m@1.1.0")

    def evaluator_that_promotes_meanwhile(e: Any, path: Path, split: str | None) -> Any:
        if e.version == "1.0.0":
            promotion.promote("m@1.2.0", tolerance=1.0)
        return 0.9, {"vehicle": 0.9, "litter": 0.9}, "test", 3

    data = folder / "holdout.yaml"
    data.write_text("names: [vehicle, litter]\n")
    artifacts.clear_cache()
    (folder / "m-1.1.0.pt").write_bytes(b"weights 1.1.0")
    with pytest.raises(
        RegistryError, match=r"the default changed from m@1\.0\.0 to m@1\.2\.0 while the gate ran"
    ):
        promotion.promote("m@1.1.0", data=data, evaluator=evaluator_that_promotes_meanwhile)


def test_the_suite_runs_with_each_model_as_the_default_of_a_linked_folder(
    folder: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "linked"
    dest.mkdir()
    promotion.linked_models_dir(folder, dest, "m@1.2.0")
    linked = load_manifest(dest)
    assert linked.default == "m@1.2.0" and (dest / "m-1.2.0.pt").is_symlink()
    path, digest = verified_path(linked.get(None))  # the links pass the sha256 check
    assert path == dest / "m-1.2.0.pt" and digest == linked.get(None).sha256
    assert load_manifest(folder).default == "m@1.0.0"  # the real manifest is untouched
