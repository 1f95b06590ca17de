"""``citywatch models tune [NAME ...] [--json]``: measure a model's exports on this CPU, cache the fastest.

Every export the manifest lists for the model is a candidate (ONNX fp32 and INT8, OpenVINO fp32 and INT8;
the .pt through ultralytics only when there is no export): only what the data team registered and
evaluated can win, which is the accuracy guard. Each candidate runs a fixed number of frames (by default
16 warm-up, then 48 timed at batch 1 and 48 at the configured batch) on a real street still cropped to
16:9 (``$CITYWATCH_TUNE_IMAGE``, else the checkout's ``tests/realworld/images/bus.jpg``; a synthetic frame
when neither exists), so a dynamic-shape export runs the 640x384 rectangle a camera frame runs. The winner
has the most frames/s at the configured batch. Results go to the per-host tune cache
(``detector.inference.tune_cache``), which ``detector.inference.model`` reads when ``model.backend`` is not
set.

No runtime is imported until a candidate is measured; torch only for a .pt candidate.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from detector.contracts.artifacts import verify_artifact
from detector.contracts.manifest import REPO_ROOT, ManifestError, ModelEntry, load_manifest
from detector.inference.tune_cache import (
    EXPORT_KINDS,
    HostInfo,
    TuneError,
    TuneResult,
    cache_path,
    candidates,
    choose,
    host_info,
    write_cache,
)

log = logging.getLogger(__name__)

TUNE_IMAGE_ENV = "CITYWATCH_TUNE_IMAGE"
DEFAULT_IMAGE = REPO_ROOT / "tests" / "realworld" / "images" / "bus.jpg"
FRAME_SIZE = (1280, 720)  # a 16:9 camera frame

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Budget:
    """Frames per candidate: ``warmup`` at batch 1, then ``timed`` at batch 1 (``batch_one``) and at the
    configured batch."""

    warmup: int
    timed: int
    batch_one: bool = True


FULL = Budget(warmup=16, timed=48)
QUICK = Budget(warmup=1, timed=8, batch_one=False)  # at detector start-up: a few seconds in all


def tune_frame(image: Path | None = None) -> tuple[Image, str]:
    """The frame to measure on (a 16:9 crop of a real still, resized to 1280x720) and its description."""
    import cv2

    options = [image] if image is not None else []
    env = os.environ.get(TUNE_IMAGE_ENV)
    options += [Path(env)] if env else []
    options.append(DEFAULT_IMAGE)
    for path in options:
        img = cv2.imread(str(path)) if path.is_file() else None
        if img is None:
            continue
        h, w = img.shape[:2]
        if w * 9 > h * 16:  # too wide: crop the sides
            cw, ch = h * 16 // 9, h
        else:  # too tall (bus.jpg is portrait): crop top and bottom
            cw, ch = w, w * 9 // 16
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        crop = img[y0 : y0 + ch, x0 : x0 + cw]
        frame: Image = np.ascontiguousarray(
            cv2.resize(crop, FRAME_SIZE, interpolation=cv2.INTER_AREA), np.uint8
        )
        return frame, f"{path.name} {cw}x{ch}->1280x720"
    rng = np.random.default_rng(0)
    noise: Image = rng.integers(0, 255, (FRAME_SIZE[1], FRAME_SIZE[0], 3), dtype=np.uint8)
    return noise, "synthetic 1280x720"


def _fps(infer: Callable[[Sequence[Image]], object], frame: Image, batch: int, frames: int) -> float:
    calls = max(1, math.ceil(frames / batch))
    images = [frame] * batch
    infer(images)  # one untimed call at this batch size (async request pools, shape compilation)
    t0 = time.perf_counter()
    for _ in range(calls):
        infer(images)
    return calls * batch / max(time.perf_counter() - t0, 1e-9)


def measure(
    entry: ModelEntry,
    *,
    batch: int = 8,
    threads: int | None = None,
    budget: Budget = FULL,
    image: Path | None = None,
    mode: str = "cli",
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Measure every candidate export of ``entry`` on this host; raises TuneError when none runs."""
    from detector.inference import InferenceError, load_backend

    keys = candidates(entry)
    if not keys:
        raise TuneError(f"{entry.ref}: the manifest lists no export and the .pt file is missing")
    frame, described = tune_frame(image)
    fps: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    sizes = sorted({1, batch}) if budget.batch_one else [batch]
    for key in keys:
        kind, _ = EXPORT_KINDS[key]
        path = entry.models_dir / (entry.file if key == "pt" else entry.exports[key])
        try:
            verify_artifact(entry, path)  # a file that is not the one registered is neither measured nor run
            backend = load_backend(kind, path, entry.classes, entry.imgsz, 0.25, 0.5, threads)
            for _ in range(budget.warmup):
                backend.infer([frame])
            fps[key] = {f"batch{b}": round(_fps(backend.infer, frame, b, budget.timed), 2) for b in sizes}
            backend.close()
        except (InferenceError, ManifestError) as err:
            errors[key] = str(err)
            log.warning("tune %s: %s failed: %s", entry.ref, key, err)
            continue
        if progress is not None:
            shown = ", ".join(
                f"{v:.1f} frames/s at {k.replace('batch', 'batch ')}" for k, v in fps[key].items()
            )
            progress(f"{entry.ref} {key}: {shown}")
    winner = choose(fps, batch, keys)
    if winner is None:
        raise TuneError(f"{entry.ref}: no candidate export ran ({'; '.join(errors.values())})")
    return TuneResult(
        ref=entry.ref,
        sha256=entry.sha256,
        winner=winner,
        candidates=keys,
        fps=fps,
        errors=errors,
        batch=batch,
        frames={"warmup": budget.warmup, "timed": budget.timed},
        image=described,
        mode=mode,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def tune_and_cache(
    entry: ModelEntry,
    *,
    batch: int = 8,
    threads: int | None = None,
    budget: Budget = FULL,
    mode: str = "cli",
    host: HostInfo | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[TuneResult, Path]:
    """:func:`measure` and write the result into this host's tune cache; returns (result, cache file)."""
    host = host or host_info()
    result = measure(entry, batch=batch, threads=threads, budget=budget, mode=mode, progress=progress)
    return result, write_cache(cache_path(host), host, [result])


DESCRIPTION = (
    "Measure every export the manifest lists for each model on this CPU and cache the fastest per host "
    "(used when streams.yaml gives no model.backend)."
)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``citywatch models tune`` (also mounted under ``training.cli``'s ``models``)."""
    p.add_argument("names", nargs="*", help="model name or name@version (default: the manifest default)")
    p.add_argument("--batch", type=int, default=8, help="the configured batch (model.batch; default 8)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--warmup", type=int, default=FULL.warmup, help="warm-up frames per candidate")
    p.add_argument("--frames", type=int, default=FULL.timed, help="timed frames per candidate and batch size")
    p.add_argument("--image", type=Path, default=None, help="a street still to measure on")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``citywatch models tune``; exit 0 ok, 1 an error explained on stderr, 2 bad options."""
    parser = add_arguments(argparse.ArgumentParser(prog="citywatch models tune", description=DESCRIPTION))
    return run(parser.parse_args(list(argv) if argv is not None else None))


def run(a: argparse.Namespace) -> int:
    """Run with parsed options (see :func:`add_arguments`)."""
    if a.batch < 1 or a.warmup < 0 or a.frames < 1:
        print("citywatch models tune: need --batch >= 1, --warmup >= 0, --frames >= 1", file=sys.stderr)
        return 2
    host = host_info()
    budget = Budget(a.warmup, a.frames)
    say = (lambda msg: print(msg, file=sys.stderr)) if a.json else print
    try:
        manifest = load_manifest()
        entries = [manifest.get(n) for n in a.names] if a.names else [manifest.get(None)]
        flags = ", ".join(host.flags) or "none of " + "/".join(("avx2", "avx512", "amx"))
        say(f"host {host.key}: {host.cpu}, {host.cores} cores, ISA {flags}")
        results = []
        for entry in entries:
            result = measure(
                entry, batch=a.batch, threads=a.threads, budget=budget, image=a.image, progress=say
            )
            results.append(result)
            say(f"{entry.ref}: fastest here is {result.winner} ({result.backend} {result.precision})")
        path = write_cache(cache_path(host), host, results)
    except (ManifestError, TuneError) as err:
        print(f"citywatch models tune: {err}", file=sys.stderr)
        return 1
    if a.json:
        out = {"host": host.as_json(), "cache": str(path), "models": [r.as_json() for r in results]}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"cached in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
