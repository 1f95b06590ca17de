"""The data team's loop end to end (README "The data team's loop"), on real services:

two scenario cameras → `citywatch run` (collecting) → Mosquitto → case API; reviewers reject a false
positive and correct a box through the API → `citywatch collect sync` puts the verdicts on the collected
frames → `citywatch collect export` opens in a real Label Studio with our boxes as predictions → a
labeller's export comes back with `collect import` → `citywatch dataset build` holds the correction and the
negative → a short training run registers a new version with its card → the gate refuses it on the
holdout, then accepts it within a tolerance it meets → a running detector switches to it without a gap in
its samples and its events carry the new version; rollback the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from detector.contracts.frames import FrameRecord, read_record, sidecars
from detector.contracts.manifest import load_manifest, models_dir
from tests.e2e.helpers import REPO, make_test_config
from tests.e2e.test_end_to_end import run_detector, settled
from tests.labelstudio import LabelStudio, LabelStudioError, label_studio, unavailable_reason
from tests.mosquitto import account

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]

STREAMS = ["cam-demo-01", "cam-demo-02"]  # street-demo (2026-03-02) and street-dusk (2026-03-03)
REVIEWER = {"X-API-Key": "citywatch-dev-reviewer-key"}
FOLLOWING = {"citywatch-synth", "citywatch-bureau"}  # the default and the candidate (`model: {name: null}`)


def citywatch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "detector.commands.cli", *args],
        cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return run


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, f"{run.args}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def call(resp: httpx.Response) -> Any:
    assert resp.is_success, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text[:2000]}"
    return resp.json()


@pytest.fixture(scope="module")
def labelstudio_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collect")


@pytest.fixture(scope="module")
def labelstudio(labelstudio_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no Label Studio here: {reason}")
    try:
        with label_studio(tmp_path_factory.mktemp("labelstudio"), labelstudio_files) as ls:
            yield ls
    except LabelStudioError as exc:
        pytest.skip(f"Label Studio did not start: {exc}")


def copy_models(dest: Path, also: list[str]) -> str:
    """A models folder holding the shipped default model (the one a candidate must beat) and the models
    ``also`` names (the COCO model of the parking rule); returns the default's name@version."""
    manifest = load_manifest()
    entries = [manifest.get(None), *(manifest.get(ref) for ref in also)]
    src = models_dir()
    dest.mkdir(parents=True)
    for entry in entries:
        for rel in {entry.file, entry.card, *entry.exports.values()}:
            if (src / rel).is_dir():
                shutil.copytree(src / rel, dest / rel)
            elif (src / rel).is_file():
                shutil.copy2(src / rel, dest / rel)
    data = {
        "default": entries[0].ref,
        "models": [e.model_dump(mode="json", exclude_none=True) for e in entries],
    }
    (dest / "manifest.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return entries[0].ref


def review_cases(api: str, got: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reject one case as a false positive, correct another's box and class, register the rest."""
    rejected = next(c for c in got if c["rule"] == "unclean_road")
    corrected = next(c for c in got if c["rule"] == "illegal_structure")
    with httpx.Client(base_url=api, headers=REVIEWER, timeout=30) as c:
        call(c.post(f"/cases/{rejected['id']}/reject", json={"reason": "false_positive", "note": "a shadow"}))
        jpeg = c.get(f"/cases/{corrected['id']}/evidence").content
        import cv2
        import numpy as np

        h, w = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        x1, y1, x2, y2 = corrected["bbox"]
        desk = [round(x1 * w) + 4, round(y1 * h) + 3, round(x2 * w) - 2, round(y2 * h) - 1]
        call(c.post(f"/cases/{corrected['id']}/correct", json={"label": "structure", "bbox": desk}))
        corrected["desk_bbox"] = desk
        for case in got:
            if case["id"] not in (rejected["id"], corrected["id"]):
                call(c.post(f"/cases/{case['id']}/register", json={"note": "seen"}))
    return rejected, corrected


def frames_of(collect: Path) -> dict[str, tuple[Path, FrameRecord]]:
    return {read_record(p).id: (p, read_record(p)) for p in sidecars(collect)}


def by_violation(collect: Path, vid: str) -> FrameRecord:
    found = [r for _, r in frames_of(collect).values() if r.violation_id == vid]
    assert len(found) == 1, (vid, found)
    return found[0]


def label_in_label_studio(ls: LabelStudio, export: Path, tmp_path: Path) -> tuple[Path, set[str]]:
    """Our export opened in Label Studio: every task shows our boxes as its prediction; a labeller accepts
    two frames (one box moved on the first) and skips the rest; returns Label Studio's export file."""
    tasks = json.loads((export / "tasks.json").read_text())
    with ls.client() as c:
        config = (export / "labeling_config.xml").read_text()
        pid = call(c.post("/api/projects", json={"title": "citywatch loop", "label_config": config}))["id"]
        storage = {
            "project": pid,
            "path": str(ls.files_root / "collect"),
            "title": "frames",
            "use_blob_urls": True,
        }
        call(c.post("/api/storages/localfiles", json=storage))
        with (export / "tasks.json").open("rb") as f:
            imported = call(c.post(f"/api/projects/{pid}/import", files={"file": ("tasks.json", f)}))
        assert imported["task_count"] == len(tasks)
        listed = call(c.get("/api/tasks", params={"project": pid, "page_size": 1000}))["tasks"]
        by_frame = {t["data"]["frame_id"]: t for t in listed}
        for task in tasks:  # what we sent is what the labeller sees, as predictions
            shown = call(c.get(f"/api/tasks/{by_frame[task['data']['frame_id']]['id']}"))
            if task.get("predictions"):
                assert len(shown["predictions"]) == 1
                assert len(shown["predictions"][0]["result"]) == len(task["predictions"][0]["result"])
        chosen = [t for t in listed if t["data"].get("verdict") is None and t["data"]["reasons"] != ["case"]][
            :2
        ]
        assert len(chosen) == 2, [t["data"] for t in listed]
        for n, t in enumerate(chosen):
            pred = call(c.get(f"/api/tasks/{t['id']}"))["predictions"][0]
            result = [{k: v for k, v in r.items() if k != "score"} for r in pred["result"]]
            if n == 0 and result:
                result[0]["value"] = {**result[0]["value"], "x": result[0]["value"]["x"] + 1.0}
            body = {"result": result, "was_cancelled": False, "parent_prediction": pred["id"]}
            call(c.post(f"/api/tasks/{t['id']}/annotations", json=body))
        resp = c.get(
            f"/api/projects/{pid}/export", params={"exportType": "JSON", "download_all_tasks": "true"}
        )
        assert resp.status_code == 200, resp.text[:2000]
    out = tmp_path / "label-studio-export.json"
    out.write_bytes(resp.content)
    return out, {t["data"]["frame_id"] for t in chosen}


def test_from_the_desk_to_a_promoted_model_and_back(
    api: str,
    mqtt_broker: tuple[str, int],
    topic_prefix: str,
    tmp_path: Path,
    labelstudio: LabelStudio,
    labelstudio_files: Path,
    default_model_ready: None,
) -> None:
    # Label Studio serves the collection's frames from where they lie: its document root is the
    # collection's parent, its Local files storage the collection (`collect export`'s default)
    collect = labelstudio_files / "collect"
    broker = {"host": mqtt_broker[0], "port": mqtt_broker[1], "prefix": topic_prefix}
    cfg_path = make_test_config(tmp_path, STREAMS, **broker, worker=f"loop-{uuid.uuid4().hex[:8]}")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["collect"] = {**cfg.get("collect", {}), "enabled": True, "dir": str(collect)}
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))

    # 1. cameras → cases, the collector keeps the frames
    run_detector(cfg_path, tmp_path, "collect-run")
    got = settled(api, 5)
    assert {c["stream"] for c in got} == set(STREAMS), got

    # 2. the desk: one false positive rejected, one box corrected, the rest registered
    rejected, corrected = review_cases(api, got)
    kept = {r.violation_id for _, r in frames_of(collect).values()}
    assert {rejected["violation_id"], corrected["violation_id"]} <= kept  # the case frames are collected

    # 3. the verdicts onto the collected frames
    ok(
        citywatch(
            "collect",
            "sync",
            "--api",
            api,
            "--dir",
            str(collect),
            env={"CITYWATCH_API_KEY": REVIEWER["X-API-Key"]},
        )
    )
    rec = by_violation(collect, rejected["violation_id"])
    assert rec.review is not None and rec.review.verdict == "rejected" and "rejected" in rec.reasons
    rec = by_violation(collect, corrected["violation_id"])
    assert rec.review is not None and rec.review.verdict == "corrected"
    assert list(rec.review.xyxy or ()) == pytest.approx(corrected["desk_bbox"], abs=1.0)

    # 4. out to Label Studio and back
    export = tmp_path / "ls-tasks"
    ok(citywatch("collect", "export", "--format", "labelstudio", "--out", str(export), "--dir", str(collect)))
    ls_export, labelled = label_in_label_studio(labelstudio, export, tmp_path)
    ok(citywatch("collect", "import", str(ls_export), "--format", "labelstudio", "--dir", str(collect)))
    frames = frames_of(collect)
    assert {fid for fid, (_, r) in frames.items() if r.labels is not None} == labelled

    # 5. the dataset: the labelled frames, the correction, the negative; split by camera and day
    ds = tmp_path / "dataset"
    card = json.loads(
        ok(citywatch("dataset", "build", "--out", str(ds), "--collection", str(collect), "--json"))
    )
    assert card["corrections"] == 1 and card["negatives"] == 1, card
    assert sum(s.get("labelled", 0) for s in card["sources"].values()) == 2
    days = {s: set(card["camera_days"][s]) for s in ("train", "test")}
    assert days["train"] and days["test"] and not days["train"] & days["test"]

    # 6. a short training run registers a new version with its card
    models = tmp_path / "models"
    sections = cfg.get("rule_models", {}).values()  # their models, and those of their zoomed passes
    current = copy_models(models, [ref for m in sections for ref in (m["name"], m.get("zoom_model")) if ref])
    env = {"CITYWATCH_MODELS_DIR": str(models)}
    train = ["train", "--data", str(ds / "dataset.yaml"), "--imgsz", "160", "--epochs", "1", "--batch", "4"]
    train += ["--workers", "0", "--name", "citywatch-bureau", "--version", "0.1.0"]
    ok(citywatch(*train, "--project", str(tmp_path / "runs"), env=env))
    entry = load_manifest(models / "manifest.yaml").get("citywatch-bureau@0.1.0")
    assert entry.data_hash and (models / entry.card).is_file()
    assert load_manifest(models / "manifest.yaml").default == current  # registered, not rolled out

    # 7. the gate: refused on the holdout, accepted within a tolerance it meets
    gate = ["models", "promote", "citywatch-bureau@0.1.0", "--data", str(ds / "dataset.yaml"), "--json"]
    refused = citywatch(*gate, "--tolerance", "0.02", env=env)
    assert refused.returncode == 1, refused.stderr[-3000:]
    verdict = json.loads(refused.stdout)
    assert not verdict["passed"] and verdict["failures"], verdict
    drop = max(f["drop"] for f in verdict["failures"] if f["drop"] is not None)
    assert load_manifest(models / "manifest.yaml").default == current

    # 8. a running detector takes the promotion and the rollback without a restart: the clip played at
    # twice its speed, short dwell and grace so that what each model sees shows in the events within seconds
    swap_cfg = yaml.safe_load(cfg_path.read_text())
    swap_cfg["collect"]["enabled"] = False
    swap_cfg["models"] = {"watch_s": 0.5}
    quick = {r: {"dwell_s": 10, "grace_s": 4} for r in ("illegal_parking", "street_vending", "unclean_road")}
    swap_cfg["streams"] = [
        {**s, "file_speed": 2.0, "rules": quick} for s in swap_cfg["streams"] if s["id"] == STREAMS[0]
    ]
    swap_path = tmp_path / "swap.yaml"
    swap_path.write_text(yaml.safe_dump(swap_cfg, allow_unicode=True, sort_keys=False))
    name, version = current.split("@")
    log_path = tmp_path / "swap-run.log"
    with events_on(mqtt_broker, topic_prefix) as events, log_path.open("w") as log:
        detector = [sys.executable, "-m", "detector.commands.cli", "run", "--config", str(swap_path)]
        proc = subprocess.Popen(
            [*detector, "--exit-when-done"],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: any(e["event"] == "opened" for e in events), proc, log_path, "a case opened")
            accepted = citywatch(*gate, "--tolerance", f"{drop + 0.01:.3f}", "--by", "e2e", env=env)
            assert accepted.returncode == 0, accepted.stdout[-3000:] + accepted.stderr[-3000:]
            assert json.loads(accepted.stdout)["passed"]
            wait_for(lambda: any(e["model"]["version"] == "0.1.0" for e in events), proc, log_path,
                     "an event of the candidate")  # fmt: skip
            ok(citywatch("models", "rollback", "--by", "e2e", env=env))
            wait_for(
                lambda: versions(events)[-1:] == [version],
                proc,
                log_path,
                "an event of the rolled-back model",
            )
            assert proc.wait(timeout=300) == 0, log_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()
    assert "now running citywatch-bureau 0.1.0" in text and f"now running {name} {version}" in text, text[
        -3000:
    ]
    # new events carry the loaded model: the default, then the candidate, then the default again
    assert squeeze(versions(events)) == [version, "0.1.0", version], versions(events)
    bureau = load_manifest(models / "manifest.yaml").get("citywatch-bureau@0.1.0")
    assert {e["model"]["sha256"] for e in events if e["model"]["version"] == "0.1.0"} <= {
        bureau.sha256,
        *bureau.checksums.values(),
    }
    found = re.search(rf"stream {STREAMS[0]}: (\d+) samples read, (\d+) processed, (\d+) dropped", text)
    assert found, text[-3000:]
    read, processed, dropped = (int(v) for v in found.groups())
    assert read == processed > 0 and dropped == 0, found.group(0)  # no gap: every sample got its detections
    manifest = load_manifest(models / "manifest.yaml")
    assert [(h.action, h.by) for h in manifest.history][-2:] == [("promote", "e2e"), ("rollback", "e2e")]
    assert manifest.default == current


def versions(events: list[dict[str, Any]]) -> list[str]:
    """The model version of each event of a rule the default model serves (the parking rule has its own)."""
    return [str(e["model"]["version"]) for e in list(events) if e["model"]["name"] in FOLLOWING]


def squeeze(seq: list[str]) -> list[str]:
    return [v for i, v in enumerate(seq) if i == 0 or seq[i - 1] != v]


def wait_for(
    pred: Any, proc: subprocess.Popen[bytes], log_path: Path, what: str, timeout: float = 240.0
) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None or pred(), (
            f"the detector ended before {what}:\n{log_path.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.2)


@contextmanager
def events_on(broker: tuple[str, int], prefix: str) -> Iterator[list[dict[str, Any]]]:
    """Every violation event published under ``prefix``, in the order the broker delivers them."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"loop-{uuid.uuid4().hex[:8]}")
    login = account("api")  # CITYWATCH_TEST_BROKER=acl: the API's account reads the events
    if login is not None:
        sub.username_pw_set(login[0], login[1])
    sub.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(*broker)
    sub.loop_start()
    try:
        sub.subscribe(f"{prefix}/violations/#", qos=1)
        assert subscribed.wait(10)
        yield got
    finally:
        sub.loop_stop()
        sub.disconnect()
