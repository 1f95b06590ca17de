"""Load ``streams.yaml``: YAML with line numbers, ``${VAR}`` secrets, every problem at once.

The schema lives in ``detector.config.schema`` (re-exported here). Secrets come from the
environment (``${CITYWATCH_CAM3_PASSWORD}``), are expanded at load and never printed:
``mask_url`` / ``StreamConfig.display_url``.

``load_config(path)`` validates and raises :class:`ConfigError` listing every problem with
file, line, column, key path, masked value, message and hint. ``strict=False`` drops broken
stream entries (reported in ``LoadedConfig.issues`` / ``skipped_streams``) so the others still
run; problems outside ``streams`` are always fatal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from detector.config.errors import (
    ConfigError,
    ConfigFileError,
    ConfigIssue,
    Loc,
    Problem,
    format_path,
    problems_from_validation_error,
)
from detector.config.model import ModelConfig
from detector.config.schema import (
    ApiConfig,
    CitywatchConfig,
    DefaultsConfig,
    EvidenceConfig,
    LocationConfig,
    MqttConfig,
    OutboxConfig,
    StreamConfig,
    ZoneConfig,
)
from detector.config.validators import duplicate_stream_ids
from detector.config.yamlparse import (
    YamlDocument,
    YamlSyntaxError,
    expand_env,
    mask_url,
    parse_yaml,
    render_value,
)

__all__ = [
    "ApiConfig",
    "CitywatchConfig",
    "ConfigError",
    "ConfigFileError",
    "ConfigIssue",
    "DefaultsConfig",
    "EvidenceConfig",
    "LoadedConfig",
    "LocationConfig",
    "ModelConfig",
    "MqttConfig",
    "OutboxConfig",
    "StreamConfig",
    "ZoneConfig",
    "load_config",
    "load_config_text",
    "locate",
    "mask_url",
]


@dataclass
class LoadedConfig:
    """A validated config; with ``strict=False`` also the streams left out and why."""

    path: str
    config: CitywatchConfig
    issues: list[ConfigIssue] = field(default_factory=list)
    skipped_streams: list[str] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        """Directory of the config file: relative file paths in it are meant from here."""
        return Path(self.path).resolve().parent


def load_config(
    path: str | Path, *, strict: bool = True, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read, expand ``${VAR}``s and validate ``path``; see the module docstring."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(
            file, "file not found", "check the path, or copy streams.example.yaml"
        ) from None
    except IsADirectoryError:
        raise ConfigFileError(file, "is a directory, not a file", "give the path of the YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        hint = "check the file's permissions" if isinstance(exc, OSError) else "save the file as UTF-8"
        raise ConfigFileError(file, f"cannot read the file: {reason}", hint) from None
    return load_config_text(text, file=file, strict=strict, environ=environ)


def load_config_text(
    text: str, *, file: str = "<string>", strict: bool = True, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Like :func:`load_config` for YAML already in memory; ``file`` names it in issues."""
    try:
        doc = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError(
            [ConfigIssue(file, exc.line, exc.column, "", None, exc.message, exc.hint)], file
        ) from None
    if not isinstance(doc.data, dict):
        what = "empty" if doc.data is None else f"a {type(doc.data).__name__}, not a mapping"
        problem = Problem((), f"the file is {what}", "start with `version: 1`, then mqtt:, streams: ... keys")
        raise ConfigError([_issue(file, doc, problem)], file)
    data, env_problems = expand_env(doc.data, os.environ if environ is None else environ)
    streams = data.get("streams")
    ids = (
        [(i, s["id"]) for i, s in enumerate(streams) if isinstance(s, dict) and isinstance(s.get("id"), str)]
        if isinstance(streams, list)
        else []
    )
    problems = doc.problems + env_problems + duplicate_stream_ids(ids)
    config, problems, dropped = _validate_rounds(data, problems)
    issues = sorted(
        (_issue(file, doc, p) for p in problems), key=lambda i: (i.line or 0, i.column or 0, i.path)
    )
    fatal = config is None or any(_stream_index(p.loc) is None for p in problems)
    if config is None or (issues and (strict or fatal)):
        raise ConfigError(issues, file)
    skipped = [_stream_name(streams, index) for index in sorted(dropped)]
    return LoadedConfig(file, config, issues, skipped)


def locate(loaded: LoadedConfig, problems: list[Problem]) -> list[ConfigIssue]:
    """Issues with file, line, column and masked value for problems found in a loaded config by later
    checks (e.g. the model labels of ``config check``)."""
    doc = parse_yaml(Path(loaded.path).read_text(encoding="utf-8"))
    issues = (_issue(loaded.path, doc, p) for p in problems)
    return sorted(issues, key=lambda i: (i.line or 0, i.column or 0, i.path))


def _issue(file: str, doc: YamlDocument, problem: Problem) -> ConfigIssue:
    line, column = doc.position(problem.loc) or (None, None)
    value = render_value(doc.data, problem.loc) if problem.loc else None
    index = _stream_index(problem.loc)
    stream = None if index is None else _stream_name(doc.data.get("streams"), index)
    path = format_path(problem.loc)
    return ConfigIssue(file, line, column, path, value, problem.message, problem.hint, problem.loc, stream)


def _stream_index(loc: Loc) -> int | None:
    if len(loc) >= 2 and loc[0] == "streams" and isinstance(loc[1], int):
        return loc[1]
    return None


def _stream_name(streams: Any, index: int) -> str:
    entry = streams[index] if isinstance(streams, list) and index < len(streams) else None
    ident = entry.get("id") if isinstance(entry, dict) else None
    return ident if isinstance(ident, str) else f"streams[{index}]"


def _validate_rounds(
    data: dict[str, Any], problems: list[Problem]
) -> tuple[CitywatchConfig | None, list[Problem], set[int]]:
    """Validate; set aside each broken stream (or top-level section) and validate again.

    Pydantic stops at a model whose fields fail before its model validators run, so one round
    would hide e.g. duplicate ids behind a bad polygon. Each round removes the culprits of the
    problems found so far, until the rest validates: every problem is reported at once.
    """
    problems = list(problems)
    known = {(p.loc, p.message) for p in problems}
    bad_streams: set[int] = set()
    bad_keys: set[str] = set()
    for p in problems:
        _blame(p.loc, bad_streams, bad_keys)
    streams = data.get("streams")
    config: CitywatchConfig | None = None
    while True:
        candidate = {k: v for k, v in data.items() if k not in bad_keys}
        if "version" in bad_keys:
            candidate["version"] = 1
        index_map: list[int] = []
        if isinstance(streams, list) and "streams" not in bad_keys:
            index_map = [i for i in range(len(streams)) if i not in bad_streams]
            candidate["streams"] = [streams[i] for i in index_map]
        try:
            config = CitywatchConfig.model_validate(candidate)
            break
        except ValidationError as exc:
            progress = False
            for p in problems_from_validation_error(exc, CitywatchConfig):
                index = _stream_index(p.loc)
                loc = p.loc if index is None else ("streams", index_map[index], *p.loc[2:])
                if (loc, p.message) not in known:
                    known.add((loc, p.message))
                    problems.append(Problem(loc, p.message, p.hint))
                    progress = _blame(loc, bad_streams, bad_keys) or progress
            if not progress:
                break
    # A stream set aside before its fields were checked (duplicate id, missing variable) is
    # checked on its own too, so its other problems show in the same run.
    taken = {p.loc for p in problems}
    entries: list[Any] = streams if isinstance(streams, list) else []
    for index in sorted(i for i in bad_streams if i < len(entries)):
        try:
            StreamConfig.model_validate(entries[index])
        except ValidationError as exc:
            found = problems_from_validation_error(exc, StreamConfig, ("streams", index))
            problems += [p for p in found if p.loc not in taken and (p.loc, p.message) not in known]
    return config, problems, bad_streams


def _blame(loc: Loc, bad_streams: set[int], bad_keys: set[str]) -> bool:
    """Mark the stream or top-level key a problem belongs to; True if newly marked."""
    index = _stream_index(loc)
    if index is not None:
        new = index not in bad_streams
        bad_streams.add(index)
        return new
    if loc and isinstance(loc[0], str):
        new = loc[0] not in bad_keys
        bad_keys.add(loc[0])
        return new
    return False
