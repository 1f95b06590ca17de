"""``citywatch eval-clips EXPECTATIONS.yaml``: the real-footage regression suite, as a command.

Prints per clip the cases opened per rule, the false and the missed ones, and totals (false
cases per hour of video); ``--json`` prints one JSON document instead. Exit 0 when every
expectation holds, 1 when one does not, 2 on bad input. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from detector.commands.evalclips.judge import Verdict
from detector.commands.evalclips.resolve import EvalInputError, Resolver
from detector.commands.evalclips.runner import ClipResult, run_still, run_video
from detector.commands.evalclips.spec import ExpectationsError, StillClip, VideoClip, load_expectations

PROG = "citywatch eval-clips"


def evaluate(
    expectations: Path,
    config: Path | None = None,
    evidence_dir: Path | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every clip of ``expectations``; the report :func:`main` prints with ``--json``.

    Raises :class:`ExpectationsError` or :class:`EvalInputError` on bad input, before any clip runs
    when the problem is in the file itself or in the files and configs it names."""
    exp = load_expectations(expectations)
    resolver = Resolver(exp, config, threads)
    runs = [resolver.resolve(clip, i) for i, clip in enumerate(exp.clips)]
    results: list[ClipResult] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(runs), unit="clip", desc="eval-clips", file=sys.stderr)
    for run in runs:
        if bar is not None:
            bar.set_postfix_str(run.name)
        if isinstance(run.clip, VideoClip):
            results.append(run_video(run, run.clip, evidence_dir, progress))
        elif isinstance(run.clip, StillClip):
            results.append(run_still(run, run.clip, evidence_dir))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return report(expectations, config, results)


def report(expectations: Path, config: Path | None, results: list[ClipResult]) -> dict[str, Any]:
    seconds = sum(r.duration_s or 0.0 for r in results if r.kind == "video")
    hours = seconds / 3600
    false_video = sum(len(r.verdict.false) for r in results if r.kind == "video")
    totals = {
        "clips": len(results),
        "failed_clips": sum(not r.verdict.passed for r in results),
        "false_cases": sum(len(r.verdict.false) for r in results),
        "missed_cases": sum(len(r.verdict.missed) for r in results),
        "false_video_cases": false_video,
        "video_hours": round(hours, 4),
        "false_per_hour": round(false_video / hours, 1) if hours > 0 else None,
    }
    return {
        "expectations": str(expectations),
        "config": None if config is None else str(config),
        "clips": [r.as_dict() for r in results],
        "totals": totals,
        "passed": all(r.verdict.passed for r in results),
    }


def _box(values: Any) -> str:
    return "anywhere" if values is None else "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def format_text(doc: dict[str, Any]) -> str:
    """The report for a person: one block per clip, then the totals."""
    lines = [f"eval-clips {doc['expectations']}" + (f" (config {doc['config']})" if doc["config"] else "")]
    for c in doc["clips"]:
        mark = "PASS" if c["passed"] else "FAIL"
        if c["kind"] == "video":
            opened = ", ".join(f"{k} {v}" for k, v in c["opened"].items()) or "none"
            head = f"{c['duration_s']:.1f} s of video; opened: {opened}"
        else:
            counts: dict[str, int] = {}
            for d in c["detections"]:
                counts[d["label"]] = counts.get(d["label"], 0) + 1
            head = "still; detections: " + (
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
            )
        lines.append(f"[{mark}] {c['name']}: {head}; false {len(c['false'])}, missed {len(c['missed'])}")
        for f in c["false"]:
            what = f.get("rule") or f["label"]
            at = f" opened at {f['opened_at_s']:.1f} s" if "opened_at_s" in f else ""
            evidence = f" (evidence {f['evidence']})" if f.get("evidence") else ""
            where = f"{f['score']:.2f} at {_box(f['bbox'])}{at}"
            lines.append(f"    false  {what} {f['label']} {where}: {f['reason']}{evidence}")
        for m in c["missed"]:
            note = f" ({m['note']})" if m.get("note") else ""
            lines.append(f"    missed {m['entry']} {m.get('rule') or m['label']}{note}: {m['reason']}")
    t = doc["totals"]
    per_hour = "n/a" if t["false_per_hour"] is None else f"{t['false_per_hour']:g} per hour"
    lines.append(
        f"totals: {t['clips']} clips, {t['failed_clips']} failed; {t['false_cases']} false "
        f"({t['false_video_cases']} cases in {t['video_hours'] * 60:.1f} min of video: {per_hour}), "
        f"{t['missed_cases']} missed; {'PASSED' if doc['passed'] else 'FAILED'}"
    )
    return "\n".join(lines)


def failures(doc: dict[str, Any]) -> str:
    """Only the failing clips of a report, for an assertion message."""
    failed = {**doc, "clips": [c for c in doc["clips"] if not c["passed"]]}
    return format_text(failed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__
        + "\nThe file format: see `detector/commands/evalclips/__init__.py` or the README.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("expectations", type=Path, help="EXPECTATIONS.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--config", type=Path, default=None, help="streams.yaml for every clip (default: what the file names)"
    )
    p.add_argument("--evidence-dir", type=Path, default=None, help="save evidence JPEGs of opened cases here")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        doc = evaluate(a.expectations, a.config, a.evidence_dir, a.threads, progress=not a.quiet)
    except ExpectationsError as err:
        print(f"{PROG}: {a.expectations} has problems:\n{err}", file=sys.stderr)
        return 2
    except EvalInputError as err:
        print(f"{PROG}: {a.expectations}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2, ensure_ascii=False) if a.json else format_text(doc))
    return 0 if doc["passed"] else 1


__all__ = ["Verdict", "evaluate", "failures", "format_text", "main", "report"]
