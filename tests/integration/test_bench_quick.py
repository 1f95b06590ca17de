"""The benches prepare what they need: ``python bench/X.py --quick`` in a fresh copy of the repository
(the tracked files only: no ``var/``, no ``datasets/``, no rendered clips) prints its JSON object.

Only the benches whose quick run takes seconds run here (README "Performance" lists every bench's
quick run and what it needs); the others are run by hand the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

TILING_KEYS = {"model", "cpu", "frame", "grids", "clips"}
CASES_QUERY_KEYS = {"bench", "cases", "backend", "seed_s", "repeat", "count_limit", "p50_ms", "p95_ms",
                    "max_ms", "queries"}  # fmt: skip
INGEST_KEYS = {"bench", "broker", "cpus", "results"}
REAL_LABELS_KEYS = {"folder", "model", "images", "vehicles", "vehicle_recall", "false_vehicles_per_image",
                    "invented_per_image", "invented_total"}  # fmt: skip
FLEET_KEYS = {"bench", "cpu", "cores", "streams", "workers", "cpus_per_worker", "sample_interval_s", "clip_s",
              "single", "fleet", "overhead", "overhead_cpu", "streams_per_worker", "streams_per_core",
              "place_s", "move_s", "declared_cost", "move"}  # fmt: skip


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files as a clone has them (tracked, plus new files not ignored), nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    root = tmp_path_factory.mktemp("fresh-clone")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is not there
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    assert not (root / "var").exists() and not (root / "datasets").exists()
    assert not list((root / "training" / "synth" / "scenarios").glob("*.mp4"))
    return root


@pytest.fixture(scope="module")
def pg_admin_url() -> str:
    import psycopg

    url = os.environ.get("CITYWATCH_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {url} ({str(exc).strip()[:200]}); set CITYWATCH_TEST_PG_ADMIN_URL")
    return url


def bench(
    root: Path, name: str, *args: str, timeout: float = 240, quick: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(root / "bench" / f"{name}.py"), *(["--quick"] if quick else []), *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def result(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert run.returncode == 0, run.stderr[-4000:]
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def test_tiling(fresh_copy: Path) -> None:
    out = result(bench(fresh_copy, "tiling"))
    assert set(out) == TILING_KEYS
    assert [(row["grid"], row.get("zoom_imgsz")) for row in out["grids"]] == [
        (1, None),
        (2, None),
        (3, None),
        (1, 960),
    ]
    assert all(row["ms_per_frame"] > 0 and row["vehicles_ge_0_5"] for row in out["grids"])
    # --quick: the real street clip, sampled like a stream, through the zoomed pass and without it
    [clip] = out["clips"]
    assert clip["clip"] == "street_curbside_parked_cars_fixedcam.mp4" and clip["samples"] > 30
    assert 0.0 < clip["zoomed_share"] <= 1.0 and clip["ms_plain"] > 0 and clip["ratio"] > 0


@pytest.mark.postgres
def test_cases_query(fresh_copy: Path, pg_admin_url: str) -> None:
    out = result(bench(fresh_copy, "cases_query", "--admin-url", pg_admin_url))
    assert set(out) == CASES_QUERY_KEYS
    assert out["cases"] == 20_000 and out["repeat"] == 3 and len(out["queries"]) == 12


@pytest.mark.postgres
@pytest.mark.mqtt  # the bench starts its own mosquitto: without one it says so and exits 2
def test_ingest(fresh_copy: Path, pg_admin_url: str) -> None:
    out = result(bench(fresh_copy, "ingest", "--pg-admin", pg_admin_url))
    assert set(out) == INGEST_KEYS
    assert [(r["backend"], r["events"], r["lost"], r["duplicates"]) for r in out["results"]] == [
        ("sqlite", 2000, 0, 0),
        ("postgresql", 2000, 0, 0),
    ]


def test_real_labels_quick_runs_on_the_bundled_real_tiles(fresh_copy: Path) -> None:
    """A fresh clone has no datasets/: --quick measures the 8 real aerial tiles bundled with the bench."""
    out = result(bench(fresh_copy, "real_labels"))
    assert set(out) == REAL_LABELS_KEYS
    assert Path(out["folder"]).parts[-3:] == ("bench", "data", "real-aerial-quick")
    labelled = sum(
        len(f.read_text().split("\n")) - 1 for f in (fresh_copy / out["folder"] / "labels").glob("*.txt")
    )
    assert out["images"] == 8 and out["vehicles"] == labelled > 0
    assert 0.0 <= out["vehicle_recall"] <= 1.0 and out["model"].startswith("citywatch-synth@")


def test_real_labels_full_run_without_the_real_images_says_what_to_fetch(fresh_copy: Path) -> None:
    run = bench(fresh_copy, "real_labels", quick=False)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stdout == ""
    assert "jekhor/aerial-cars-dataset" in run.stderr and "training.tiles" in run.stderr


def test_real_labels_on_a_yolo_folder(fresh_copy: Path, tmp_path: Path) -> None:
    """The measurement itself, on a labelled folder of synthetic drone views (class 0 = vehicle)."""
    from training.synth.canvas import CLASSES
    from training.synth.dataset import yolo_lines
    from training.synth.scenes import drone_sample

    assert CLASSES[0] == "vehicle"
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    vehicles = 0
    for seed in range(3):
        image, labels = drone_sample(25_000_000 + seed)
        cars = [label for label in labels if label[0] == "vehicle"]  # a real folder labels vehicles only
        cv2.imwrite(str(tmp_path / "images" / f"{seed}.jpg"), image)
        (tmp_path / "labels" / f"{seed}.txt").write_text(yolo_lines(cars, image.shape[1], image.shape[0]))
        vehicles += len(cars)
    out = result(bench(fresh_copy, "real_labels", str(tmp_path)))
    assert set(out) == REAL_LABELS_KEYS
    assert out["images"] == 3 and out["vehicles"] == vehicles > 0
    assert out["model"].startswith("citywatch-synth@")


@pytest.mark.mqtt  # the bench starts its own mosquitto (else it uses 127.0.0.1:1883, else exits 2)
def test_fleet(fresh_copy: Path, tmp_path: Path) -> None:
    """4 streams through the single detector and a local Ray cluster of 2 worker nodes. A copy of the fresh
    copy gets the scenario clips this session rendered (the autouse ``scenario_clips``): rendering them again
    would take the bench from 30 s to about 2 minutes; ``bench/capacity.py`` renders them through the same
    ``bench/_data.scenario_clip``."""
    pytest.importorskip("ray", reason="the fleet runs on Ray: pip install 'citywatch[ray]'")
    root = tmp_path / "clone"
    shutil.copytree(fresh_copy, root)
    scenarios = Path("training") / "synth" / "scenarios"
    for clip in ("street-demo.mp4", "street-dusk.mp4"):
        shutil.copy2(REPO / scenarios / clip, root / scenarios / clip)
    out = result(bench(root, "fleet"))
    assert set(out) == FLEET_KEYS
    assert (out["streams"], out["workers"], out["clip_s"]) == (4, 2, 30.0)
    assert out["move_s"] is None and out["move"] is None  # --quick measures no node's death
    for side in ("single", "fleet"):
        assert out[side]["samples"] > 0 and out[side]["samples_per_s"] > 0, out[side]
    assert sorted(out["fleet"]["streams_per_node"].values()) == [2, 2], out["fleet"]
    assert out["streams_per_worker"] > 0 and out["place_s"] > 0 and out["declared_cost"]["ratio"] > 0
