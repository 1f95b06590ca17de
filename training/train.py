"""`citywatch train`: train from scratch, evaluate, export ONNX, write the card and the manifest entry.

The run lives in ``<project>/<name>-<version>/`` (ultralytics writes ``weights/last.pt`` every epoch there, so
``--resume`` continues a killed run from its last epoch). Nothing reaches the models folder until the model
has been evaluated and exported: the .pt, .onnx and card are staged in the run folder, then moved, then the
manifest entry is written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from detector.contracts.artifacts import export_checksums
from detector.contracts.manifest import (
    REPO_ROOT,
    ManifestError,
    Metrics,
    ModelEntry,
    ViewMetrics,
    check_name_version,
    load_manifest,
    models_dir,
    sha256_file,
)
from training import registry
from training.bn_calibrate import calibrated_checkpoint
from training.dataset import DatasetSpec, load_dataset
from training.errors import TrainError
from training.evaluate import EvalResult, evaluate
from training.export import artifact_name, export_model
from training.runtime import device, yolo

DATA_YAML_NAME = "citywatch-data.yaml"
CALIBRATED_INIT = "init-calibrated.pt"  # --init-from weights of an import, BatchNorms calibrated
CALIBRATION_IMAGES = 64


@dataclass
class TrainOptions:
    data: Path
    arch: str
    imgsz: int = 320
    epochs: int = 100
    batch: int = 16
    name: str = "citywatch"
    version: str = "0.1.0"
    workers: int = 2
    resume: bool = False
    fraction: float = 1.0
    project: Path = REPO_ROOT / "runs" / "train"
    patience: int = 50
    seed: int = 0
    init_from: Path | None = None
    lr0: float | None = None
    keep: str = "best"  # "best": best.pt (best on the val split); "last": the last epoch
    freeze: int | None = None  # layers kept fixed while fine-tuning
    time_h: float | None = None  # a wall-clock budget: ultralytics fits the epoch count to it


def _resolve_arch(arch: str) -> str:
    if arch.endswith(".pt"):
        raise TrainError(f"--arch {arch}: training starts from scratch; pass a model yaml, not weights")
    if not arch.endswith((".yaml", ".yml")):
        raise TrainError(f"--arch {arch}: expected a model yaml such as training/arch/citywatch-n.yaml")
    for candidate in (Path(arch), REPO_ROOT / arch):
        if candidate.is_file():
            return str(candidate.resolve())
    return arch  # an ultralytics built-in config such as yolov8n.yaml (ships with the package, no download)


def _checkpoint_epoch(path: Path) -> int:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return int(ckpt.get("epoch", -1)) if isinstance(ckpt, dict) else -1


def _log_epoch(trainer: Any) -> None:
    """One plain line per epoch on stdout (ultralytics draws no progress bars when stdout is a file)."""
    tloss = getattr(trainer, "tloss", None)
    losses = {str(k): float(v) for k, v in tloss.items()} if isinstance(tloss, dict) else {}
    loss_s = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
    m = trainer.metrics or {}
    done = (
        trainer.epoch + 1 > trainer.epochs
    )  # ultralytics calls this hook once more after validating best.pt
    where = "best.pt" if done else f"epoch {trainer.epoch + 1}/{trainer.epochs}"
    print(
        f"{where}  {loss_s}  "
        f"val mAP50={m.get('metrics/mAP50(B)', float('nan')):.4f} "
        f"mAP50-95={m.get('metrics/mAP50-95(B)', float('nan')):.4f}  "
        f"{getattr(trainer, 'epoch_time', 0.0) or 0.0:.1f}s",
        flush=True,
    )


def _fit(opts: TrainOptions, spec: DatasetSpec, run_dir: Path, stem: str) -> None:
    last = run_dir / "weights" / "last.pt"
    if opts.resume:
        if not last.is_file():
            raise TrainError(f"nothing to resume: {last} does not exist (start without --resume)")
        if _checkpoint_epoch(last) < 0:
            print(f"{last} is a finished run; registering it without more training")
            return
        model = yolo(last)
        model.add_callback("on_fit_epoch_end", _log_epoch)
        model.train(resume=str(last), workers=opts.workers, device=device())
        return
    if last.exists():
        raise TrainError(
            f"{run_dir} already holds a run: pass --resume to continue it, or use another --version"
        )
    data_yaml = spec.write_ultralytics_yaml(run_dir / DATA_YAML_NAME)
    pretrained: bool | str = False
    if opts.init_from is not None:
        if opts.init_from.suffix != ".pt" or not opts.init_from.is_file():
            raise TrainError(
                f"--init-from {opts.init_from}: expected an existing .pt file (e.g. models/NAME-VER.pt)"
            )
        pretrained = str(opts.init_from.resolve())
        calibrated = run_dir / CALIBRATED_INIT
        train_images = sorted(spec.images("train"))[:CALIBRATION_IMAGES]
        if calibrated_checkpoint(opts.init_from, train_images, calibrated, opts.imgsz):
            print(
                f"{opts.init_from} was rebuilt from an export (its BatchNorms have no statistics): "
                f"calibrated them on {len(train_images)} training images into {calibrated}"
            )
            pretrained = str(calibrated)
    extra: dict[str, Any] = {} if opts.lr0 is None else {"lr0": opts.lr0}
    if opts.time_h is not None:
        if opts.time_h <= 0:
            raise TrainError(f"--time {opts.time_h}: expected a positive number of hours")
        extra["time"] = opts.time_h
    if opts.freeze is not None:
        extra["freeze"] = opts.freeze
    try:
        model = yolo(_resolve_arch(opts.arch))
    except FileNotFoundError as err:
        raise TrainError(f"--arch {opts.arch}: no such model yaml ({err})") from err
    model.add_callback("on_fit_epoch_end", _log_epoch)
    model.train(
        data=str(data_yaml),
        imgsz=opts.imgsz,
        epochs=opts.epochs,
        batch=opts.batch,
        workers=opts.workers,
        project=str(opts.project),
        name=stem,
        exist_ok=True,
        pretrained=pretrained,
        amp=False,
        plots=False,
        device=device(),
        fraction=opts.fraction,
        patience=opts.patience,
        seed=opts.seed,
        deterministic=True,
        save=True,
        val=True,
        **extra,
    )


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    """JSON/YAML-safe copy (paths and other objects become strings)."""
    out: dict[str, Any] = json.loads(json.dumps(args, default=str))
    return out


def _view_metrics(results: dict[str, EvalResult]) -> dict[str, ViewMetrics] | None:
    if not results:
        return None
    return {
        view: ViewMetrics(map50=r.map50, per_class=r.per_class, split=r.split, images=r.images)
        for view, r in results.items()
    }


def run_training(opts: TrainOptions) -> ModelEntry:
    """Train (or resume), then evaluate, export ONNX and register ``name@version``; returns the entry."""
    try:
        check_name_version(opts.name, opts.version)
    except ManifestError as err:
        raise TrainError(str(err)) from err
    spec = load_dataset(opts.data)
    folder = models_dir()
    stem = f"{opts.name}-{opts.version}"
    if load_manifest(folder, missing_ok=True).find(f"{opts.name}@{opts.version}") is not None:
        raise TrainError(
            f"{opts.name}@{opts.version} is already in {folder}/manifest.yaml; use another --version"
        )
    clash = [
        p.name for p in (folder / f"{stem}.pt", folder / f"{stem}.onnx", folder / f"{stem}.md") if p.exists()
    ]
    if clash:
        raise TrainError(f"{folder} already has {', '.join(clash)}; use another --version or remove them")
    data_hash = spec.data_hash("train")
    unmapped = [c for c in spec.names if c not in spec.rule_labels]
    if unmapped:
        print(
            f"note: classes {unmapped} have no rule label, so no rule will use them; add "
            f"`rule_labels: {{class: vehicle|vendor|litter|structure}}` to {spec.yaml_path} to map them"
        )
    run_dir = (opts.project / stem).resolve()
    opts.project = opts.project.resolve()

    _fit(opts, spec, run_dir, stem)

    weights = run_dir / "weights"
    use_best = opts.keep == "best" and (weights / "best.pt").is_file()
    best = weights / "best.pt" if use_best else weights / "last.pt"
    if not best.is_file():
        raise TrainError(f"training left no weights in {weights}")
    stage = run_dir / "release"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    pt = stage / f"{stem}.pt"
    shutil.copyfile(best, pt)
    scrub_checkpoint(pt, [REPO_ROOT])  # released weights name paths relative to the checkout

    model = yolo(pt)
    ckpt_args = _plain(dict((model.ckpt or {}).get("train_args", {})))
    imgsz = int(ckpt_args.get("imgsz", opts.imgsz))
    eval_split = spec.eval_split()
    print(f"\nEvaluating {stem} on the {eval_split!r} split")
    final = evaluate(pt, spec, eval_split, imgsz=imgsz, workers=0)
    views = {
        view: evaluate(pt, spec, split, imgsz=imgsz, workers=0) for view, split in spec.view_splits().items()
    }
    onnx = export_model(pt, "onnx", imgsz=imgsz, dest_dir=stage, stem=stem)

    from ultralytics.utils.torch_utils import get_flops

    info = {
        "arch": opts.arch if not opts.resume else str(ckpt_args.get("model", opts.arch)),
        "params": sum(p.numel() for p in model.model.parameters()),
        "gflops": get_flops(model.model, imgsz),
        "train_images": len(spec.images("train")),
    }
    train_args: dict[str, Any] = {
        **_plain(asdict(opts)),
        **{
            k: ckpt_args[k]
            for k in ("epochs", "batch", "imgsz", "optimizer", "lr0", "seed")
            if k in ckpt_args
        },
        "device": device(),
        "ultralytics": _ultralytics_version(),
    }
    metrics = Metrics(
        map50=final.map50,
        map50_95=final.map50_95,
        per_class=final.per_class,
        per_view=_view_metrics(views),
        split=eval_split,
        images=final.images,
        data=registry.repo_relative(str(spec.yaml_path.resolve())),
        data_hash=spec.data_hash(eval_split),  # the holdout: the promotion gate compares on it
    )
    try:
        entry = _entry(opts, stem, imgsz, spec, metrics, data_hash, pt, train_args)
    except ValidationError as err:
        raise TrainError(f"the manifest entry for {stem} is invalid: {err}") from err
    card = registry.card_text(entry, data_yaml=str(spec.yaml_path), model_info=info, full_args=ckpt_args)
    folder.mkdir(parents=True, exist_ok=True)
    for f in (pt, onnx):
        shutil.move(str(f), str(folder / f.name))
    registry.register(entry, card, folder)
    shutil.rmtree(stage, ignore_errors=True)
    print(f"\nRegistered {entry.ref}: {folder / entry.file} (mAP50 {final.map50:.3f} on {eval_split})")
    return entry


def _entry(
    opts: TrainOptions,
    stem: str,
    imgsz: int,
    spec: DatasetSpec,
    metrics: Metrics,
    data_hash: str,
    pt: Path,
    train_args: dict[str, Any],
) -> ModelEntry:
    exports = {"onnx": artifact_name(stem, "onnx", False)}
    return ModelEntry(
        name=opts.name,
        version=opts.version,
        file=pt.name,
        exports=exports,
        imgsz=imgsz,
        classes=spec.names,
        rule_labels=spec.rule_labels,
        backend="onnx",
        precision="fp32",
        metrics=metrics,
        data_hash=data_hash,
        sha256=sha256_file(pt),
        checksums=export_checksums(pt.parent, exports),  # the staged files, moved unchanged into models/
        card=f"{stem}.md",
        created=datetime.now(UTC).replace(microsecond=0),
        train_args=train_args,
    )


def scrub_checkpoint(pt: Path, roots: Sequence[Path]) -> None:
    """Rewrite the checkpoint ``pt`` with each of ``roots`` taken off the paths ultralytics records in it
    (``train_args``, ``git``, the model's ``args``, ``yaml`` and ``pt_path``); a root itself becomes ``.``."""
    import torch

    def strip(value: Any) -> Any:
        if isinstance(value, str):
            for root in roots:
                value = "." if value == str(root) else value.replace(f"{root}/", "")
            return value
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(strip(v) for v in value)
        return value

    ckpt = torch.load(pt, map_location="cpu", weights_only=False)
    ckpt = {k: v if k in ("model", "ema", "optimizer") else strip(v) for k, v in ckpt.items()}
    for net in (ckpt.get("model"), ckpt.get("ema")):
        for attr in ("args", "yaml", "pt_path"):
            if net is not None and hasattr(net, attr):
                setattr(net, attr, strip(getattr(net, attr)))
    torch.save(ckpt, pt)


def _ultralytics_version() -> str:
    import ultralytics

    return str(ultralytics.__version__)
