"""The promotion gate: a candidate may not be worse than the current default beyond a tolerance.

Pure functions, no model is run here (``training.promotion`` gathers the figures and applies the verdict):

- :func:`figures` flattens metrics into named figures: ``mAP50``, ``AP50 <class>`` and, when recorded,
  ``<view> mAP50`` / ``<view> AP50 <class>``;
- :func:`compare_figures` lists every figure of the current default the candidate lost more than
  ``tolerance`` of (absolute AP50), or did not measure at all;
- :func:`compare_suite` lists the real-footage regression suite's failure counts (failed clips, false
  cases, missed cases) that the candidate raised above the current default's (tolerance 0);
- :func:`holdout_mismatch` says why two entries' recorded metrics cannot be compared (different holdouts),
  or None when they can.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from detector.contracts.manifest import Metrics, ModelEntry

#: the suite's counts the candidate may not raise: report key -> figure name
SUITE_COUNTS = {
    "failed_clips": "eval-clips failed clips",
    "false_cases": "eval-clips false cases",
    "missed_cases": "eval-clips missed cases",
}
EPS = 1e-9


@dataclass(frozen=True)
class GateFailure:
    """One figure the candidate is worse on. ``drop``: AP50 lost (current - candidate), or for a suite
    count the failures added (candidate - current); None when the candidate did not measure it."""

    figure: str
    current: float | None
    candidate: float | None
    drop: float | None
    tolerance: float
    note: str | None = None  # why it could not be measured

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.note is not None:
            return f"{self.figure}: {self.note}"
        if self.candidate is None:
            return f"{self.figure}: current {_num(self.current)}, candidate not measured"
        if self.figure.startswith("eval-clips"):
            return (
                f"{self.figure}: current {_num(self.current)}, candidate {_num(self.candidate)}, "
                f"{_num(self.drop)} added (tolerance {_num(self.tolerance)})"
            )
        return (
            f"{self.figure}: current {self.current:.3f}, candidate {self.candidate:.3f}, "
            f"drop {self.drop:.3f} > tolerance {self.tolerance:.3f}"
        )


def _num(v: float | None) -> str:
    if v is None:
        return "—"
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


def figures(
    map50: float, per_class: Mapping[str, float], views: Mapping[str, Metrics | Any] | None = None
) -> dict[str, float]:
    """Named figures: ``mAP50``, ``AP50 <class>``, and per view ``<view> mAP50`` / ``<view> AP50 <class>``
    (``views``: view name -> anything with ``map50`` and ``per_class``)."""
    out = {"mAP50": float(map50)}
    out.update({f"AP50 {c}": float(v) for c, v in per_class.items()})
    for view, vm in (views or {}).items():
        out[f"{view} mAP50"] = float(vm.map50)
        out.update({f"{view} AP50 {c}": float(v) for c, v in vm.per_class.items()})
    return out


def recorded_figures(metrics: Metrics) -> dict[str, float]:
    """:func:`figures` of metrics recorded in the manifest."""
    return figures(metrics.map50, metrics.per_class, metrics.per_view)


def compare_figures(
    current: Mapping[str, float], candidate: Mapping[str, float], tolerance: float
) -> list[GateFailure]:
    """Every figure of ``current`` that ``candidate`` lost more than ``tolerance`` of, or lacks.

    Figures only the candidate has (a class the current model does not know) are not compared."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    out: list[GateFailure] = []
    for name, cur in current.items():
        cand = candidate.get(name)
        if cand is None:
            out.append(GateFailure(name, cur, None, None, tolerance))
            continue
        drop = round(cur - cand, 5)
        if drop > tolerance + EPS:
            out.append(GateFailure(name, cur, cand, drop, tolerance))
    return out


def compare_suite(current: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[GateFailure]:
    """The suite counts (``totals`` of two ``citywatch eval-clips --json`` reports) the candidate raised."""
    cur_t, cand_t = current.get("totals", {}), candidate.get("totals", {})
    out: list[GateFailure] = []
    for key, name in SUITE_COUNTS.items():
        cur, cand = int(cur_t.get(key, 0)), int(cand_t.get(key, 0))
        if cand > cur:
            out.append(GateFailure(name, cur, cand, cand - cur, 0.0))
    return out


def suite_clips(current: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """Names of the clips that pass with the current default and fail with the candidate."""
    passed = {c["name"] for c in current.get("clips", []) if c.get("passed")}
    return [c["name"] for c in candidate.get("clips", []) if not c.get("passed") and c["name"] in passed]


def eval_data(entry: ModelEntry) -> str | None:
    """The dataset yaml ``entry``'s metrics were measured on: recorded in the metrics, else the one it was
    trained with (training evaluates its holdout split)."""
    if entry.metrics is not None and entry.metrics.data:
        return entry.metrics.data
    data = (entry.train_args or {}).get("data")
    return str(data) if data else None


def _holdout(entry: ModelEntry) -> str:
    m = entry.metrics
    if m is None:
        return "no recorded metrics"
    where = eval_data(entry) or "an unrecorded dataset"
    return f"split {m.split or '?'} of {where}, {m.images if m.images is not None else '?'} images"


def holdout_mismatch(current: ModelEntry, candidate: ModelEntry) -> str | None:
    """None when both entries' recorded metrics come from the same holdout, else why not.

    Same holdout: both record the evaluated split's label hash (``metrics.data_hash``) and the hashes and
    split agree; for metrics recorded before that hash existed, the same dataset yaml, split and image
    count."""
    a, b = current.metrics, candidate.metrics
    if a is None or b is None:
        missing = ", ".join(e.ref for e, m in ((current, a), (candidate, b)) if m is None)
        return f"no recorded metrics for {missing}"
    if a.split != b.split:
        return (
            f"different splits ({current.ref}: {_holdout(current)}; {candidate.ref}: {_holdout(candidate)})"
        )
    if a.data_hash is not None and b.data_hash is not None:
        if a.data_hash != b.data_hash:
            return (
                f"different holdout labels ({current.ref}: {_holdout(current)}, labels {a.data_hash[:12]}; "
                f"{candidate.ref}: {_holdout(candidate)}, labels {b.data_hash[:12]})"
            )
        return None
    da, db = eval_data(current), eval_data(candidate)
    if da is None or db is None or da != db or a.images != b.images:
        return (
            f"not the same holdout ({current.ref}: {_holdout(current)}; {candidate.ref}: "
            f"{_holdout(candidate)})"
        )
    return None
