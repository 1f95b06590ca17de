"""Config problems and how they are reported: own exceptions, issues with hints.

A validator that finds something wrong raises :class:`ConfigProblem` (a ``ValueError``, so
pydantic wraps it) carrying one or more :class:`Problem` with a location *relative to the
value being validated*, a message and a fix hint. :func:`problems_from_validation_error`
turns a pydantic ``ValidationError`` back into absolute problems, worded (with hints for
pydantic's own error types) by ``detector.contracts.problems``, which the case API's zone editor
words its errors with too. ``config.load_config`` then attaches file, line, column and
the (masked) value to each one, making a :class:`ConfigIssue`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from detector.contracts.errors import DetectorError
from detector.contracts.problems import Loc, Problem, describe, did_you_mean, format_path

__all__ = [
    "ConfigError",
    "ConfigFileError",
    "ConfigIssue",
    "ConfigProblem",
    "Loc",
    "Problem",
    "did_you_mean",
    "field_info_at",
    "format_path",
    "problems_from_validation_error",
    "type_at",
    "unwrap",
]


class ConfigProblem(DetectorError, ValueError):
    """Raised inside validators; carries problems located relative to the validated value."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ConfigProblem needs at least one problem")
        super().__init__(problems[0].message)
        self.problems = problems

    @classmethod
    def at(cls, loc: Loc, message: str, hint: str) -> ConfigProblem:
        return cls([Problem(loc, message, hint)])


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, ready to print. ``value`` is already masked."""

    file: str
    line: int | None
    column: int | None
    path: str
    value: str | None
    message: str
    hint: str
    loc: Loc = field(default=(), compare=False)
    stream: str | None = None  # id of the streams entry the issue is in, if any

    def format(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        subject = self.path
        if subject and self.value is not None:
            subject += f" = {self.value}"
        body = f"{subject}: {self.message}" if subject else self.message
        return f"{where}: {body} (hint: {self.hint})"

    def __str__(self) -> str:
        return self.format()


class ConfigError(DetectorError):
    """The config cannot be used. ``issues`` lists every problem found, with positions."""

    def __init__(self, issues: list[ConfigIssue], file: str = "") -> None:
        self.issues = issues
        self.file = file or (issues[0].file if issues else "")
        count = len(issues)
        lines = "\n".join(issue.format() for issue in issues)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in {self.file}:\n{lines}")


class ConfigFileError(ConfigError):
    """The config file is missing or cannot be read (``config check`` exits 2)."""

    def __init__(self, file: str, message: str, hint: str) -> None:
        super().__init__([ConfigIssue(file, None, None, "", None, message, hint)], file)


# -- pydantic errors -> problems ------------------------------------------------------------


def problems_from_validation_error(
    exc: ValidationError, root: type[BaseModel], prefix: Loc = ()
) -> list[Problem]:
    """Absolute problems for every error in ``exc``; ``root`` is the model that was validated."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigProblem):
            out.extend(Problem(prefix + loc + p.loc, p.message, p.hint) for p in cause.problems)
            continue
        message, hint = _describe(err, root, loc)
        out.append(Problem(prefix + loc, message, hint))
    return out


def _describe(err: Any, root: type[BaseModel], loc: Loc) -> tuple[str, str]:
    kind: str = err["type"]
    key = loc[-1] if loc else ""
    info = field_info_at(root, loc)
    about = f"{key}: {info.description}" if info is not None and info.description else ""
    allowed: list[str] = []
    if kind == "extra_forbidden":
        parent = unwrap(type_at(root, loc[:-1]))
        allowed = list(parent.model_fields) if _is_model(parent) else []
    return describe(
        kind, err["msg"], key, ctx=err.get("ctx"), about=about, allowed=allowed, value=err.get("input")
    )


# -- walking model annotations ---------------------------------------------------------------


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def type_at(root: type[BaseModel], loc: Loc) -> Any:
    """The annotation of the value at ``loc`` inside ``root`` (``None`` when unknown)."""
    current: Any = root
    for part in loc:
        current = unwrap(current)
        if _is_model(current):
            fields = current.model_fields
            if not isinstance(part, str) or part not in fields:
                return None
            current = fields[part].annotation
            continue
        origin, args = get_origin(current), get_args(current)
        if origin is list and isinstance(part, int):
            current = args[0] if args else None
        elif origin is tuple and isinstance(part, int):
            current = args[min(part, len(args) - 1)] if args else None
        elif origin is dict:
            current = args[1] if len(args) == 2 else None
        else:
            return None
    return current


def field_info_at(root: type[BaseModel], loc: Loc) -> FieldInfo | None:
    """The pydantic field behind the last element of ``loc``, if it names one."""
    if not loc or not isinstance(loc[-1], str):
        return None
    parent = unwrap(type_at(root, loc[:-1]))
    if _is_model(parent):
        info: FieldInfo | None = parent.model_fields.get(loc[-1])
        return info
    return None
