"""A clip resolved against its config: the stream it runs as and the models its rules need.

Configs are read with :func:`detector.config.load_config` and models loaded with
:func:`detector.inference.rule_models.load_rule_models`, so a clip runs with whatever the shipped
``streams.yaml`` resolves (``model:``, ``rule_models:``, ``defaults.rules``), with the clip's
settings on top. Each config and each model is loaded once for all clips.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
from pydantic import ValidationError

from detector.commands.evalclips.spec import RULE_NAMES, Clip, Expectations, Settings, VideoClip, clip_name
from detector.config import CitywatchConfig, ConfigError, LoadedConfig, ModelConfig, StreamConfig, load_config
from detector.config.errors import format_path, problems_from_validation_error
from detector.contracts.errors import DetectorError
from detector.inference import InferenceError
from detector.inference.model import LoadedModel, ModelResolveError, load_model
from detector.inference.rule_models import RuleModelSet, load_rule_models
from detector.sources.base import parse_creation_time

FULL_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


class EvalInputError(DetectorError):
    """A clip cannot be run as given (its file, its config, its model); the message names them."""


@dataclass(frozen=True)
class ClipRun:
    clip: Clip
    name: str
    file: Path
    config: CitywatchConfig
    stream: StreamConfig
    models: RuleModelSet


class Resolver:
    """Resolves clips; ``config_override`` (``--config``) replaces every clip's config."""

    def __init__(self, expectations: Expectations, config_override: Path | None, threads: int | None) -> None:
        self.exp = expectations
        self.override = config_override
        self.threads = threads
        self._configs: dict[Path, LoadedConfig] = {}
        self._models: dict[str, LoadedModel] = {}

    def config_path(self, clip: Clip) -> Path:
        if self.override is not None:
            return self.override
        given = clip.config or self.exp.defaults.config
        return self.exp.base_dir / given if given is not None else Path("streams.yaml")

    def resolve(self, clip: Clip, index: int = 0) -> ClipRun:
        name = clip_name(clip)
        key = "video" if isinstance(clip, VideoClip) else "image"
        file = self.exp.base_dir / (clip.video if isinstance(clip, VideoClip) else clip.image)
        if not file.is_file():
            raise EvalInputError(f"clips[{index}] ({name}): {key}: {file}: no such file")
        path = self.config_path(clip)
        loaded = self._load_config(path, name)
        cfg, stream = eval_config(loaded.config, clip, self.exp.defaults, file, name, path)
        try:
            models = load_rule_models(cfg, self.threads, loaded.base_dir, [stream], loader=self._load_model)
        except (ModelResolveError, InferenceError) as err:
            raise EvalInputError(f"clip {name}: a model of {path}: {err}") from None
        return ClipRun(clip, name, file, cfg, stream, models)

    def _load_config(self, path: Path, name: str) -> LoadedConfig:
        key = path.resolve()
        if key not in self._configs:
            try:
                self._configs[key] = load_config(path)
            except ConfigError as err:
                raise EvalInputError(f"clip {name}: config {path} has problems:\n{err}") from None
        return self._configs[key]

    def _load_model(self, mc: ModelConfig, threads: int | None, base_dir: Path | None) -> LoadedModel:
        key = json.dumps([mc.model_dump(mode="json"), str(base_dir)], sort_keys=True)
        if key not in self._models:
            self._models[key] = load_model(mc, threads, base_dir)
        return replace(self._models[key])  # a copy: load_rule_models renames its info


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out


def eval_config(
    cfg: CitywatchConfig, clip: Clip, defaults: Settings, file: Path, name: str, path: Path
) -> tuple[CitywatchConfig, StreamConfig]:
    """``cfg`` with one stream: the clip's file as its source, the named stream's zones (or one
    full-frame zone with all four rules), the rule overrides of ``defaults`` then of the clip merged
    over the stream's, validated as a whole config."""
    stream_id = clip.stream or defaults.stream
    if stream_id is not None:
        try:
            base = cfg.stream(stream_id).model_dump()
        except KeyError:
            ids = ", ".join(s.id for s in cfg.streams) or "none"
            raise EvalInputError(f"clip {name}: no stream {stream_id!r} in {path} (streams: {ids})") from None
    else:
        sid = "eval-" + re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:58]
        zone = {"id": "frame", "polygon": FULL_FRAME, "rules": list(RULE_NAMES)}
        base = {"id": sid, "name": f"eval-clips {name}", "zones": [zone]}
    base.update(url=str(file.resolve()), detect_url=None, enabled=True)
    base["rules"] = _merge(_merge(base.get("rules") or {}, defaults.rules), clip.rules or {})
    if isinstance(clip, VideoClip):
        interval = clip.sample_interval_s or defaults.sample_interval_s
        if interval is not None:
            base["sample_interval_s"] = interval
        base["start_time"] = (
            clip.start_time or defaults.start_time or base.get("start_time") or video_start(file)
        )
    data = {**cfg.model_dump(exclude={"streams"}), "streams": [base]}
    try:
        out = CitywatchConfig.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation_error(exc, CitywatchConfig)
        lines = "\n  ".join(f"{format_path(p.loc)}: {p.message} ({p.hint})" for p in problems)
        raise EvalInputError(f"clip {name}: its settings do not fit {path}:\n  {lines}") from None
    return out, out.streams[0]


def video_start(file: Path) -> datetime:
    """What a file source takes for the wall time of the first frame: metadata, else the file's mtime."""
    try:
        with av.open(str(file)) as container:
            created = parse_creation_time(container.metadata.get("creation_time"))
    except (av.error.FFmpegError, OSError):
        created = None
    return datetime.fromtimestamp(created if created is not None else file.stat().st_mtime, UTC)
