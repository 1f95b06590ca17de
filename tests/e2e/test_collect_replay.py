"""The collector on a real replay: the street-demo scenario clip through the deployment's models with
`collect:` on keeps the clean frame of every opened case (its violation_id in the sidecar, a JPEG beside
it), and a second stream with `collect: false` fed the same frames and detections keeps nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import pytest

from detector.collect.collector import Collector
from detector.collect.record import read_record, sidecars
from detector.commands.replay import replay
from detector.config import load_config
from detector.config.collect import CollectConfig
from detector.delivery.publisher import JsonlSink
from detector.inference.rule_models import load_rule_models
from detector.pipeline import StreamPipeline
from tests.e2e.helpers import REPO, SCENARIOS

pytestmark = pytest.mark.slow


def test_replay_keeps_case_frames_and_nothing_of_a_collect_false_stream(
    tmp_path: Path, default_model_ready: None
) -> None:
    video = SCENARIOS / "street-demo.mp4"
    assert video.is_file(), f"{video} is missing: run `make scenarios`"
    loaded = load_config(REPO / "streams.yaml")
    cfg = loaded.config
    stream = cfg.stream("cam-demo-01")
    quiet = stream.model_copy(update={"id": "cam-quiet", "collect": False})
    # a queue longer than the clip's samples: no frame is dropped however slow the disk
    settings = {**cfg.collect.model_dump(), "dir": tmp_path / "collect", "queue": 1024}
    collect = CollectConfig.model_validate(settings)
    # frame time of the clip may lie years back: a clock at 0 keeps the age limits out of this test
    collector = Collector.from_config(collect, clock=lambda: 0.0).start()
    models = load_rule_models(cfg, 2, loaded.base_dir, [stream])
    try:
        with JsonlSink(tmp_path / "a.jsonl") as sink_a, JsonlSink(tmp_path / "b.jsonl") as sink_b:
            pipe = models.pipeline(stream, sink_a, cfg.evidence)
            plan = models.plan(stream)
            other = StreamPipeline(quiet, plan.default, sink_b, cfg.evidence, plan.rule_infos)
            assert collector.attach(pipe) and not collector.attach(other)
            observe = pipe.observer
            assert observe is not None
            quiet_events: list[dict[str, Any]] = []

            def both(p: StreamPipeline, ts: float, image: Any, dets: Any, events: Any) -> None:
                observe(p, ts, image, dets, events)
                quiet_events.extend(other.process(ts, image, dets))

            pipe.observer = both
            result = replay(video, stream, pipe, models, batch=4)
    finally:
        collector.stop()
        models.close()
    opened = {e["violation_id"] for e in result.events if e["event"] == "opened"}
    assert opened, "the scenario opens cases"
    assert {e["violation_id"] for e in quiet_events if e["event"] == "opened"}, (
        "the quiet stream had cases too"
    )
    records = [read_record(p) for p in sidecars(tmp_path / "collect")]
    assert {r.stream for r in records} == {"cam-demo-01"}
    assert not (tmp_path / "collect" / "cam-quiet").exists()
    cases = {r.violation_id: r for r in records if "case" in r.reasons}
    assert set(cases) == opened
    for rec in records:
        jpg = tmp_path / "collect" / rec.stream / rec.captured_at.strftime("%Y-%m-%d") / f"{rec.id}.jpg"
        image = cv2.imread(str(jpg))
        assert image is not None and image.shape[:2] == (rec.height, rec.width)
    for rec in cases.values():
        assert rec.model is not None and rec.predictions, rec.id
    assert collector.counts["written"] == len(records)
