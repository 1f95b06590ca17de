"""``EXPECTATIONS.yaml``: the schema (pydantic, ``extra="forbid"``) and its loader.

The format is documented in :mod:`detector.commands.evalclips`. :func:`load_expectations` reads a file,
validates every clip and raises :class:`ExpectationsError` listing every problem with the file,
line, clip and key path (and a fix hint), the way ``citywatch config check`` does for a config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic import model_validator as after

from detector.config.errors import ConfigProblem, Problem, format_path, problems_from_validation_error
from detector.config.yamlparse import YamlSyntaxError, parse_yaml
from detector.contracts.errors import DetectorError
from detector.rules.params import RULE_NAMES, RulesConfig

RuleName = Literal["illegal_parking", "street_vending", "illegal_structure", "unclean_road"]
Label = Literal["vehicle", "vendor", "structure", "litter"]

#: the rule label each rule reads (DESIGN.md), and back
RULE_LABEL: dict[str, str] = {
    "illegal_parking": "vehicle",
    "street_vending": "vendor",
    "illegal_structure": "structure",
    "unclean_road": "litter",
}
LABEL_RULE: dict[str, str] = {label: rule for rule, label in RULE_LABEL.items()}
#: labels a still is checked against by default (a still cannot show whether a vehicle is parked)
STILL_CHECKED_LABELS = ("vendor", "litter", "structure")


def _check_rules(cls: type[BaseModel], value: dict[str, dict[str, Any]] | None) -> Any:
    """Rule overrides as a stream's ``rules:`` takes them: known rules and parameters, valid values."""
    try:
        RulesConfig().merged(value)
    except ValidationError as exc:
        raise ConfigProblem(problems_from_validation_error(exc, RulesConfig)) from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _region(value: Any) -> Any:
    """``[x, y]`` (a point) or ``[x1, y1, x2, y2]`` (a box), fractions of the frame (0..1)."""
    if not isinstance(value, list | tuple) or len(value) not in (2, 4):
        raise ConfigProblem.at(
            (), f"a region is [x, y] or [x1, y1, x2, y2], got {value!r}", "write e.g. [0.1, 0.6, 0.3, 0.8]"
        )
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ConfigProblem.at((), f"region {value!r} must hold numbers", "write e.g. [0.1, 0.6, 0.3, 0.8]")
    if not all(0.0 <= v <= 1.0 for v in value):
        raise ConfigProblem.at(
            (), f"region {list(value)} is not within 0..1", "give fractions of frame width and height"
        )
    if len(value) == 4 and not (value[0] < value[2] and value[1] < value[3]):
        raise ConfigProblem.at(
            (), f"box {list(value)} needs x1 < x2 and y1 < y2", "write [left, top, right, bottom]"
        )
    return [float(v) for v in value]


Region = Annotated[list[float], BeforeValidator(_region)]


class Count(_Strict):
    """How many cases: ``count: 2`` is exactly two; ``{min: 0, max: 1}`` is at most one."""

    min: int = Field(default=0, ge=0, description="At least this many cases.")
    max: int | None = Field(default=None, ge=0, description="At most this many; None: no upper bound.")

    @after(mode="after")
    def _order(self) -> Count:
        if self.max is not None and self.min > self.max:
            raise ConfigProblem.at(("min",), f"min {self.min} is above max {self.max}", "swap them")
        return self

    def __str__(self) -> str:
        if self.max == self.min:
            return str(self.min)
        return f"{self.min}..{'' if self.max is None else self.max}"


def _count(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"min": value, "max": value}
    return value


class MustOpen(_Strict):
    """Cases of one rule whose violation box lies in ``where``."""

    rule: RuleName = Field(description="Rule that must open the case(s).")
    where: Region | None = Field(
        default=None,
        description="[x, y]: the case's box contains the point; [x1, y1, x2, y2]: the centre of the "
        "case's box lies in the box; none: anywhere in the frame.",
    )
    count: Annotated[Count, BeforeValidator(_count)] = Field(
        default_factory=lambda: Count(min=1, max=1), description="How many cases (default exactly 1)."
    )
    note: str | None = Field(default=None, description="What a person sees there.")


class Detect(_Strict):
    """A still must show an object of ``label`` in ``where`` at ``min_score`` or more."""

    label: Label = Field(description="Rule label: vehicle, vendor, structure or litter.")
    where: Region = Field(description="Point the box contains, or box the detection's centre lies in.")
    min_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Lowest score that counts; None: the rule's min_score."
    )
    note: str | None = Field(default=None, description="What a person sees there.")


class Allow(_Strict):
    """Detections of ``label`` in ``where`` are fine at any score (neither false nor required)."""

    label: Label = Field(description="Rule label: vehicle, vendor, structure or litter.")
    where: Region = Field(description="Point the box contains, or box the detection's centre lies in.")
    note: str | None = Field(default=None, description="Why it is allowed.")


class Settings(_Strict):
    """What a clip runs with; ``defaults:`` gives them to every clip, a clip may override each."""

    config: Path | None = Field(
        default=None,
        description="streams.yaml whose models and defaults.rules apply (relative to this file); "
        "`--config` overrides it; none: ./streams.yaml.",
    )
    stream: str | None = Field(
        default=None,
        min_length=1,
        description="Stream id in the config whose zones, rules and rule models apply; none: one zone "
        "over the whole frame with all four rules.",
    )
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Rule overrides {rule: {param: value}}, e.g. dwell_s: 30."
    )
    sample_interval_s: float | None = Field(
        default=None, gt=0.0, le=3600.0, description="Seconds between samples; none: the stream's (2)."
    )
    start_time: AwareDatetime | None = Field(
        default=None, description="Wall time of the first frame (ISO 8601 with offset); for active_hours."
    )

    validate_rules = field_validator("rules")(_check_rules)


class _Clip(_Strict):
    name: str | None = Field(default=None, min_length=1, description="Name in reports; default: file stem.")
    note: str | None = Field(default=None, description="What the clip shows.")
    config: Path | None = Field(default=None, description="As in defaults.")
    stream: str | None = Field(default=None, min_length=1, description="As in defaults.")
    rules: dict[str, dict[str, Any]] | None = Field(default=None, description="As in defaults (replaces).")

    validate_rules = field_validator("rules")(_check_rules)


class VideoClip(_Clip):
    """A video replayed through the pipeline; every opened case must be expected."""

    video: Path = Field(description="Video file, relative to the expectations file.")
    sample_interval_s: float | None = Field(default=None, gt=0.0, le=3600.0, description="As in defaults.")
    start_time: AwareDatetime | None = Field(default=None, description="As in defaults.")
    must_open: list[MustOpen] = Field(default_factory=list, description="Cases that must open.")
    must_not_open: list[RuleName] = Field(default_factory=list, description="Rules that open no case.")

    @after(mode="after")
    def _no_conflict(self) -> VideoClip:
        problems = [
            Problem(("must_not_open", i), f"{rule} is also listed in must_open",
                    "remove it from one of the two lists")
            for i, rule in enumerate(self.must_not_open)
            if any(m.rule == rule and (m.count.max is None or m.count.max > 0) for m in self.must_open)
        ]  # fmt: skip
        if problems:
            raise ConfigProblem(problems)
        return self


class StillClip(_Clip):
    """A still run through the models; no detection at rule thresholds unless expected or allowed."""

    image: Path = Field(description="Image file, relative to the expectations file.")
    max_score: dict[Label, float] = Field(
        default_factory=dict,
        description="Highest score allowed per label; default: vendor, litter, structure at their "
        "rule's min_score (vehicle unchecked unless given).",
    )
    must_detect: list[Detect] = Field(default_factory=list, description="Objects that must be detected.")
    allow: list[Allow] = Field(default_factory=list, description="Regions where a label may be detected.")

    @after(mode="after")
    def _scores(self) -> StillClip:
        for label, score in self.max_score.items():
            if not 0.0 <= score <= 1.0:
                raise ConfigProblem.at(("max_score", label), f"score {score} is not within 0..1", "use 0..1")
        return self


Clip = VideoClip | StillClip


class ExpectationsFile(_Strict):
    version: Literal[1] = Field(description="Format version; write `version: 1`.")
    defaults: Settings = Field(default_factory=lambda: Settings(), description="Settings of every clip.")
    clips: list[dict[str, Any]] = Field(min_length=1, description="Videos and stills with expectations.")


@dataclass(frozen=True)
class Expectations:
    path: Path
    defaults: Settings
    clips: list[Clip]

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent


@dataclass(frozen=True)
class Issue:
    file: str
    line: int | None
    column: int | None
    clip: str | None
    path: str
    message: str
    hint: str

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.column) if p is not None)
        key = self.path
        if self.clip:  # clips[2].must_open[0].count -> clips[2] (name): must_open[0].count
            key = re.sub(r"^(clips\[\d+\])\.?", lambda m: f"{m.group(1)} ({self.clip}): ", key).rstrip(": ")
        return (
            f"{where}: "
            + (f"{key}: " if key else "")
            + self.message
            + (f" — {self.hint}" if self.hint else "")
        )


class ExpectationsError(DetectorError):
    """The expectations file (or a file it names) cannot be used; ``issues`` says where and why."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


def clip_name(clip: Clip) -> str:
    return clip.name or (clip.video if isinstance(clip, VideoClip) else clip.image).stem


def load_expectations(path: Path) -> Expectations:
    """Read and validate ``path``; raises :class:`ExpectationsError` with every problem."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        raise ExpectationsError([Issue(file, None, None, None, "", f"cannot read: {reason}", "")]) from None
    try:
        doc = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise ExpectationsError(
            [Issue(file, exc.line, exc.column, None, "", exc.message, exc.hint)]
        ) from None
    data = doc.data
    if not isinstance(data, dict):
        hint = "start with `version: 1`, then `clips:`"
        raise ExpectationsError([Issue(file, None, None, None, "", "the file is not a mapping", hint)])
    problems = list(doc.problems)
    top: ExpectationsFile | None = None
    try:
        top = ExpectationsFile.model_validate(data)
    except ValidationError as exc:
        problems += problems_from_validation_error(exc, ExpectationsFile)
    clips: list[Clip] = []
    names: dict[str, int] = {}
    given = data.get("clips")
    raw: list[Any] = given if isinstance(given, list) else []
    for index, entry in enumerate(raw):
        clip, found = _validate_clip(entry, index)
        problems += found
        if clip is None:
            continue
        name = clip_name(clip)
        if name in names:
            message = f"clip name {name!r} is already used by clips[{names[name]}]"
            problems.append(Problem(("clips", index), message, "give one of them its own `name:`"))
        names.setdefault(name, index)
        clips.append(clip)
    if problems or top is None:
        raise ExpectationsError([_issue(file, doc, raw, p) for p in problems])
    return Expectations(path, top.defaults, clips)


def _validate_clip(entry: Any, index: int) -> tuple[Clip | None, list[Problem]]:
    loc = ("clips", index)
    if not isinstance(entry, dict) or ("video" in entry) == ("image" in entry):
        message = "a clip is a mapping with either `video:` or `image:`"
        return None, [Problem(loc, message, "add `video: FILE` or `image: FILE` (not both)")]
    model: type[VideoClip] | type[StillClip] = VideoClip if "video" in entry else StillClip
    try:
        return model.model_validate(entry), []
    except ValidationError as exc:
        return None, problems_from_validation_error(exc, model, loc)


def _issue(file: str, doc: Any, raw: list[Any], p: Problem) -> Issue:
    if p.loc and p.loc[-1] == "[key]":  # pydantic's place for a bad mapping key
        key = p.loc[-2] if len(p.loc) >= 2 else ""
        p = Problem(p.loc[:-1], p.message.replace("[key]", f"key {key!r}", 1), p.hint)
    line, column = doc.position(p.loc) or (None, None)
    clip = None
    if len(p.loc) >= 2 and p.loc[0] == "clips" and isinstance(p.loc[1], int) and p.loc[1] < len(raw):
        entry = raw[p.loc[1]]
        if isinstance(entry, dict):
            named = entry.get("name") or entry.get("video") or entry.get("image")
            clip = str(named) if named else None
    return Issue(file, line, column, clip, format_path(p.loc), p.message, p.hint)


__all__ = [
    "LABEL_RULE",
    "RULE_LABEL",
    "RULE_NAMES",
    "STILL_CHECKED_LABELS",
    "Allow",
    "Clip",
    "Count",
    "Detect",
    "Expectations",
    "ExpectationsError",
    "Issue",
    "MustOpen",
    "Settings",
    "StillClip",
    "VideoClip",
    "clip_name",
    "load_expectations",
]
