"""``citywatch survey`` with the real detection model on rendered flights (acceptance of issue 7).

The model is the manifest's default, or the file in ``CITYWATCH_SURVEY_MODEL``; without either the
tests skip and say so. Flights as in ``test_survey_flight.py``: A, then B a month later with three sheds
added and one removed.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import pytest

from detector.survey.cli import main as survey_main
from detector.survey.telemetry import haversine_m
from training.synth.flight import FlightScene, FlightSpec, render_flight

pytestmark = pytest.mark.slow


def _model() -> str:
    path = os.environ.get("CITYWATCH_SURVEY_MODEL")
    if path:
        return path
    from detector.contracts.manifest import ManifestError, load_manifest

    try:
        return load_manifest().get(None).name
    except ManifestError as exc:
        pytest.skip(
            f"no detection model: register one in models/manifest.yaml or set CITYWATCH_SURVEY_MODEL ({exc})"
        )


@pytest.fixture(scope="module")
def surveyed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model = _model()
    root = tmp_path_factory.mktemp("model-flights")
    scene = FlightScene.generate(3)
    render_flight(scene, root / "a")
    later = FlightSpec(altitude_m=110.0, heading_deg=0.0, seed=1, start=datetime(2024, 6, 1, 9, 30))
    render_flight(scene.variant(), root / "b", spec=later)
    args = ["--model", model, "--quiet"]
    assert survey_main([str(root / "a" / "DJI_0001.mp4"), "--out", str(root / "out-a"), *args]) == 0
    assert (
        survey_main(
            [
                str(root / "b" / "DJI_0001.mp4"),
                "--out",
                str(root / "out-b"),
                "--baseline",
                str(root / "out-a"),
                *args,
            ]
        )
        == 0
    )
    return {
        "root": root,
        **{k: json.loads((root / f"out-{k}" / "survey.geojson").read_text()) for k in "ab"},
        **{f"truth_{k}": json.loads((root / k / "truth.json").read_text())["objects"] for k in "ab"},
    }


def _dist(o: dict[str, Any], f: dict[str, Any]) -> float:
    lon, lat = f["geometry"]["coordinates"]
    return haversine_m(o["lat"], o["lon"], lat, lon)


def test_flight_a_positions_recall_and_no_duplicates(surveyed):
    truth, feats = surveyed["truth_a"], surveyed["a"]["features"]
    errors, dups = [], []
    for o in truth:
        near = sorted(
            _dist(o, f) for f in feats if f["properties"]["class"] == o["cls"] and _dist(o, f) <= 5.0
        )
        if near:
            errors.append(near[0])
        if len(near) > 1:
            dups.append(o["id"])
    errors.sort()
    assert errors and errors[len(errors) // 2] <= 3.0, errors
    assert len(errors) / len(truth) >= 0.9, f"recall {len(errors)}/{len(truth)}"
    assert not dups, f"reported more than once: {dups}"


def test_flight_b_reports_the_three_new_sheds_and_the_removed_one(surveyed):
    truth_a = {o["id"]: o for o in surveyed["truth_a"]}
    truth_b = {o["id"]: o for o in surveyed["truth_b"]}
    feats = surveyed["b"]["features"]

    def nearest(f: dict[str, Any], truth: dict[str, dict[str, Any]]) -> tuple[str, float]:
        k = min(truth, key=lambda i: _dist(truth[i], f))
        return k, _dist(truth[k], f)

    new = [nearest(f, truth_b) for f in feats if f["properties"]["status"] == "new"]
    gone = [nearest(f, truth_a) for f in feats if f["properties"]["status"] == "gone"]
    assert sorted(k for k, d in new) == ["new1", "new2", "new3"], new
    assert all(d <= 5.0 for _, d in new), new
    assert [k for k, _ in gone] == sorted(set(truth_a) - set(truth_b)), gone
