"""Live configuration: ``citywatch run`` applies an edited streams.yaml without a restart.

Every ``live_reload_s`` seconds (streams.yaml, default 2; 0 = off) :class:`ConfigWatcher` looks at the
config file's mtime and, when it moved, its content hash. New content is checked exactly as ``citywatch
config check`` checks it (:func:`detector.config.check.run_check`: schema, zones, secrets, the models'
labels). With any problem the edit is refused: the check's lines (file:line:column, key path, hint) are
logged, the running configuration stays untouched, and the next change of the file is tried again.

A valid file is compared with what runs, stream by stream (the enabled streams, by id):

- a new (or newly enabled) stream starts as at start-up: pipeline, inference registration, frame
  collector, re-check commands, worker;
- a removed (or disabled) stream stops as at shutdown: its worker is stopped and joined, the frames it
  submitted are inferred and processed, its pipeline finishes (active violations are reported, not
  cleared) and its retained state becomes ``removed``;
- a stream whose entry changed in any way (a zone, a rule parameter, the URL, the name; or ``defaults``
  that change its effective rules) restarts: stopped as above, then started afresh. Its tracker starts
  empty: a violation active at the restart stays open (reported, never cleared) and the object seen
  again afterwards opens a new one (violation ids hang on the tracker's ids);
- every other stream runs on untouched: the same worker thread, source connection and tracker.

``Detector.cfg`` is then the configuration in effect: the edit's streams (as they run), ``defaults`` and
``live_reload_s``, and every other section as read at start-up.

The other top-level sections (``mqtt``, ``model``, ``rule_models``, ``models``, ``outbox``, ``evidence``,
``collect``, ``metrics``, ``worker_id``, ``api``) are read at start-up only: a change to one is logged as
``needs a restart: <section>`` and the rest of the edit is applied. So is a stream that needs a model
this detector has not loaded (a model section no running stream uses): it is left as it runs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from detector.config import CitywatchConfig, LoadedConfig, StreamConfig
from detector.config.check import run_check
from detector.contracts.errors import DetectorError
from detector.inference.model import ModelResolveError
from detector.inference.rule_models import (
    ModelKey,
    RuleModelSet,
    StreamModels,
    enabled_rules,
    manifest_ref,
    model_key,
    plan_stream,
    rule_model_configs,
)

if TYPE_CHECKING:
    from detector.commands.run import Detector

log = logging.getLogger("citywatch.live")

#: top-level sections applied while running; every other one is read at start-up only
LIVE_SECTIONS = frozenset({"streams", "defaults", "live_reload_s"})
JOIN_S = 5.0  # a worker's stop, as at shutdown
DRAIN_S = 10.0  # the frames a stopping stream submitted, to be inferred and processed


class LiveConfigError(DetectorError):
    """A stream of the edited file cannot start in the running detector (its model is not loaded)."""


@dataclass(frozen=True)
class ConfigDiff:
    """What an edit changes, by stream id (enabled streams only), and the sections only a restart applies."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.restart)

    def describe(self) -> str:
        parts = [
            f"{what} {', '.join(ids)}"
            for what, ids in (("added", self.added), ("restarted", self.changed), ("removed", self.removed))
            if ids
        ]
        parts.append(f"{len(self.kept)} unchanged")
        return "; ".join(parts)


def diff_config(old: CitywatchConfig, new: CitywatchConfig) -> ConfigDiff:
    """Compare two validated configs. A stream "changed" when any field of its entry differs, or its
    effective rules do (``defaults`` is part of them)."""
    before = {s.id: s for s in old.enabled_streams}
    after = {s.id: s for s in new.enabled_streams}
    return ConfigDiff(
        added=tuple(sid for sid in after if sid not in before),
        removed=tuple(sid for sid in before if sid not in after),
        changed=tuple(sid for sid, s in after.items() if sid in before and not same_stream(before[sid], s)),
        kept=tuple(sid for sid, s in after.items() if sid in before and same_stream(before[sid], s)),
        restart=tuple(
            name
            for name in type(new).model_fields
            if name not in LIVE_SECTIONS and getattr(old, name) != getattr(new, name)
        ),
    )


def same_stream(a: StreamConfig, b: StreamConfig) -> bool:
    """Every field equal (secrets by value), and the effective rules of the stream and its zones."""
    return (
        a == b
        and a.effective_rules == b.effective_rules
        and [z.effective_rules for z in a.zones] == [z.effective_rules for z in b.zones]
    )


def plan_running(
    models: RuleModelSet,
    cfg: CitywatchConfig,
    stream: StreamConfig,
    base_dir: Path | None,
    ref_of: Callable[[str | None], str] = manifest_ref,
) -> StreamModels:
    """The plan of ``stream`` on the models already loaded (``cfg``: the start-up config's model
    sections); LiveConfigError when it needs one that is not."""
    ref_of = functools.cache(ref_of)  # each name read from the manifest once per call, not once per section
    try:
        loaded: dict[ModelKey, str] = {}
        for mid, sections in models.sections.items():
            for mc in sections:
                loaded.setdefault(model_key(mc, base_dir, ref_of), mid)
        rule_cfgs = rule_model_configs(cfg, stream)
        wanted = {rule: rule_cfgs[rule] for rule in enabled_rules(stream)} or {"": cfg.model}
        ids = {rule: loaded.get(model_key(mc, base_dir, ref_of)) for rule, mc in wanted.items()}
    except ModelResolveError as err:
        raise LiveConfigError(f"stream {stream.id}: {err}") from err
    missing = sorted({(mc.name or str(mc.path)) for rule, mc in wanted.items() if ids[rule] is None})
    if missing:
        raise LiveConfigError(
            f"stream {stream.id} needs model {', '.join(missing)} (with its settings), which this detector "
            "has not loaded"
        )
    rule_ids = {rule: ids.get(rule) or "" for rule in rule_cfgs}
    default_id = ids.get("") or next(iter(models.models))
    infos = {mid: m.info for mid, m in models.models.items()}
    plan = plan_stream(stream, rule_ids, default_id, infos)
    for rule, mc in wanted.items():  # the manifest watcher sees what this stream pins or follows
        serving = ids[rule]
        if serving is not None and mc not in models.sections.get(serving, []):
            models.sections.setdefault(serving, []).append(mc)
    return plan


class ConfigWatcher(threading.Thread):
    """Polls the config file and applies valid edits; :meth:`poll` is one look (the thread calls it)."""

    def __init__(self, det: Detector, interval_s: float) -> None:
        super().__init__(name="config-watch", daemon=True)
        self.det = det
        self.path = Path(det.loaded.path)
        self.interval_s = interval_s
        self.stop_event = det.stop_event
        self.running: dict[str, StreamConfig] = {s.id: s for s in det.cfg.enabled_streams}
        self.applied = 0  # valid edits applied
        self.refused = 0  # edits refused for problems
        self.last: ConfigDiff | None = None
        self._sig = self._signature()
        try:
            self._hash: str | None = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            self._hash = None
        self._said: str | None = None

    # ------------------------------------------------------------------ the thread
    def run(self) -> None:
        while self.interval_s > 0 and not self.stop_event.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # the watcher must not die of one bad look; the next change tries again
                log.exception("applying %s failed", self.path)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> ConfigDiff | None:
        """One look at the file; the change it applied (None: nothing new, or the edit was refused)."""
        sig = self._signature()
        if sig == self._sig:
            return None
        try:
            content = self.path.read_bytes()
        except OSError as err:
            self._sig = sig
            self._say(f"{self.path}: cannot read it ({err}); the running configuration stays")
            return None
        if self._signature() != sig:
            return None  # still being written: the next look reads it whole
        self._sig = sig
        digest = hashlib.sha256(content).hexdigest()
        if digest == self._hash:
            return None
        self._hash = digest
        try:
            result = run_check(self.path, content.decode("utf-8"))
        except UnicodeDecodeError:
            result = run_check(self.path)  # the file check words it as `config check` does
        if result.loaded is None:
            log.error(
                "%s: edit refused, the running configuration stays; fix it and save again "
                "(`citywatch config check %s`):\n%s",
                self.path, self.path, "\n".join(result.lines),
            )  # fmt: skip
            self.refused += 1
            return None
        return self.apply(result.loaded.config)

    def _say(self, message: str) -> None:
        if message != self._said:
            log.error("%s", message)
            self._said = message

    # ------------------------------------------------------------------ applying an edit
    def apply(self, new: CitywatchConfig) -> ConfigDiff:
        """Make the running streams those of ``new``; see the module docstring."""
        det = self.det
        old = det.cfg.model_copy(update={"streams": list(self.running.values())})
        diff = diff_config(old, new)
        self._said = None
        after = {s.id: s for s in new.enabled_streams}
        later: list[str] = []
        for sid in diff.removed:
            self._guard(sid, partial(self.stop_stream, sid, removed=True))
        for sid in diff.changed:
            plan = self._plan(after[sid], later)
            if plan is not None:
                self._guard(sid, partial(self._restart, after[sid], plan))
        for sid in diff.added:
            plan = self._plan(after[sid], later)
            if plan is not None:
                self._guard(sid, partial(self.start_stream, after[sid], plan))
        if new.live_reload_s != self.interval_s:
            log.info("%s: live_reload_s is now %g%s", self.path, new.live_reload_s,
                     " (off: a restart turns it on again)" if new.live_reload_s <= 0 else "")  # fmt: skip
            self.interval_s = new.live_reload_s
        if diff.restart or later:
            log.warning(
                "%s: needs a restart: %s (read at start-up only; the rest of the edit is applied)",
                self.path, ", ".join([*diff.restart, *later]),
            )  # fmt: skip
        self._settle(new)
        log.info("%s: applied: %s", self.path, diff.describe())
        self.last = diff
        self.applied += 1
        return diff

    def _settle(self, new: CitywatchConfig) -> None:
        """``det.cfg`` becomes the configuration in effect: the sections read at start-up as they were,
        ``defaults`` and ``live_reload_s`` of the edit, the streams as they now run (and disabled ones)."""
        det = self.det
        streams = [self.running.get(s.id, s) for s in new.streams if not s.enabled or s.id in self.running]
        update = {"streams": streams, "defaults": new.defaults, "live_reload_s": new.live_reload_s}
        det.loaded = LoadedConfig(det.loaded.path, det.cfg.model_copy(update=update))

    def _guard(self, sid: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # one stream's failure must not stop the others from applying
            log.exception("stream %s: applying the edit failed", sid)

    def _plan(self, stream: StreamConfig, later: list[str]) -> StreamModels | None:
        det = self.det
        if det.models is None:
            return None
        try:
            return plan_running(det.models, det.cfg, stream, det.loaded.base_dir)
        except LiveConfigError as err:
            log.error("%s; it keeps running as it was, if it ran", err)
            later.append(f"stream {stream.id}")
            return None

    def _restart(self, stream: StreamConfig, plan: StreamModels) -> None:
        self.stop_stream(stream.id)
        self.start_stream(stream, plan)

    def start_stream(self, stream: StreamConfig, plan: StreamModels) -> None:
        det = self.det
        if det.models is None:
            raise LiveConfigError("the models must be loaded before a stream starts")
        det.models.plans[stream.id] = plan
        det.register_stream(stream, plan)
        if det.rechecker is not None:
            det.rechecker.watch(stream.id)
        det.start_worker(stream)
        self.running[stream.id] = stream
        log.info("stream %s: started (%s)", stream.id, stream.display_url)

    def stop_stream(self, sid: str, *, removed: bool = False) -> None:
        """As :meth:`Detector.stop` does for each stream: worker, queued frames, post handler, pipeline."""
        det = self.det
        worker = next((w for w in det.workers if w.stream.id == sid), None)
        if worker is not None:
            worker.stop()
            worker.join(timeout=JOIN_S)
            if worker.is_alive():
                log.warning("stream %s: its worker did not stop within %g s", sid, JOIN_S)
        if det.service is not None and not det.service.unregister(sid, DRAIN_S):
            log.warning("stream %s: frames still queued after %g s were dropped", sid, DRAIN_S)
        post = det.post.pop(sid, None)
        if post is not None:
            post.close()
        pipe = det.pipelines.get(sid)
        if pipe is not None:
            pipe.finish()
            del det.pipelines[sid]
        if det.models is not None:
            det.models.plans.pop(sid, None)
        det.workers = [w for w in det.workers if w is not worker]
        self.running.pop(sid, None)
        dropped = det.service.dropped.get(sid, 0) if det.service is not None else 0
        done, events = (pipe.samples, pipe.events_sent) if pipe is not None else (0, 0)
        read = worker.state.samples if worker is not None else 0
        log.info(
            "stream %s: %s: %d samples read, %d processed, %d dropped, %d events",
            sid, "removed" if removed else "stopped to restart", read, done, dropped, events,
        )  # fmt: skip
        if removed and worker is not None:
            state = worker.snapshot()
            state.update(state="removed", since=time.time(), connected=False)
            det._state(sid, state)


def start_live(det: Detector) -> ConfigWatcher | None:
    """Start watching the config file (None when ``live_reload_s`` is 0 or the config is no file)."""
    interval = det.cfg.live_reload_s
    path = Path(det.loaded.path)
    if interval <= 0:
        log.info("live_reload_s is 0: an edit of %s applies at the next start", path)
        return None
    if not path.is_file():
        return None
    watcher = ConfigWatcher(det, interval)
    watcher.start()
    log.info("watching %s every %g s: an edit of its streams applies without a restart", path, interval)
    return watcher
