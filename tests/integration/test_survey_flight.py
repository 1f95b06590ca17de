"""Surveys of rendered drone flights with known object positions (training.synth.flight).

Detections are the renderer's own boxes (BoxReplaySpec), so these tests judge telemetry, sampling,
geo-referencing, de-duplication, change detection, resume, Ray and publishing — not a model. The
model on the same flights is in ``test_survey_model.py`` (slow).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import statistics
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from detector.survey.cli import main as survey_main
from detector.survey.errors import SurveyResumeError
from detector.survey.replay import BoxReplaySpec
from detector.survey.runner import SurveyOptions, run_survey
from detector.survey.telemetry import haversine_m
from training.synth.flight import FlightScene, FlightSpec, render_flight

SEED = 3


@pytest.fixture(scope="module")
def flights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Flight A (east-west lines, 100 m) and, a month later, flight B over the same block with three
    sheds added and one removed (north-south lines, 110 m)."""
    root = tmp_path_factory.mktemp("flights")
    scene = FlightScene.generate(SEED)
    render_flight(scene, root / "a")
    later = FlightSpec(altitude_m=110.0, heading_deg=0.0, seed=1, start=datetime(2024, 6, 1, 9, 30))
    render_flight(scene.variant(), root / "b", spec=later)
    return {"a": root / "a", "b": root / "b"}


def survey(src: Path, out: Path, **kw: Any) -> Any:
    opts = SurveyOptions(out=out, progress=False, **kw)
    return run_survey(src / "DJI_0001.mp4", BoxReplaySpec(str(src / "truth.json")), opts)


def score(src: Path, features: list[dict[str, Any]]) -> dict[str, Any]:
    """Median position error, recall and duplicates against truth.json (a match: same class, <= 5 m)."""
    truth = json.loads((src / "truth.json").read_text())["objects"]
    found = [f for f in features if f["properties"]["status"] != "gone"]

    def dist(o: dict[str, Any], f: dict[str, Any]) -> float:
        lon, lat = f["geometry"]["coordinates"]
        return haversine_m(o["lat"], o["lon"], lat, lon)

    errors, dups, hit = [], 0, set()
    for o in truth:
        near = [(dist(o, f), f["properties"]["id"]) for f in found if f["properties"]["class"] == o["cls"]]
        near = [n for n in near if n[0] <= 5.0]
        if near:
            errors.append(min(near)[0])
            hit.update(i for _, i in near)
            dups += len(near) - 1
    return {
        "median_m": statistics.median(errors) if errors else None,
        "recall": len(errors) / len(truth),
        "duplicates": dups,
        "unmatched": [f["properties"]["id"] for f in found if f["properties"]["id"] not in hit],
    }


def test_flight_a_every_object_once_at_the_right_place(flights, tmp_path):
    res = survey(flights["a"], tmp_path / "a")
    s = score(flights["a"], res.features)
    assert s["median_m"] <= 3.0 and s["recall"] >= 0.9 and s["duplicates"] == 0 and not s["unmatched"], s
    assert res.summary["frames"]["unplaced"] == 0
    assert res.summary["frames"]["sampled"] < res.summary["frames"]["candidates"]  # sampled by distance
    # outputs: one feature per object with what a reviewer needs, evidence on disk, an offline report
    doc = json.loads((tmp_path / "a" / "survey.geojson").read_text())
    assert doc["datum"].startswith("WGS84") and "Geod" in doc["method"]["georeferencing"]
    for f in doc["features"]:
        p = f["properties"]
        assert {"class", "confidence", "uncertainty_m", "evidence", "status"} <= set(p)
        assert (tmp_path / "a" / p["evidence"]).read_bytes()[:2] == b"\xff\xd8"
        assert p["status"] == "new" and 0.5 < p["uncertainty_m"] < 6
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<svg" in html and html.count("data:image/jpeg;base64,") == len(doc["features"])
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert json.loads((tmp_path / "a" / "flight.geojson").read_text())["features"][0]["geometry"]["type"] == (
        "LineString"
    )


def test_flight_b_against_a_reports_exactly_the_changes(flights, tmp_path):
    survey(flights["a"], tmp_path / "a")
    res = survey(flights["b"], tmp_path / "b", baseline=tmp_path / "a")
    truth_b = {o["id"]: o for o in json.loads((flights["b"] / "truth.json").read_text())["objects"]}
    truth_a = {o["id"]: o for o in json.loads((flights["a"] / "truth.json").read_text())["objects"]}
    by_status: dict[str, list[dict[str, Any]]] = {}
    for f in res.features:
        by_status.setdefault(f["properties"]["status"], []).append(f)

    def nearest(f: dict[str, Any], truth: dict[str, dict[str, Any]]) -> str:
        lon, lat = f["geometry"]["coordinates"]
        return min(truth, key=lambda k: haversine_m(truth[k]["lat"], truth[k]["lon"], lat, lon))

    assert sorted(nearest(f, truth_b) for f in by_status["new"]) == ["new1", "new2", "new3"]
    assert [nearest(f, truth_a) for f in by_status["gone"]] == sorted(set(truth_a) - set(truth_b))
    assert len(by_status["known"]) == len(truth_a) - 1
    assert all(f["properties"]["class"] == "structure" for f in by_status["new"] + by_status["gone"])
    assert res.summary["baseline"] == {"objects": len(truth_a), "gone": 1, "not_covered": 0, "faint": 0}
    # known objects keep the id they had in the baseline survey
    ids_a = {
        f["properties"]["id"] for f in json.loads((tmp_path / "a" / "survey.geojson").read_text())["features"]
    }
    assert {f["properties"]["id"] for f in by_status["known"]} <= ids_a


def _killed_run(src: str, out: str, after: int) -> None:
    done = [0]

    def on_frame(_index: int) -> None:
        done[0] += 1
        if done[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)

    survey(Path(src), Path(out), on_frame=on_frame)


def test_killed_halfway_and_resumed_gives_the_same_geojson(flights, tmp_path):
    whole = survey(flights["a"], tmp_path / "whole")
    half = whole.summary["frames"]["sampled"] // 2
    proc = multiprocessing.get_context("fork").Process(
        target=_killed_run, args=(str(flights["a"]), str(tmp_path / "killed"), half)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "survey.geojson").exists()
    with pytest.raises(SurveyResumeError, match="--resume"):
        survey(flights["a"], tmp_path / "killed")  # not silently started over
    with pytest.raises(SurveyResumeError, match="different"):
        survey(flights["a"], tmp_path / "killed", resume=True, every_m=5.0)
    resumed = survey(flights["a"], tmp_path / "killed", resume=True)
    assert resumed.summary["frames"]["frames_resumed"] == half
    assert resumed.summary["frames"]["frames_processed_now"] == whole.summary["frames"]["sampled"] - half
    assert (tmp_path / "killed" / "survey.geojson").read_bytes() == (
        tmp_path / "whole" / "survey.geojson"
    ).read_bytes()


def test_telemetry_shorter_than_the_video_lists_the_frames_it_could_not_place(flights, tmp_path):
    src = tmp_path / "cut"
    src.mkdir()
    for name in ("DJI_0001.mp4", "truth.json"):
        (src / name).symlink_to(flights["a"] / name)
    blocks = (flights["a"] / "DJI_0001.SRT").read_text().split("\n\n")
    (src / "DJI_0001.SRT").write_text("\n\n".join(blocks[:20]) + "\n\n21\n00:00:20,000 --> 00:00:2")
    res = survey(src, tmp_path / "out")
    assert res.summary["frames"]["unplaced"] == res.summary["frames"]["candidates"] - 21
    assert any("shorter than the video" in line for line in res.summary["unplaced"])
    assert any("skipped" in w for w in res.summary["telemetry_warnings"])


def test_cli_errors_are_actionable(tmp_path, capsys):
    video = tmp_path / "DJI_0009.mp4"
    video.write_bytes(b"\x00" * 100)
    assert survey_main([str(video), "--out", str(tmp_path / "o"), "--model", str(video), "--quiet"]) == 2
    assert "--srt" in capsys.readouterr().err


@pytest.mark.mqtt
def test_publish_one_case_per_new_structure(flights, tmp_path, mqtt_broker, topic_prefix):
    from detector.delivery.mqtt import MqttSettings
    from detector.survey.publish import CaseSettings, case_events, publish_events

    survey(flights["a"], tmp_path / "a")
    res = survey(flights["b"], tmp_path / "b", baseline=tmp_path / "a")
    events = case_events(res.features, tmp_path / "b", res.frame_sizes, res.model, CaseSettings())
    assert len(events) == 3 and {e["rule"] for e in events} == {"illegal_structure"}
    again = case_events(res.features, tmp_path / "b", res.frame_sizes, res.model, CaseSettings())
    assert [e["violation_id"] for e in again] == [e["violation_id"] for e in events]  # no second case
    host, port = mqtt_broker
    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    sub.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(host, port)
    sub.loop_start()
    try:
        sub.subscribe(f"{topic_prefix}/violations/#", qos=1)
        assert subscribed.wait(5)
        settings = MqttSettings(
            host=host, port=port, worker=f"survey-{uuid.uuid4().hex[:6]}", topic_prefix=topic_prefix
        )
        stats = publish_events(events, settings, tmp_path / "outbox.sqlite3", flush_s=20)
        assert stats == {"published": 3, "pending": 0, "acked": 3}
        deadline = threading.Event()
        for _ in range(50):
            if len(got) >= 3:
                break
            deadline.wait(0.1)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert sorted(e["violation_id"] for e in got) == sorted(e["violation_id"] for e in events)
    assert all(e["event"] == "opened" and e["evidence"]["jpeg"] and e["location"]["lat"] for e in got)


@pytest.mark.slow
def test_the_same_survey_on_local_ray(flights, tmp_path):
    ray = pytest.importorskip("ray")
    local = survey(flights["a"], tmp_path / "local")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = survey(flights["a"], tmp_path / "ray", ray_address="local", ray_actors=2, ray_batch=3)
    finally:
        ray.shutdown()
    assert on_ray.summary["frames"]["frames_processed_now"] == local.summary["frames"]["sampled"]
    assert (tmp_path / "ray" / "survey.geojson").read_bytes() == (
        tmp_path / "local" / "survey.geojson"
    ).read_bytes()
