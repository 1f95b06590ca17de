"""``citywatch models promote`` through the gate, ``citywatch models rollback``, and the manifest history.

The gate (:mod:`training.gate`) compares the candidate with the current default on

1. the holdout: overall mAP50 and AP50 per class (and per view where both recorded the view). The
   manifest's recorded metrics are used when both were measured on the same holdout; otherwise (or with
   ``--data``) both models' artefacts (the backend and precision the manifest runs them on) are evaluated
   on the dataset's holdout split: ``--data``, by default the dataset the candidate was measured on. When
   neither is possible the promotion is refused with how to measure;
2. optionally the real-footage regression suite (``--suite EXPECTATIONS.yaml``): ``citywatch eval-clips``
   runs once as if each model were the default (a scratch models folder of links with its own manifest);
   the candidate may not fail more clips nor open more false or miss more cases.

A refusal lists each failed figure and exits 1; ``--force --by NAME [--reason TEXT]`` promotes anyway and
records the overridden figures in ``history``. The gate runs before the manifest is locked; the change is
then made under the lock only if the default is still the one the gate compared with.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from detector.contracts.artifacts import verified_path
from detector.contracts.history import GateFigure, HistoryRecord
from detector.contracts.manifest import (
    MANIFEST_NAME,
    REPO_ROOT,
    Backend,
    Manifest,
    ManifestError,
    ModelEntry,
    Precision,
    load_manifest,
    models_dir,
)
from training import gate
from training.errors import RegistryError
from training.registry import LOCK_NAME, editing_manifest

#: (entry, dataset yaml, split or None) -> (mAP50, AP50 per class, split evaluated, images)
Evaluator = Callable[[ModelEntry, Path, str | None], tuple[float, dict[str, float], str, int]]
#: (manifest folder, ref made the default, EXPECTATIONS.yaml) -> the `citywatch eval-clips --json` report
SuiteRunner = Callable[[Path, str, Path], dict[str, Any]]


class PromotionRefused(RegistryError):
    """The gate refused the candidate (or could not measure it); ``result`` holds the figures."""

    def __init__(self, message: str, result: GateResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class GateResult:
    """What the gate compared and found."""

    candidate: str
    current: str | None
    tolerance: float
    source: str  # recorded | evaluated | same model | no default | not measured
    holdout: str | None = None
    compared: dict[str, dict[str, float | None]] = field(default_factory=dict)
    suite: dict[str, Any] | None = None
    failures: list[gate.GateFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    howto: str | None = None  # how to measure the holdout, when it could not be

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "current": self.current,
            "tolerance": self.tolerance,
            "source": self.source,
            "holdout": self.holdout,
            "compared": self.compared,
            "suite": self.suite,
            "failures": [f.as_dict() for f in self.failures],
            "notes": self.notes,
            "howto": self.howto,
            "passed": self.passed,
        }

    def format_text(self) -> str:
        head = f"gate: {self.candidate} against the current default {self.current or '(none)'}"
        lines = [head + (f" on {self.holdout}" if self.holdout else "") + f" ({self.source})"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.failures:
            lines.append(f"  {len(self.failures)} figure(s) failed:")
            lines += [f"    {f.describe()}" for f in self.failures]
        else:
            lines.append(f"  passed ({len(self.compared)} figures compared, tolerance {self.tolerance:.3f})")
        return "\n".join(lines)


# ------------------------------------------------------------------ measuring


def evaluate_entry(
    entry: ModelEntry, data: Path, split: str | None
) -> tuple[float, dict[str, float], str, int]:
    """Evaluate the artefact the detector runs for ``entry`` (its backend and precision) on ``data``."""
    from training.dataset import load_dataset
    from training.evaluate import evaluate
    from training.runtime import stdout_to_stderr

    path, _ = verified_path(entry)
    spec = load_dataset(data)
    chosen = split or spec.eval_split()
    with stdout_to_stderr():
        result = evaluate(path, spec, chosen, imgsz=entry.imgsz)
    return result.map50, result.per_class, result.split, result.images


def linked_models_dir(folder: Path, dest: Path, default: str) -> Path:
    """``dest`` holding a link to every file of ``folder`` and a manifest whose default is ``default``."""
    for item in folder.iterdir():
        if item.name not in (MANIFEST_NAME, LOCK_NAME):
            (dest / item.name).symlink_to(item.resolve())
    data = yaml.safe_load((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["default"] = default
    (dest / MANIFEST_NAME).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    return dest


def run_suite(folder: Path, ref: str, suite: Path) -> dict[str, Any]:
    """``citywatch eval-clips SUITE --json`` with ``ref`` as the manifest default (a child process: the
    detector's runtime is not imported into training)."""
    with tempfile.TemporaryDirectory(prefix="citywatch-gate-") as tmp:
        linked = linked_models_dir(folder, Path(tmp), ref)
        env = {**os.environ, "CITYWATCH_MODELS_DIR": str(linked)}
        cmd = [sys.executable, "-m", "detector.commands.cli", "eval-clips", str(suite), "--json", "--quiet"]
        print(f"gate: running the suite {suite} with {ref} as the default", file=sys.stderr)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise RegistryError(
            f"the suite {suite} could not run with {ref} (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise RegistryError(f"the suite {suite} printed no JSON report with {ref}: {err}") from err
    return doc


def _data_path(value: str | Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def _measure(
    res: GateResult, current: ModelEntry, candidate: ModelEntry, data: Path | None, split: str | None,
    evaluator: Evaluator,
) -> None:  # fmt: skip
    """Fill ``res.compared`` / ``res.failures`` from the holdout figures."""
    why = gate.holdout_mismatch(current, candidate)
    if data is None and why is None and current.metrics is not None and candidate.metrics is not None:
        a, b = current.metrics, candidate.metrics
        av, bv = a.per_view or {}, b.per_view or {}
        views = [v for v in av if v in bv and av[v].split == bv[v].split]  # views both measured
        cur = gate.figures(a.map50, a.per_class, {v: av[v] for v in views})
        cand = gate.figures(b.map50, b.per_class, {v: bv[v] for v in views})
        res.source = "recorded"
        res.holdout = f"split {a.split} of {gate.eval_data(candidate) or '?'}, {a.images} images"
    else:
        chosen = data if data is not None else gate.eval_data(candidate)
        path = _data_path(chosen) if chosen is not None else None
        if path is None or not path.is_file():
            res.source = "not measured"
            where = f"{chosen} is not here" if chosen is not None else "no dataset is recorded for it"
            unmeasured = f"{why or 'a dataset was asked for'}, and {where}"
            res.howto = (
                f"cannot compare {candidate.ref} with {current.ref}: {unmeasured}. Measure both on one "
                f"holdout: `citywatch models promote {candidate.ref} --data DATASET_YAML` evaluates both on "
                "its test split (e.g. `make dataset` renders datasets/synth-v2), or check them yourself with "
                f"`citywatch eval {current.ref} --data DATASET_YAML` and `citywatch eval {candidate.ref} "
                "--data DATASET_YAML`, then promote with --force --by NAME --reason TEXT"
            )
            res.failures.append(
                gate.GateFailure(
                    "holdout metrics", None, None, None, res.tolerance, f"not measured: {unmeasured}"
                )
            )
            return
        cur_map, cur_pc, used, images = evaluator(current, path, split)
        cand_map, cand_pc, _, _ = evaluator(candidate, path, split)
        cur, cand = gate.figures(cur_map, cur_pc), gate.figures(cand_map, cand_pc)
        res.source = "evaluated"
        res.holdout = f"split {used} of {chosen}, {images} images"
        if why is not None and data is None:
            res.notes.append(f"recorded metrics not comparable: {why}")
    res.compared = {k: {"current": v, "candidate": cand.get(k)} for k, v in cur.items()}
    res.failures += gate.compare_figures(cur, cand, res.tolerance)


def run_gate(
    manifest: Manifest,
    ref: str,
    *,
    tolerance: float = 0.02,
    data: Path | None = None,
    split: str | None = None,
    suite: Path | None = None,
    candidate: ModelEntry | None = None,
    evaluator: Evaluator = evaluate_entry,
    suite_runner: SuiteRunner = run_suite,
) -> GateResult:
    """Compare ``ref`` (or ``candidate``, the entry as it would be promoted) with the current default."""
    cand = candidate or manifest.get(ref)
    current = manifest.get(None) if manifest.default is not None else None
    res = GateResult(cand.ref, current.ref if current else None, tolerance, "no default")
    if current is None:
        res.notes.append("no current default: nothing to compare with")
        return res
    if current.ref == cand.ref:
        res.source = "same model"
        res.notes.append(
            "the candidate is the current default model (only its backend / precision may change)"
        )
        return res
    _measure(res, current, cand, data, split, evaluator)
    if suite is not None:
        folder = cand.models_dir
        cur_doc, cand_doc = suite_runner(folder, current.ref, suite), suite_runner(folder, cand.ref, suite)
        res.suite = {
            "expectations": str(suite),
            "current": cur_doc.get("totals", {}),
            "candidate": cand_doc.get("totals", {}),
            "newly_failing_clips": gate.suite_clips(cur_doc, cand_doc),
        }
        res.failures += gate.compare_suite(cur_doc, cand_doc)
        if res.suite["newly_failing_clips"]:
            res.notes.append(
                "clips that fail only with the candidate: " + ", ".join(res.suite["newly_failing_clips"])
            )
    return res


# ------------------------------------------------------------------ changing the default


def who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def promote(
    ref: str,
    *,
    backend: Backend | None = None,
    precision: Precision | None = None,
    tolerance: float = 0.02,
    data: Path | None = None,
    split: str | None = None,
    suite: Path | None = None,
    force: bool = False,
    by: str | None = None,
    reason: str | None = None,
    folder: Path | None = None,
    evaluator: Evaluator = evaluate_entry,
    suite_runner: SuiteRunner = run_suite,
) -> tuple[GateResult, HistoryRecord]:
    """Run the gate, then make ``ref`` the default and record it; raises :class:`PromotionRefused`."""
    if force and not by:
        raise RegistryError("--force needs --by NAME: the history records who overrode the gate")
    folder = folder or models_dir()
    manifest = load_manifest(folder)
    candidate = manifest.get(ref).model_copy()
    candidate.backend = backend or candidate.backend
    candidate.precision = precision or candidate.precision
    result = run_gate(
        manifest, ref, tolerance=tolerance, data=data, split=split, suite=suite, candidate=candidate,
        evaluator=evaluator, suite_runner=suite_runner,
    )  # fmt: skip
    if not result.passed and not force:
        howto = f"\n{result.howto}" if result.howto else ""
        raise PromotionRefused(f"not promoting {candidate.ref}:\n{result.format_text()}{howto}", result)
    with editing_manifest(folder) as m:
        current = m.get(None).ref if m.default is not None else None
        if current != result.current:
            raise RegistryError(
                f"the default changed from {result.current} to {current} while the gate ran; "
                "run the promotion again"
            )
        entry = m.get(ref)
        entry.backend, entry.precision = candidate.backend, candidate.precision
        try:
            verified_path(entry)  # the artifact the detector will load must exist and match its sha256
        except ManifestError as err:
            raise RegistryError(f"not promoting {entry.ref}: {err}") from err
        m.default = ref
        record = HistoryRecord.model_validate(
            {"at": datetime.now(UTC), "by": who(by), "action": "promote", "from": current, "to": entry.ref,
             "default": ref, "forced": not result.passed,
             "failures": [GateFigure(**f.as_dict()) for f in result.failures], "reason": reason}
        )  # fmt: skip
        m.history.append(record)
    return result, record


def rollback_target(history: list[HistoryRecord]) -> HistoryRecord | None:
    """The last promotion no later rollback has undone (each rollback undoes one promotion, newest first;
    promotions that kept the model and changed only its backend are not undone)."""
    undone = 0
    for rec in reversed(history):
        if rec.action == "rollback":
            undone += 1
        elif rec.from_ is not None and rec.from_ != rec.to:
            if undone == 0:
                return rec
            undone -= 1
    return None


def rollback(
    *, by: str | None = None, reason: str | None = None, folder: Path | None = None
) -> HistoryRecord:
    """Return the default to the model the last promotion replaced; its artefact is checked first."""
    folder = folder or models_dir()
    with editing_manifest(folder) as m:
        undo = rollback_target(m.history)
        if undo is None or undo.from_ is None:
            raise RegistryError(
                f"nothing to roll back in {folder / MANIFEST_NAME}: its history has no promotion left to "
                "undo; promote the model you want with `citywatch models promote NAME@VERSION`"
            )
        entry = m.find(undo.from_)
        if entry is None:
            raise RegistryError(f"cannot roll back to {undo.from_}: it is no longer in the manifest")
        try:
            verified_path(entry)
        except ManifestError as err:
            raise RegistryError(f"not rolling back to {entry.ref}: {err}") from err
        current = m.get(None).ref if m.default is not None else None
        m.default = entry.ref  # pinned: exactly the model that ran before
        why = reason or f"undo the promotion of {undo.to} ({undo.at:%Y-%m-%d %H:%M}Z)"
        record = HistoryRecord.model_validate(
            {"at": datetime.now(UTC), "by": who(by), "action": "rollback", "from": current, "to": entry.ref,
             "default": entry.ref, "reason": why}
        )  # fmt: skip
        m.history.append(record)
    return record
