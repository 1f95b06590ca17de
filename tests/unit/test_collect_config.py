"""The ``collect:`` section of streams.yaml (detector/config/collect.py) and its line in `config check`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from detector.config import CitywatchConfig, ConfigError, load_config, load_config_text
from detector.config.check import check

REPO = Path(__file__).resolve().parents[2]
STREAM = "streams:\n  - id: cam\n    url: a.mp4\n"


def load(collect: str, stream_extra: str = "") -> CitywatchConfig:
    return load_config_text(f"version: 1\n{collect}{STREAM}{stream_extra}", environ={}).config


def test_off_by_default_and_every_stream_collects_once_on() -> None:
    cfg = load("")
    assert cfg.collect.enabled is False
    assert cfg.collect.dir == Path("var/collect")
    assert cfg.streams[0].collect is True


def test_the_shipped_streams_yaml_turns_it_on() -> None:
    cfg = load_config(REPO / "streams.yaml").config
    c = cfg.collect
    assert (c.enabled, c.dir, c.budget_mb, c.max_age_days, c.reviewed_max_age_days) == (
        True, Path("var/collect"), 2048, 30, 365,
    )  # fmt: skip
    assert (c.near_threshold.below, c.near_threshold.above, c.uniform_per_hour) == (0.15, 0.05, 2)


@pytest.mark.parametrize(
    ("collect", "enabled", "below"),
    [
        ("collect: {enabled: true, near_threshold: false}\n", False, 0.15),
        ("collect: {enabled: true, near_threshold: true}\n", True, 0.15),
        ("collect: {enabled: true, near_threshold: {below: 0.1}}\n", True, 0.1),
    ],
)
def test_near_threshold_shorthand(collect: str, enabled: bool, below: float) -> None:
    near = load(collect).collect.near_threshold
    assert (near.enabled, near.below) == (enabled, below)


# (the collect section, the stream's extra lines, line, key path, message)
# fmt: off
BROKEN = [
    ("collect:\n  enabled: true\n  budget_mb: 0\n", "", 4, "collect.budget_mb = 0",
     "greater than or equal to 1"),
    ("collect:\n  budget_gb: 2\n", "", 3, "collect.budget_gb", "budget_mb"),
    ("collect:\n  max_age_days: 30\n  reviewed_max_age_days: 7\n", "", 4, "collect.reviewed_max_age_days = 7",
     "shorter than max_age_days"),
    ("collect:\n  per_stream_per_hour: 1\n  uniform_per_hour: 4\n", "", 4, "collect.uniform_per_hour = 4",
     "more than per_stream_per_hour"),
    ("collect:\n  near_threshold: {below: 1.5}\n", "", 3, "collect.near_threshold.below",
     "less than or equal to 1"),
    ("collect:\n  near_threshold: {band: 0.1}\n", "", 3, "collect.near_threshold.band", "unknown key 'band'"),
    ("collect:\n  disagreement_iou: 0\n", "", 3, "collect.disagreement_iou = 0", "greater than 0"),
    ("collect:\n  queue: 0\n", "", 3, "collect.queue = 0", "greater than or equal to 1"),
    ("", "    collect: sometimes\n", 5, "streams[0].collect", "valid boolean"),
]
# fmt: on


@pytest.mark.parametrize(("collect", "extra", "line", "path", "message"), BROKEN)
def test_a_bad_collect_section_is_reported_at_its_line(
    collect: str, extra: str, line: int, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(collect, extra)
    issues = caught.value.issues
    assert any(
        issue.line == line and issue.format().split(": ", 1)[1].startswith(path) and message in issue.format()
        for issue in issues
    ), "\n".join(issue.format() for issue in issues)
    assert all(issue.hint for issue in issues)


@pytest.mark.parametrize(
    ("collect", "extra", "summary"),
    [
        ("", "", "rules: none"),  # off: no word about it
        ("collect: {enabled: true}\n", "", "rules: none; collect: on (var/collect, 2048 MB, 30/365 days)"),
        (
            "collect: {enabled: true, dir: /data/c, budget_mb: 10}\n",
            "    collect: false\n",
            "rules: none; collect: on (/data/c, 10 MB, 30/365 days, 1 stream off)",
        ),
    ],
)
def test_config_check_summary(tmp_path: Path, collect: str, extra: str, summary: str) -> None:
    path = tmp_path / "streams.yaml"
    path.write_text(f"version: 1\n{collect}{STREAM}{extra}")
    out = io.StringIO()
    assert check(path, out=out) == 0
    assert out.getvalue().strip().endswith(summary)
