"""``citywatch config check FILE``: print every problem in a streams.yaml with a fix hint.

Beyond the schema, every rule enabled on a zone must be served by a model that has the rule's label
(``detector.config.labels``); what cannot be checked (a ``.pt`` given by path) is printed as a note.
Exit codes: 0 clean, 1 problems found, 2 the file is missing or unreadable.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from detector.config import (
    CitywatchConfig,
    ConfigError,
    ConfigFileError,
    ConfigIssue,
    LoadedConfig,
    load_config,
    load_config_text,
    locate,
)
from detector.rules.params import RULE_NAMES

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2


def summary(config: CitywatchConfig) -> str:
    """``3 streams (2 enabled), 5 zones; rules: illegal_parking in 3 zones, ...[; collect: on (...)]``."""
    streams = config.streams
    zones = [zone for stream in streams for zone in stream.zones]
    per_rule = Counter(rule for zone in zones for rule in zone.rules)
    rules = ", ".join(
        f"{rule} in {per_rule[rule]} zone{_s(per_rule[rule])}" for rule in RULE_NAMES if per_rule[rule]
    )
    enabled = sum(1 for stream in streams if stream.enabled)
    collect = config.collect
    kept = f"; {collect.describe(sum(1 for s in streams if not s.collect))}" if collect.enabled else ""
    return (
        f"{len(streams)} stream{_s(len(streams))} ({enabled} enabled), {len(zones)} zone{_s(len(zones))}; "
        f"rules: {rules or 'none'}{kept}"
    )


def _stream_label(stream: str, entry: str) -> str:
    return entry if stream == entry else f"{stream} ({entry})"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


@dataclass(frozen=True)
class CheckResult:
    """What ``config check`` found: its exit code, the lines it prints, and the config when it is clean."""

    code: int
    lines: list[str]
    loaded: LoadedConfig | None = None


def run_check(path: str | Path, text: str | None = None) -> CheckResult:
    """Validate ``path`` (or ``text``, its content already read) as ``config check`` does, printing
    nothing: the running detector's live reload (``detector.commands.live``) logs the same lines."""
    try:
        if text is None:
            loaded = load_config(path, strict=True)
        else:
            loaded = load_config_text(text, file=str(path), strict=True)
    except ConfigFileError as exc:
        return CheckResult(EXIT_UNREADABLE, [issue.format() for issue in exc.issues])
    except ConfigError as exc:
        return _report(path, exc.issues, [])
    from detector.config.labels import check_labels

    problems, notes = check_labels(loaded.config, loaded.base_dir)
    lines = [f"{path}: note: {note}" for note in notes]
    if problems:
        return _report(path, locate(loaded, problems), lines)
    lines.append(f"{path}: OK: {summary(loaded.config)}")
    return CheckResult(EXIT_OK, lines, loaded)


def check(path: str | Path, *, out: TextIO | None = None) -> int:
    """Validate ``path``, print each issue then a summary line; return the exit code."""
    stream = sys.stdout if out is None else out
    result = run_check(path)
    for line in result.lines:
        print(line, file=stream)
    return result.code


def _report(path: str | Path, issues: list[ConfigIssue], lines: list[str]) -> CheckResult:
    lines = lines + [issue.format() for issue in issues]
    count = len(issues)
    streams = list(
        dict.fromkeys(
            _stream_label(issue.stream, issue.path[: issue.path.index("]") + 1])
            for issue in issues
            if issue.stream is not None
        )
    )
    where = f"; streams with problems: {', '.join(streams)}" if streams else ""
    lines.append(f"{path}: {count} problem{_s(count)}{where}")
    return CheckResult(EXIT_PROBLEMS, lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="citywatch config check",
        description="Validate a streams.yaml and print every problem with file:line:column and a fix hint.",
    )
    parser.add_argument("file", type=Path, help="the streams.yaml to check")
    args = parser.parse_args(argv)
    return check(args.file)


if __name__ == "__main__":
    raise SystemExit(main())
