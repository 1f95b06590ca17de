"""What the benchmarks run on, prepared on first use, so ``python bench/X.py`` works on a fresh clone.

* ``test_split(n)``: the held-out test frames of synth-v2 (the set the default model was trained on,
  ``make dataset``), street and drone interleaved: only the first ``n`` frames are rendered, from the
  same seeds, so they are the same files ``make dataset`` writes. Cached under ``var/bench/data``.
* ``calibration_split()``: the training images an INT8 export calibrates on. ``training/export.py``
  takes an evenly spaced sample of the train split; these are the same images picked from the whole
  synth-v2 train split, rendered alone (256 instead of 7,000).
* ``scenario_clip(name)``: a bundled scenario clip, rendered where ``make scenarios`` puts it when it
  is missing (rendering is deterministic: the same bytes).

A bench that needs data the repository cannot make (real imagery) says what to fetch and exits 2
(``needs``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NoReturn

import _common
import yaml

DATA = _common.VAR / "data"
VIEWS = ("street", "drone")


def _cached(root: Path, build: dict[str, dict[str, list[int]]]) -> Path:
    """``root/dataset.yaml`` holding exactly the seeds of ``build``, rendered once (a stamp names them)."""
    from training.synth.dataset import build_seeds

    stamp = root / "seeds.json"
    want = json.dumps(build, sort_keys=True)
    if stamp.is_file() and stamp.read_text() == want and (root / "dataset.yaml").is_file():
        return root / "dataset.yaml"
    n = sum(len(seeds) for views in build.values() for seeds in views.values())
    _common.log(f"rendering {n} synthetic images into {root} (once) ...")
    tmp = root.with_name(root.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    build_seeds(tmp, build, workers=os.cpu_count() or 2)
    (tmp / "seeds.json").write_text(want)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    spec = yaml.safe_load((root / "dataset.yaml").read_text())
    spec["path"] = str(root.resolve())  # the folder it has now
    # a dataset yaml needs a `val` split (training/dataset.py, as ultralytics); no bench reads it
    spec.setdefault("val", spec[next(iter(build))])
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return root / "dataset.yaml"


def test_split(n: int) -> Path:
    """The dataset yaml of synth-v2's test split holding at least the first ``n`` frames of the
    interleaved street / drone order (``test_street`` and ``test_drone`` lists)."""
    from training.synth.dataset import SYNTH_V2, split_seeds

    full = SYNTH_V2["test"]
    if n > sum(full.values()):
        raise SystemExit(f"the synth-v2 test split has {sum(full.values())} frames; asked for {n}")
    per_view = {view: min(full[view], (n + 1) // 2) for view in VIEWS}  # the frames come in pairs
    # a cache of the whole split serves any n; a smaller one is built for a smaller n
    for counts in (full, per_view):
        root = DATA / f"synth-v2-test-{counts['street']}x{counts['drone']}"
        if (root / "dataset.yaml").is_file():
            break
    build = {"test": {view: split_seeds("test", view, counts[view]) for view in VIEWS}}
    return _cached(root, build)


def calibration_split() -> Path:
    """The dataset yaml whose train split is the INT8 calibration sample of synth-v2's train split."""
    from training.export import CALIBRATION_IMAGES
    from training.synth.dataset import SYNTH_V2, split_seeds

    everything = sorted(
        (f"{view}_{seed:08d}.jpg", view, seed)
        for view in VIEWS
        for seed in split_seeds("train", view, SYNTH_V2["train"][view])
    )  # the order DatasetSpec.images gives the export
    step = max(1, len(everything) // CALIBRATION_IMAGES)
    sample = everything[::step][:CALIBRATION_IMAGES]
    build = {"train": {view: [seed for _, v, seed in sample if v == view] for view in VIEWS}}
    return _cached(DATA / f"synth-v2-calibration-{len(sample)}", build)


def scenario_clip(name: str) -> Path:
    """``training/synth/scenarios/<name>.mp4``, rendered first when missing (as ``make scenarios``)."""
    from training.synth.scenario import ensure_rendered

    folder = _common.REPO / "training" / "synth" / "scenarios"
    clip = folder / f"{name}.mp4"
    if not clip.is_file():
        _common.log(f"rendering the scenario clip {clip.relative_to(_common.REPO)} (once) ...")
    return ensure_rendered(folder / f"{name}.yaml", folder)


def needs(bench: str, what: str) -> NoReturn:
    """Exit 2 with what ``bench`` needs and cannot make itself."""
    _common.log(f"{bench}: cannot run here: {what}")
    raise SystemExit(2)


def require_postgres(bench: str, admin_url: str) -> None:
    """Exit 2 naming the URL when no PostgreSQL answers there (the benches create their own database)."""
    import psycopg

    try:
        psycopg.connect(admin_url, autocommit=True, connect_timeout=3).close()
    except psycopg.OperationalError as err:
        first = (str(err).strip().splitlines() or ["?"])[0]
        needs(bench, f"it needs a PostgreSQL: {admin_url} does not answer ({first}); start one, or pass one")
