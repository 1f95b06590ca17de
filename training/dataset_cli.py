"""`citywatch dataset build`: see :mod:`training.dataset_build` (README "The data team's loop")."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.contracts.manifest import ManifestError
from training.dataset_build import build
from training.errors import TrainingError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="citywatch dataset", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build",
        help="merge labelled collections, reviewed cases and synthetic scenes into a YOLO dataset",
        description=(
            "Frames enter with the labeller's boxes when labelled, else (when the desk judged them) with "
            "the model's boxes corrected by the verdict: a rejected case's box removed, a corrected one "
            "replaced. "
            "Real frames are split by camera and day."
        ),
    )
    b.add_argument("--out", type=Path, required=True, help="new folder for the dataset (never overwritten)")
    b.add_argument(
        "--collection",
        type=Path,
        action="append",
        default=[],
        help="a collect.dir of the detector; repeatable",
    )
    b.add_argument(
        "--synth", type=Path, default=None, help="a synthetic dataset yaml (citywatch synth dataset)"
    )
    b.add_argument(
        "--synth-ratio", type=float, default=0.0, help="synthetic train / val images per real one (default 0)"
    )
    b.add_argument("--test-fraction", type=float, default=0.2, help="share of real frames held out (0.2)")
    b.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of real frames for validation (0.1)"
    )
    b.add_argument(
        "--pseudo-conf",
        type=float,
        default=0.5,
        help="reviewed, unlabelled frames: the model's boxes at or above this score label the rest of it",
    )
    b.add_argument(
        "--no-reviewed", action="store_true", help="only labelled frames (leave desk-only frames out)"
    )
    b.add_argument(
        "--model", default=None, help="the classes of this manifest model (default: the default model)"
    )
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print the card as one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    for name, value in (("--test-fraction", a.test_fraction), ("--val-fraction", a.val_fraction)):
        if not 0.0 <= value < 1.0:
            print(f"citywatch dataset build: {name} must be in [0, 1), got {value}", file=sys.stderr)
            return 2
    if a.synth_ratio < 0:
        print("citywatch dataset build: --synth-ratio must be >= 0", file=sys.stderr)
        return 2
    if not a.collection:
        print("citywatch dataset build: give at least one --collection", file=sys.stderr)
        return 2
    try:
        result = build(
            a.out,
            a.collection,
            synth=a.synth,
            synth_ratio=a.synth_ratio,
            fractions={"test": a.test_fraction, "val": a.val_fraction},
            pseudo_conf=a.pseudo_conf,
            seed=a.seed,
            model=a.model,
            include_reviewed=not a.no_reviewed,
        )
    except (TrainingError, ManifestError) as err:
        print(f"citywatch dataset build: {err}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(result.card, ensure_ascii=False))
    else:
        print((result.out / "CARD.md").read_text(encoding="utf-8"))
        print(f"dataset yaml: {result.yaml_path}  (citywatch train --data {result.yaml_path} ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
