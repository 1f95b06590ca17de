"""Live configuration (detector/commands/live.py): what an edit changes, planning a new stream on the loaded
models, the service letting a stream go, and an invalid edit refused with `config check`'s own lines.

A real running detector taking edits is tests/integration/test_live_reload.py.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from detector.commands.live import ConfigDiff, ConfigWatcher, LiveConfigError, diff_config, plan_running
from detector.config import CitywatchConfig, load_config, load_config_text
from detector.config.check import check
from detector.contracts.detections import Detections
from detector.contracts.events import validate_state
from detector.inference.rule_models import load_rule_models
from detector.inference.service import InferenceService, InferenceServiceError
from detector.sources import Frame
from detector.sources.worker import StreamState
from tests.unit.test_inference_service import RecordingBackend, frame, wait_for
from tests.unit.test_rule_models import fake_loader, ref_of

SQUARE = "[[0, 0], [1, 0], [1, 1], [0, 1]]"


def yaml_text(
    streams: tuple[str, ...] = ("a", "b"),
    *,
    zone_a: str = SQUARE,
    top: str = "",
    extra_a: str = "",
) -> str:
    out = f"version: 1\n{top}streams:\n"
    for sid in streams:
        polygon = zone_a if sid == "a" else SQUARE
        out += (
            f"  - id: {sid}\n"
            f"    url: {sid}.mp4\n"
            f"{extra_a if sid == 'a' else ''}"
            f"    zones: [{{id: z, polygon: {polygon}, rules: [illegal_parking]}}]\n"
        )
    return out


def parse(text: str) -> CitywatchConfig:
    return load_config_text(text, environ={}).config


# ------------------------------------------------------------------------------------------- diff
A_RESTARTS = ConfigDiff(changed=("a",), kept=("b",))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({}, ConfigDiff(kept=("a", "b"))),
        ({"zone_a": "[[0, 0], [0.5, 0], [0.5, 1]]"}, A_RESTARTS),
        ({"streams": ("a", "b", "c")}, ConfigDiff(added=("c",), kept=("a", "b"))),
        ({"streams": ("b",)}, ConfigDiff(removed=("a",), kept=("b",))),
        ({"extra_a": "    enabled: false\n"}, ConfigDiff(removed=("a",), kept=("b",))),
        ({"extra_a": "    name: Main St\n"}, A_RESTARTS),
        ({"extra_a": "    sample_interval_s: 1\n"}, A_RESTARTS),
        ({"extra_a": "    rules: {illegal_parking: {grace_s: 9}}\n"}, A_RESTARTS),
        # defaults are part of every stream's effective rules: both restart, nothing needs a restart
        ({"top": "defaults: {rules: {illegal_parking: {dwell_s: 30}}}\n"}, ConfigDiff(changed=("a", "b"))),
        ({"top": "live_reload_s: 5\n"}, ConfigDiff(kept=("a", "b"))),
        ({"top": "mqtt: {host: broker.lan}\n"}, ConfigDiff(kept=("a", "b"), restart=("mqtt",))),
        (
            {"top": "model: {conf: 0.4}\nevidence: {jpeg_quality: 70}\n", "streams": ("a",)},
            ConfigDiff(removed=("b",), kept=("a",), restart=("model", "evidence")),
        ),
        ({"top": "worker_id: det-9\n"}, ConfigDiff(kept=("a", "b"), restart=("worker_id",))),
        ({"top": "collect: {enabled: true}\n"}, ConfigDiff(kept=("a", "b"), restart=("collect",))),
    ],
)  # fmt: skip
def test_what_an_edit_changes(edit: dict[str, Any], expected: ConfigDiff) -> None:
    assert diff_config(parse(yaml_text()), parse(yaml_text(**edit))) == expected


def test_a_secret_changed_in_the_environment_restarts_the_stream() -> None:
    text = yaml_text(("a",)).replace("url: a.mp4", "url: rtsp://u:${CAM_PW}@10.0.0.5/s")
    old = load_config_text(text, environ={"CAM_PW": "one"}).config
    new = load_config_text(text, environ={"CAM_PW": "two"}).config
    assert diff_config(old, new).changed == ("a",)


def test_describe() -> None:
    diff = ConfigDiff(added=("c",), removed=("b",), changed=("a",), kept=("d", "e"))
    assert diff.describe() == "added c; restarted a; removed b; 2 unchanged"
    assert ConfigDiff(kept=("a",)).empty and not ConfigDiff(restart=("mqtt",)).empty


@pytest.mark.parametrize(("value", "ok"), [(None, True), (0, True), (0.5, True), (-1, False)])
def test_live_reload_s_is_a_setting_with_a_default(value: float | None, ok: bool) -> None:
    top = "" if value is None else f"live_reload_s: {value}\n"
    if ok:
        assert parse(yaml_text(top=top)).live_reload_s == (2.0 if value is None else value)
    else:
        with pytest.raises(Exception, match="live_reload_s"):
            parse(yaml_text(top=top))


def test_the_removed_state_keeps_the_contract() -> None:
    cfg = parse(yaml_text(("a",)))
    state = StreamState(state="stopped", samples=12).as_dict(cfg.streams[0])
    state.update(state="removed", connected=False)
    validate_state(state)


# ------------------------------------------------------------------------------------------- plan
RM = "rule_models: {illegal_parking: {name: coco}}\n"


@pytest.mark.parametrize(
    ("top", "stream_extra", "needed"),
    [
        ("", "", ("synth@1.0.0",)),
        (RM, "", ("coco@1.0.0",)),  # the global rule_models as at start-up
        # loaded: a stream used it at start-up
        (RM, "    rule_models: {illegal_parking: {name: synth}}\n", ("synth@1.0.0",)),
        ("", "    rule_models: {illegal_parking: {name: coco}}\n", None),  # coco is not loaded
        ("", "    rule_models: {illegal_parking: {conf: 0.6}}\n", None),  # another instance (conf)
    ],
)  # fmt: skip
def test_a_new_stream_runs_on_the_models_already_loaded(
    top: str, stream_extra: str, needed: tuple[str, ...] | None
) -> None:
    # at start-up: stream a on the global sections, stream s on the default model for parking
    start = yaml_text(("a",), top=top) + (
        "  - id: s\n    url: s.mp4\n    rule_models: {illegal_parking: {name: synth}}\n"
        f"    zones: [{{id: z, polygon: {SQUARE}, rules: [illegal_parking]}}]\n"
    )
    cfg = parse(start)
    models = load_rule_models(cfg, loader=fake_loader([]), ref_of=ref_of)
    new = parse(yaml_text(("c",), top=top, extra_a="").replace("url: c.mp4\n", f"url: c.mp4\n{stream_extra}"))
    stream = new.streams[0]
    if needed is None:
        with pytest.raises(LiveConfigError, match="has not loaded"):
            plan_running(models, cfg, stream, None, ref_of)
        return
    plan = plan_running(models, cfg, stream, None, ref_of)
    assert plan.needed == needed and plan.stream_id == "c"
    assert set(plan.rules) == {"illegal_parking"}


# ------------------------------------------------------------------------------------------- service
def keep(into: list[int], f: Frame, _dets: Detections) -> None:
    into.append(f.index)


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def test_unregister_lets_the_submitted_frames_through_then_forgets_the_stream(stop: threading.Event) -> None:
    backend = RecordingBackend()
    service = InferenceService(backend, stop, max_batch=2, per_stream=4)
    got: dict[str, list[int]] = {"a": [], "b": []}
    for sid in got:
        service.register(sid, partial(keep, got[sid]))
    backend.gate.clear()
    service.start()
    for i in range(3):
        service.submit(frame("a", i))
        service.submit(frame("b", i))
    done: list[bool] = []
    waiter = threading.Thread(target=lambda: done.append(service.unregister("a", 10)))
    waiter.start()
    backend.gate.set()
    waiter.join(10)
    assert done == [True] and got["a"] == [0, 1, 2], "every frame a submitted reached its handler"
    with pytest.raises(InferenceServiceError, match="not registered"):
        service.submit(frame("a", 3))
    service.submit(frame("b", 3))
    wait_for(lambda: got["b"] == [0, 1, 2, 3])
    assert service.unregister("nobody") is True


def test_an_answer_for_a_stream_registered_again_goes_nowhere(stop: threading.Event) -> None:
    backend = RecordingBackend()
    service = InferenceService(backend, stop, max_batch=1, per_stream=2)
    old: list[int] = []
    new: list[int] = []
    service.register("a", lambda f, _d: old.append(f.index))
    backend.gate.clear()
    service.start()
    service.submit(frame("a", 0))
    wait_for(lambda: service.pending() == 0)  # taken into a batch: in flight
    assert service.unregister("a", 0.05) is False  # not answered in time
    service.register("a", lambda f, _d: new.append(f.index))
    service.submit(frame("a", 1))
    backend.gate.set()
    wait_for(lambda: new == [1])
    assert old == []


# ------------------------------------------------------------------------------------------- watcher
def stub_detector(path: Path) -> Any:
    loaded = load_config(path)
    return SimpleNamespace(loaded=loaded, cfg=loaded.config, stop_event=threading.Event())


BROKEN = [
    # (the edit, what the log must name)
    (lambda t: t.replace("zones: [", "zones: [[", 1), r"streams\.yaml:\d+:\d+: "),  # broken YAML: file:line
    (lambda t: t.replace(SQUARE, "[[0, 0], [1, 1]]", 1), r":\d+:\d+: streams\[0\]\.zones\[0\]\.polygon"),
    (lambda t: t.replace("url: b.mp4", "url: ftp://b"), r":\d+:\d+: streams\[1\]\.url"),
]


@pytest.mark.parametrize(("edit", "named"), BROKEN)
def test_an_invalid_edit_is_refused_with_config_checks_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, edit: Any, named: str
) -> None:
    path = tmp_path / "streams.yaml"
    path.write_text(yaml_text())
    watcher = ConfigWatcher(stub_detector(path), 0.1)
    applied: list[CitywatchConfig] = []
    watcher.apply = lambda cfg: applied.append(cfg)  # type: ignore[assignment,method-assign,return-value]
    assert watcher.poll() is None and watcher.refused == 0, "nothing changed since start-up"
    path.write_text(edit(yaml_text()))
    with caplog.at_level(logging.ERROR, logger="citywatch.live"):
        assert watcher.poll() is None
    assert watcher.refused == 1 and applied == []
    printed = io.StringIO()
    assert check(path, out=printed) == 1
    lines = printed.getvalue().splitlines()
    assert lines and all(line in caplog.text for line in lines), "the log says what `config check` prints"
    assert re.search(named, caplog.text), caplog.text
    assert "hint:" in caplog.text and "running configuration stays" in caplog.text
    path.write_text(edit(yaml_text()))  # saved again, the same content: not reported again
    assert watcher.poll() is None and watcher.refused == 1
    path.write_text(yaml_text(("a", "b", "c")))  # fixed
    watcher.poll()
    assert [[s.id for s in cfg.streams] for cfg in applied] == [["a", "b", "c"]]


def test_an_unchanged_content_is_not_applied_again(tmp_path: Path) -> None:
    path = tmp_path / "streams.yaml"
    path.write_text(yaml_text())
    watcher = ConfigWatcher(stub_detector(path), 0.1)
    applied: list[CitywatchConfig] = []
    watcher.apply = lambda cfg: applied.append(cfg)  # type: ignore[assignment,method-assign,return-value]
    path.write_text(yaml_text())  # touched (a new mtime), same content
    path.write_text(yaml_text(("a",)))
    path.write_text(yaml_text())
    assert watcher.poll() is None and applied == []
