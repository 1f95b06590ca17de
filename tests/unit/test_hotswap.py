"""A new default reaches a running detector without a restart (detector/inference/hotswap.py).

The shared InferenceService, a stream's pipeline and the manifest watcher run as in ``citywatch run`` on
the street-demo scenario clip, with a models folder in tmp_path whose entries load as a small backend that
reports one parked car per frame, at a place that depends on the model version (so each model opens its
own case). The promotion and the rollback are the real commands on that folder; the watcher's own
thread notices them. No timed assertion: waits poll with a deadline.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from detector.config import load_config_text
from detector.config.model import ModelConfig
from detector.contracts import artifacts
from detector.contracts.artifacts import verified_path
from detector.contracts.detections import Detections
from detector.contracts.manifest import REPO_ROOT, load_manifest
from detector.inference import InferenceBackend
from detector.inference.hotswap import ManifestWatcher, SwapRecord, follows
from detector.inference.model import LoadedModel, ModelResolveError
from detector.inference.rule_models import RuleModelSet, load_rule_models
from detector.inference.service import InferenceService, InferenceServiceError
from detector.pipeline import ModelInfo, StreamPipeline
from detector.sources import Frame
from detector.sources.pyav import FileSource
from tests.detector_support import ListSink
from tests.unit.factories import make_detections
from tests.unit.test_promotion import write_folder
from training.cli import main as models_cli

VIDEO = REPO_ROOT / "training" / "synth" / "scenarios" / "street-demo.mp4"
CLASSES = ["vehicle", "litter"]
#: where each version sees its parked car (the clip is 640x360)
CARS: dict[str, list[float]] = {
    "1.0.0": [40.0, 250.0, 160.0, 330.0],
    "1.1.0": [420.0, 250.0, 540.0, 330.0],
    "1.2.0": [40.0, 20.0, 90.0, 60.0],
}


class CarBackend(InferenceBackend):
    name = "ultralytics"

    def __init__(self, version: str) -> None:
        self.class_names, self.imgsz, self.conf, self.iou = CLASSES, 64, 0.25, 0.5
        self.version, self.frames, self.closed = version, 0, False

    def infer(self, images: Sequence[np.ndarray]) -> list[Detections]:
        self.frames += len(images)
        car = CARS[self.version]
        return [make_detections([car], classes="vehicle", class_names=CLASSES) for _ in images]

    def close(self) -> None:
        self.closed = True


class Loader:
    """The detector's loader on a fake runtime: the manifest entry, its sha256 checked, its digest."""

    def __init__(self) -> None:
        self.backends: list[CarBackend] = []

    def __call__(self, cfg: ModelConfig, threads: int | None, base_dir: Path | None) -> LoadedModel:
        try:
            entry = load_manifest().get(cfg.name)
            path, digest = verified_path(entry)
        except Exception as err:
            raise ModelResolveError(str(err)) from err
        backend = CarBackend(entry.version)
        self.backends.append(backend)
        info = ModelInfo(entry.name, entry.version, digest, tuple(entry.classes), dict(entry.rule_labels))
        return LoadedModel(backend, info, path, "ultralytics")


def config(model: str = "{name: null}", rule_models: str = "{}", rules: str = "[illegal_parking]") -> Any:
    text = (
        "version: 1\n"
        f"model: {model}\n"
        f"rule_models: {rule_models}\n"
        "streams:\n"
        "  - id: cam\n"
        f"    url: {VIDEO}\n"
        "    sample_interval_s: 1\n"
        "    start_time: 2026-03-02T09:00:00+08:00\n"
        "    rules: {illegal_parking: {dwell_s: 4, grace_s: 2}}\n"
        f"    zones: [{{id: z, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], rules: {rules}}}]\n"
    )
    return load_config_text(text, environ={}).config


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    artifacts.clear_cache()
    monkeypatch.setenv("CITYWATCH_MODELS_DIR", str(tmp_path))
    return write_folder(tmp_path)  # m 1.0.0, 1.1.0, 1.2.0; default m@1.0.0


class Running:
    """Service + pipeline + watcher, as `citywatch run` wires them, with what the test looks at."""

    def __init__(self, cfg: Any, loader: Loader, interval_s: float = 0.02) -> None:
        self.stop = threading.Event()
        self.models: RuleModelSet = load_rule_models(cfg, loader=loader)
        self.sink = ListSink()
        stream = cfg.streams[0]
        self.pipe: StreamPipeline = self.models.pipeline(stream, self.sink)
        self.service = InferenceService(self.models.backends, self.stop, max_batch=self.models.batches)
        self.handled: list[int] = []
        self.marks: list[tuple[SwapRecord, int]] = []  # each swap and how many events came before it

        def handle(frame: Frame, dets: Detections) -> None:
            self.pipe.process(frame.ts, frame.image, dets)
            self.handled.append(frame.index)

        self.service.register(stream.id, handle)
        self.watcher = ManifestWatcher(
            self.models, self.service, {stream.id: self.pipe}, self.stop, interval_s, loader=loader,
            on_swap=lambda rec: self.marks.append((rec, len(self.sink.events))),
        )  # fmt: skip
        self.service.start()
        self.watcher.start()

    def close(self) -> None:
        self.stop.set()
        self.watcher.join(10)
        self.service.join(10)


@pytest.fixture
def running(models_dir: Path) -> Iterator[Callable[..., Running]]:
    made: list[Running] = []

    def make(cfg: Any = None, loader: Loader | None = None, interval_s: float = 0.02) -> Running:
        """``interval_s`` long: the watcher's thread never looks, the test calls ``poll``."""
        made.append(Running(cfg or config(), loader or Loader(), interval_s))
        return made[-1]

    yield make
    for r in made:
        r.close()


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_promote_and_rollback_swap_the_model_mid_clip_without_losing_a_sample(
    models_dir: Path, running: Callable[..., Running]
) -> None:
    loader = Loader()
    r = running(loader=loader)
    frames = FileSource(VIDEO, "cam", start_time=1_772_413_200.0).iter_samples(1.0)
    submitted: list[int] = []

    def push() -> None:
        frame = next(frames, None)
        assert frame is not None, "the clip ended first"
        r.service.submit(frame, block=True)  # a file stream: waits for room instead of dropping
        submitted.append(frame.index)

    def submit(n: int, until: Callable[[], bool] | None = None) -> None:
        """Samples until ``until`` holds (paced, so the clip outlasts the watcher's look), then ``n`` more."""
        while until is not None and not until():
            push()
            time.sleep(0.01)
        for _ in range(n):
            push()

    submit(20)
    assert models_cli(["models", "promote", "m@1.1.0", "--by", "tester"]) == 0
    submit(20, until=lambda: len(r.marks) == 1)  # the watcher's thread notices it while samples flow
    assert models_cli(["models", "rollback", "--by", "tester"]) == 0
    submit(20, until=lambda: len(r.marks) == 2)
    wait_for(lambda: len(r.handled) == len(submitted), "every sample to be handled")

    # no gap: every sample submitted was inferred once, handled once, in order; none dropped
    counters = r.service.counters["cam"]
    assert (counters.submitted, counters.done, counters.dropped) == (len(submitted), len(submitted), 0)
    assert r.handled == submitted and r.pipe.samples == len(submitted)
    assert sum(b.frames for b in loader.backends) == len(submitted)
    v100, v110, v100_again = loader.backends
    assert v100.closed and v110.closed and not v100_again.closed  # each replaced backend is closed

    # events before the promotion name 1.0.0, between the swaps 1.1.0, after the rollback 1.0.0 again,
    # each with the sha256 of the artefact loaded
    digest = {v: verified_path(load_manifest().get(f"m@{v}"))[1] for v in ("1.0.0", "1.1.0")}
    (first, at1), (second, at2) = r.marks
    assert (first.old.version, first.new.version, second.new.version) == ("1.0.0", "1.1.0", "1.0.0")
    assert first.new.sha256 == digest["1.1.0"] and first.streams == ("cam",)
    segments = [r.sink.events[:at1], r.sink.events[at1:at2], r.sink.events[at2:]]
    for events, version in zip(segments, ("1.0.0", "1.1.0", "1.0.0"), strict=True):
        assert any(e["event"] == "opened" for e in events), f"no case opened while {version} ran"
        assert {(e["model"]["name"], e["model"]["version"], e["model"]["sha256"]) for e in events} == {
            ("m", version, digest[version])
        }
    assert [h.action for h in load_manifest().history] == ["promote", "rollback"]
    assert r.models.models["m@1.0.0"].info.version == "1.0.0"  # the instance keeps its id


def test_a_failed_load_keeps_the_running_model_until_the_file_is_fixed(
    models_dir: Path, running: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    r = running(interval_s=3600)
    r.watcher.poll()
    good = (models_dir / "m-1.1.0.pt").read_bytes()
    (models_dir / "m-1.1.0.pt").write_bytes(b"not the registered weights")
    text = (models_dir / "manifest.yaml").read_text().replace("default: m@1.0.0", "default: m@1.1.0")
    (models_dir / "manifest.yaml").write_text(text)  # edited by hand: promote would have refused it
    with caplog.at_level(logging.ERROR, logger="detector.inference.hotswap"):
        assert r.watcher.poll() == []
    assert "model m@1.0.0: not switching to m@1.1.0, its load failed; still running m 1.0.0" in caplog.text
    assert "m-1.1.0.pt: sha256" in caplog.text
    assert r.pipe.model.version == "1.0.0" and r.watcher.poll() == []  # not retried on every look

    (models_dir / "m-1.1.0.pt").write_bytes(good)
    st = (models_dir / "manifest.yaml").stat()
    os.utime(models_dir / "manifest.yaml", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # `touch`
    assert r.watcher.poll() == ["m@1.0.0"]  # the same content, touched: the failed load is tried again
    wait_for(lambda: r.pipe.model.version == "1.1.0", "the swap on an idle service")
    assert r.pipe.model.key == "m@1.0.0" and r.pipe.engine.label_of("vehicle") == "vehicle"


BOTH = "[illegal_parking, unclean_road]"


@pytest.mark.parametrize(
    ("model", "rule_models", "rules", "moves", "warning"),
    [
        ("{name: null}", "{}", BOTH, True, None),
        ("{name: m}", "{}", BOTH, False, None),  # a bare name: its highest version (1.2.0), not the default
        ("{name: m@1.0.0}", "{}", BOTH, False, None),  # pinned
        ("{name: null}", "{illegal_parking: {name: m@1.0.0}}", "[illegal_parking]", False, None),
        ("{name: m@1.0.0}", "{illegal_parking: {name: null}}", "[illegal_parking]", True, None),  # pin unused
        ("{name: m@1.0.0}", "{illegal_parking: {name: null}}", BOTH, False, "cannot be split while running"),
    ],
    ids=["default", "bare-name", "pinned", "pinned-rule", "pinned-unused", "shared"],
)  # fmt: skip
def test_only_sections_that_follow_the_default_move(
    models_dir: Path, running: Callable[..., Running], caplog: pytest.LogCaptureFixture,
    model: str, rule_models: str, rules: str, moves: bool, warning: str | None,
) -> None:  # fmt: skip
    r = running(config(model, rule_models, rules), interval_s=3600)
    r.watcher.poll()
    version = r.pipe.model_for("illegal_parking").version
    with caplog.at_level(logging.WARNING, logger="detector.inference.hotswap"):
        assert models_cli(["models", "promote", "m@1.1.0", "--by", "tester"]) == 0
        queued = r.watcher.poll()
    assert bool(queued) == moves
    if moves:
        wait_for(lambda: r.pipe.model_for("illegal_parking").version == "1.1.0", "the swap")
    else:
        assert r.pipe.model_for("illegal_parking").version == version
    if warning is not None:
        assert warning in caplog.text
    else:
        assert "cannot be split" not in caplog.text


@pytest.mark.parametrize(
    ("section", "expected"),
    [({}, True), ({"name": "m"}, True), ({"name": "m@1.0.0"}, False), ({"path": "a.onnx"}, False)],
)
def test_follows(section: dict[str, Any], expected: bool) -> None:
    assert follows(ModelConfig.model_validate(section)) is expected


def test_watch_s_is_a_setting_with_a_default(models_dir: Path) -> None:
    assert config().models.watch_s == 5.0
    text = yaml.safe_dump({"version": 1, "models": {"watch_s": 0}})
    assert load_config_text(text, environ={}).config.models.watch_s == 0


def test_the_service_swaps_between_batches_and_closes_what_it_replaced() -> None:
    stop = threading.Event()
    old, new = CarBackend("1.0.0"), CarBackend("1.1.0")
    service = InferenceService({"m": old}, stop)
    service.start()
    try:
        service.swap("m", new)  # no callback: the service closes the old backend itself
        wait_for(lambda: service.backends["m"] is new, "the swap on an idle service")
        assert old.closed and not new.closed and service.backend is new
        with pytest.raises(InferenceServiceError, match="cannot swap unknown model 'x'"):
            service.swap("x", CarBackend("1.2.0"))
    finally:
        stop.set()
        service.join(10)
