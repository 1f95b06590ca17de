"""``citywatch replay VIDEO --stream ID``: the detector pipeline on a file, as fast as the machine allows.

No broker: events go to a JSONL file (``--out``). The stream's zones, rules, location, start time and
models (``model:`` / ``rule_models:``) come from the config; only its source is replaced by VIDEO. Frame
timestamps drive everything, so the events are the ones the live stream would have produced.

From code::

    models = load_rule_models(cfg, threads, base_dir, [stream])
    pipeline = models.pipeline(stream, sink, cfg.evidence)
    result = replay(video, stream, pipeline, models)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.config import ConfigError, StreamConfig, load_config
from detector.contracts.detections import Detections
from detector.delivery.publisher import JsonlSink
from detector.inference import InferenceBackend
from detector.inference.model import ModelResolveError
from detector.inference.rule_models import RuleModelSet, load_rule_models
from detector.pipeline import StreamPipeline
from detector.sources import Frame, SourceError
from detector.sources.pyav import FileSource

log = logging.getLogger("citywatch.replay")


@dataclass
class ReplayResult:
    events: list[dict[str, Any]]
    samples: int
    seconds: float
    video_seconds: float


def replay(
    video: Path,
    stream: StreamConfig,
    pipeline: StreamPipeline,
    models: RuleModelSet | InferenceBackend,
    batch: int = 4,
    progress: bool = False,
) -> ReplayResult:
    """Run ``pipeline`` over ``video`` with batched inference; the pipeline's sink receives the events.

    ``models``: the deployment's models (each frame goes to every model the stream needs, and their
    detections are merged), or a single backend."""
    infer = _inference(stream, models)
    start = stream.start_time.timestamp() if stream.start_time else None
    src = FileSource(video, stream.id, start_time=start)
    events: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    pending: list[Frame] = []
    bar = None
    if progress:
        from tqdm import tqdm

        probe = FileSource.probe(video)
        bar = tqdm(total=round(probe.duration or 0), unit="s", desc=f"replay {video.name}", file=sys.stderr)
    first_pts = last_pts = 0.0

    def run_batch() -> None:
        dets = infer([f.image for f in pending], [(f.stream_id, f.ts) for f in pending])
        for f, d in zip(pending, dets, strict=True):
            events.extend(pipeline.process(f.ts, f.image, d))
        pending.clear()

    for frame in src.iter_samples(stream.sample_interval_s):
        pending.append(frame)
        last_pts = frame.pts_s
        if bar is not None:
            bar.update(max(0, round(frame.pts_s) - bar.n))
        if len(pending) >= batch:
            run_batch()
    if pending:
        run_batch()
    events.extend(pipeline.finish())
    if bar is not None:
        bar.close()
    return ReplayResult(events, pipeline.samples, time.perf_counter() - t0, last_pts - first_pts)


def _inference(stream: StreamConfig, models: RuleModelSet | InferenceBackend) -> Any:
    """A function from a batch of images and their ``(stream id, frame time)`` to one (merged) Detections
    per image (``InferenceBackend.infer_streams``)."""
    if isinstance(models, InferenceBackend):
        return models.infer_streams
    plan = models.plan(stream)
    if len(plan.needed) == 1 and len(models.models) == 1:
        return models.models[plan.needed[0]].backend.infer_streams

    def infer(images: list[Any], sources: list[tuple[str, float]]) -> list[Detections]:
        answers = {mid: models.models[mid].backend.infer_streams(images, sources) for mid in plan.needed}
        return [plan.merge({mid: answers[mid][i] for mid in plan.needed}) for i in range(len(images))]

    return infer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="citywatch replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("video", type=Path, help="video file (mp4, mkv, ...)")
    p.add_argument("--stream", required=True, help="stream id in the config whose zones and rules apply")
    p.add_argument(
        "--config", type=Path, default=Path("streams.yaml"), help="streams.yaml (default: ./streams.yaml)"
    )
    p.add_argument("--out", type=Path, required=True, help="events as JSON lines")
    p.add_argument("--batch", type=int, default=4, help="frames per inference call")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not a.video.is_file():
        print(f"citywatch replay: {a.video}: no such video file", file=sys.stderr)
        return 2
    try:
        loaded = load_config(a.config)
        cfg = loaded.config
        stream = cfg.stream(a.stream)
    except ConfigError as err:
        print(
            f"citywatch replay: {a.config} has problems; run `citywatch config check {a.config}`:\n{err}",
            file=sys.stderr,
        )
        return 2
    except KeyError:
        ids = ", ".join(s.id for s in loaded.config.streams)
        print(f"citywatch replay: no stream {a.stream!r} in {a.config} (streams: {ids})", file=sys.stderr)
        return 2
    try:
        models = load_rule_models(cfg, a.threads, loaded.base_dir, [stream])
    except ModelResolveError as err:
        print(f"citywatch replay: {err}", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with JsonlSink(a.out) as sink:
        pipeline = models.pipeline(stream, sink, cfg.evidence)
        try:
            res = replay(a.video, stream, pipeline, models, batch=a.batch, progress=not a.quiet)
        except SourceError as err:
            print(f"citywatch replay: {err}", file=sys.stderr)
            return 1
    counts: dict[str, int] = {}
    for e in res.events:
        counts[e["event"]] = counts.get(e["event"], 0) + 1
    speed = res.video_seconds / res.seconds if res.seconds > 0 else 0.0
    print(
        f"{a.video.name}: {res.samples} samples, {len(res.events)} events "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'}) -> {a.out}; "
        f"{res.seconds:.1f} s for {res.video_seconds:.0f} s of video ({speed:.0f}x real time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
