"""`citywatch train | eval | export | models` (also `python -m training ...`).

Everything runs offline: ultralytics is prepared by
:func:`detector.contracts.ultralytics_env.prepare_offline` before it is imported, models start from
scratch, INT8 calibrates on our own data. Exit status: 0 ok, 1 an error we explain on stderr, 2 bad
command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.contracts.artifacts import verified_path, verify_sha256
from detector.contracts.manifest import (
    ManifestError,
    ModelEntry,
    load_manifest,
    models_dir,
)
from detector.contracts.ultralytics_env import OfflineSetupError
from training.errors import EvalError, TrainingError

DEFAULT_ARCH = "training/arch/citywatch-n.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="citywatch", description="citywatch model training, evaluation and registry"
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from scratch and register it in models/")
    t.add_argument("--data", type=Path, required=True, help="dataset yaml (ultralytics format)")
    t.add_argument(
        "--arch", default=DEFAULT_ARCH, help=f"model yaml (default {DEFAULT_ARCH}; or yolov8n.yaml)"
    )
    t.add_argument("--imgsz", type=int, default=320)
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--name", required=True, help="model name, e.g. citywatch-synth")
    t.add_argument("--version", required=True, help="model version X.Y.Z")
    t.add_argument("--workers", type=int, default=2, help="dataloader worker processes")
    t.add_argument("--resume", action="store_true", help="continue the run of this name/version from last.pt")
    t.add_argument("--fraction", type=float, default=1.0, help="fraction of the train split to use")
    t.add_argument("--project", type=Path, default=Path("runs/train"), help="folder for training runs")
    t.add_argument("--patience", type=int, default=50, help="stop after this many epochs without improvement")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="fine-tune: start from these weights (a registered model's .pt) instead of from scratch",
    )
    t.add_argument("--lr0", type=float, default=None, help="initial learning rate (default: ultralytics')")
    t.add_argument(
        "--time",
        type=float,
        default=None,
        metavar="HOURS",
        help="train for this many hours instead of --epochs (the schedule is fitted to the time)",
    )
    t.add_argument(
        "--freeze",
        type=int,
        default=None,
        metavar="N",
        help="fine-tune: keep the first N layers fixed (10: the YOLOv8 backbone), so a small dataset "
        "adapts the neck and head without unlearning what the backbone knows",
    )
    t.add_argument(
        "--keep",
        choices=("best", "last"),
        default="best",
        help="weights to register: the epoch best on the val split (default), or the last epoch (when the "
        "val split is too small or too unlike the target to choose an epoch, e.g. teacher-labelled frames)",
    )

    e = sub.add_parser("eval", help="mAP50 overall and AP50 per class on a dataset split")
    e.add_argument("model", help="manifest name[@version], or a .pt / .onnx file / *_openvino_model folder")
    e.add_argument("--data", type=Path, required=True, help="dataset yaml")
    e.add_argument(
        "--split", default=None, help="any split key of the yaml (default: test if present, else val)"
    )
    e.add_argument("--imgsz", type=int, default=None, help="default: the model's own input size")
    e.add_argument("--batch", type=int, default=16)
    e.add_argument(
        "--kind", choices=["pt", "onnx", "openvino"], default="pt", help="artifact of a manifest model"
    )
    e.add_argument("--int8", action="store_true", help="with --kind onnx|openvino: the INT8 export")
    e.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    x = sub.add_parser("export", help="export a model to ONNX or OpenVINO (fp32 or INT8)")
    x.add_argument("model", help="manifest name[@version] (the export is recorded) or a .pt file")
    x.add_argument("--format", choices=["onnx", "openvino"], required=True)
    x.add_argument("--int8", action="store_true", help="INT8, calibrated on --data")
    x.add_argument(
        "--data", type=Path, default=None, help="dataset yaml for INT8 calibration (required with --int8)"
    )
    x.add_argument("--calib-split", default="train", help="split that calibration images come from")
    x.add_argument("--calib-images", type=int, default=256, help="at most this many calibration images")
    x.add_argument(
        "--imgsz", type=int, default=None, help="default: the manifest's / checkpoint's input size"
    )
    x.add_argument(
        "--static",
        action="store_true",
        help="a fixed imgsz x imgsz input (default: any height/width, so 16:9 frames run as 640x384)",
    )

    m = sub.add_parser("models", help="the model manifest")
    msub = m.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="table of registered models; * marks the default")
    msub.add_parser(
        "import-onnx", help="rebuild an ultralytics YOLOv8 ONNX (fp32/int8) as a .pt; register it"
    )
    s = msub.add_parser("show", help="model card and manifest entry")
    s.add_argument("ref", help="name or name@version")
    pr = msub.add_parser(
        "promote", help="make a model the default one, if the gate finds it no worse than the current one"
    )
    pr.add_argument("ref", help="name (always its highest version) or name@version (pinned)")
    pr.add_argument("--backend", choices=["ultralytics", "onnx", "openvino"], default=None)
    pr.add_argument("--precision", choices=["fp32", "int8"], default=None)
    _gate_options(pr)
    rb = msub.add_parser("rollback", help="return the default to the model the last promotion replaced")
    rb.add_argument("--by", default=None, help="who rolls back (default: the login name)")
    rb.add_argument("--reason", default=None, help="why (recorded in the manifest history)")
    rh = msub.add_parser(
        "rehash",
        help="record the sha256 of a model's export files as they are now (only for files you trust)",
    )
    rh.add_argument("refs", nargs="+", metavar="ref", help="name (its highest version) or name@version")
    msub.add_parser(
        "tune", help="measure a model's exports on this CPU, cache the fastest (`citywatch models tune`)"
    )
    return p


def _gate_options(pr: argparse.ArgumentParser) -> None:
    pr.add_argument(
        "--tolerance", type=float, default=0.02, help="largest absolute AP50 drop allowed per class (0.02)"
    )
    pr.add_argument(
        "--data",
        type=Path,
        default=None,
        help="evaluate both models on this dataset yaml's holdout (default: the recorded metrics when both "
        "come from the same holdout, else the dataset the candidate was measured on)",
    )
    pr.add_argument("--split", default=None, help="with --data: the split (default: test, else val)")
    pr.add_argument(
        "--suite", type=Path, default=None, help="also run this eval-clips EXPECTATIONS.yaml with each model"
    )
    pr.add_argument("--force", action="store_true", help="promote although the gate refuses (needs --by)")
    pr.add_argument("--by", default=None, help="who promotes (required with --force)")
    pr.add_argument("--reason", default=None, help="why (recorded in the manifest history)")
    pr.add_argument("--json", action="store_true", help="print the gate result as one JSON object")


def _resolve_model(ref: str) -> tuple[ModelEntry | None, Path]:
    """A manifest entry and its .pt, or a plain path (with its entry when the path is a registered .pt)."""
    p = Path(ref)
    if p.exists():
        folder = models_dir()
        if p.resolve().parent == folder and (folder / "manifest.yaml").is_file():
            for entry in load_manifest(folder).models:
                if entry.file == p.name:
                    return entry, verify_sha256(entry)
        return None, p.resolve()
    if p.suffix in (".pt", ".onnx") or "/" in ref:
        raise ManifestError(f"model file {p} not found")
    entry = load_manifest().get(ref)
    return entry, verify_sha256(entry)  # the weights must be the ones the manifest lists


def _cmd_train(a: argparse.Namespace) -> int:
    from training.train import TrainOptions, run_training

    opts = TrainOptions(
        data=a.data,
        arch=a.arch,
        imgsz=a.imgsz,
        epochs=a.epochs,
        batch=a.batch,
        name=a.name,
        version=a.version,
        workers=a.workers,
        resume=a.resume,
        fraction=a.fraction,
        project=a.project,
        patience=a.patience,
        seed=a.seed,
        init_from=a.init_from,
        lr0=a.lr0,
        time_h=a.time,
        keep=a.keep,
        freeze=a.freeze,
    )
    run_training(opts)
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from training.dataset import load_dataset
    from training.evaluate import evaluate, format_table
    from training.runtime import stdout_to_stderr

    entry, path = _resolve_model(a.model)
    if entry is not None and a.kind != "pt":
        path, _ = verified_path(entry, a.kind, "int8" if a.int8 else "fp32")
    elif a.int8:
        raise EvalError("--int8 picks a manifest model's INT8 export; with a file, pass the INT8 file itself")
    spec = load_dataset(a.data)
    split = a.split or spec.eval_split()
    imgsz = a.imgsz or (entry.imgsz if entry is not None else None)
    if a.json:
        with stdout_to_stderr():
            result = evaluate(path, spec, split, imgsz=imgsz, batch=a.batch)
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        result = evaluate(path, spec, split, imgsz=imgsz, batch=a.batch)
        print(format_table(result))
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from training import registry
    from training.dataset import load_dataset
    from training.evaluate import model_imgsz
    from training.export import export_key, export_model

    entry, pt = _resolve_model(a.model)
    if pt.suffix != ".pt":
        raise TrainingError(f"{pt}: export starts from a .pt file")
    if a.int8 and a.data is None:
        raise TrainingError("--int8 needs --data DATASET_YAML: calibration uses our own images, never coco8")
    calib = load_dataset(a.data) if a.data is not None else None
    imgsz = a.imgsz or (entry.imgsz if entry is not None else model_imgsz(pt))
    if imgsz is None:
        raise TrainingError(f"cannot tell the input size of {pt}; pass --imgsz")
    out = export_model(
        pt,
        a.format,
        imgsz=imgsz,
        dest_dir=pt.parent,
        stem=pt.stem,
        int8=a.int8,
        calib=calib,
        calib_split=a.calib_split,
        calib_images=a.calib_images,
        dynamic=not a.static,
    )
    if entry is not None:
        registry.record_export(entry.ref, export_key(a.format, a.int8), out, entry.models_dir)
        print(f"exported {entry.ref} -> {out} (recorded in the manifest as {export_key(a.format, a.int8)})")
    else:
        print(f"exported {pt} -> {out} (not a registered model: the manifest is unchanged)")
    return 0


def _cmd_models(a: argparse.Namespace) -> int:
    from training import promotion, registry

    if a.models_command == "tune":  # the detector's command; `citywatch` hands it there directly
        print("models tune measures the detector's runtime: run `citywatch models tune`", file=sys.stderr)
        return 2
    if a.models_command == "list":
        print(registry.list_table(load_manifest(missing_ok=True)))
    elif a.models_command == "show":
        print(registry.show(a.ref), end="")
    elif a.models_command == "rehash":
        for ref in registry.rehash(a.refs):
            print(f"{ref}: recorded the sha256 of its export files in the manifest")
    elif a.models_command == "rollback":
        rec = promotion.rollback(by=a.by, reason=a.reason)
        print(f"default model is now {rec.to} (rolled back from {rec.from_}; recorded in the history)")
    else:
        return _promote(a)
    return 0


def _promote(a: argparse.Namespace) -> int:
    from training import promotion

    try:
        result, rec = promotion.promote(
            a.ref, backend=a.backend, precision=a.precision, tolerance=a.tolerance, data=a.data,
            split=a.split, suite=a.suite, force=a.force, by=a.by, reason=a.reason,
        )  # fmt: skip
    except promotion.PromotionRefused as err:
        if a.json:
            print(json.dumps({**err.result.as_json(), "promoted": False}, sort_keys=True))
        print(f"citywatch models promote: refused: {err}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps({**result.as_json(), "promoted": True, "forced": rec.forced}, sort_keys=True))
        return 0
    print(result.format_text())
    forced = " FORCED past the gate" if rec.forced else ""
    print(f"default model is now {a.ref} ({rec.to}){forced}; recorded in the history by {rec.by}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``argv`` excludes the program name (e.g. ``["models", "list"]``)."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv[:2] == ["models", "import-onnx"]:  # its own parser: training/onnx_import.py
        from training.onnx_import import main as import_main

        return import_main(argv[2:])
    args = _parser().parse_args(argv)
    handlers = {"train": _cmd_train, "eval": _cmd_eval, "export": _cmd_export, "models": _cmd_models}
    try:
        return handlers[args.command](args)
    except (TrainingError, ManifestError, OfflineSetupError) as err:
        print(f"citywatch {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"citywatch {args.command}: interrupted", file=sys.stderr)
        return 130
