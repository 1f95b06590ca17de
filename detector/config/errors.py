"""Config problems and how they are reported: own exceptions, issues with hints.

A validator that finds something wrong raises :class:`ConfigProblem` (a ``ValueError``, so
pydantic wraps it) carrying one or more :class:`Problem` with a location *relative to the
value being validated*, a message and a fix hint. :func:`problems_from_validation_error`
turns a pydantic ``ValidationError`` back into absolute problems, adding hints for
pydantic's own error types. ``config.load_config`` then attaches file, line, column and
the (masked) value to each one, making a :class:`ConfigIssue`.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from detector.contracts.errors import DetectorError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong, before file positions are known."""

    loc: Loc
    message: str
    hint: str


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


def format_path(loc: Loc) -> str:
    """``("streams", 2, "zones", 0, "polygon")`` -> ``streams[2].zones[0].polygon``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


# -- pydantic errors -> problems ------------------------------------------------------------

_TYPE_HINTS: dict[str, str] = {
    "int_parsing": "write a whole number without quotes or units",
    "int_type": "write a whole number without quotes or units",
    "int_from_float": "write a whole number (no decimals)",
    "float_parsing": "write a plain number such as 2.5, without quotes or units",
    "float_type": "write a plain number such as 2.5, without quotes or units",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "string_type": "write a text value; quote it if it looks like a number, date or yes/no",
    "list_type": "write a list: one '- item' per line, or [a, b]",
    "tuple_type": "write a list such as [0.1, 0.2]",
    "dict_type": "write a mapping of 'key: value' lines indented under this key",
    "model_type": "write a mapping of 'key: value' lines indented under this key",
    "model_attributes_type": "write a mapping of 'key: value' lines indented under this key",
    "timezone_aware": "add a UTC offset, e.g. 2026-01-01T08:00:00+08:00",
    "datetime_parsing": "write an ISO 8601 date-time with offset, e.g. 2026-01-01T08:00:00+08:00",
    "datetime_from_date_parsing": "write an ISO 8601 date-time with offset, e.g. 2026-01-01T08:00:00+08:00",
    "datetime_type": "write an ISO 8601 date-time with offset, e.g. 2026-01-01T08:00:00+08:00",
    "path_type": "write a file or directory path",
    "string_too_short": "write a non-empty value",
}

# Hints for values checked by validators we do not own (rule parameters).
_FIELD_HINTS: dict[str, str] = {
    "active_hours": 'write windows like ["07:00-10:00", "17:00-21:00"]; one may wrap midnight: "22:00-06:00"',
    "timezone": "use an IANA time zone name such as Asia/Shanghai",
    "id": "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "worker_id": "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "classes": "list rule labels (vehicle, vendor, structure, litter) or model class names",
}


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
    ctx: dict[str, Any] = err.get("ctx") or {}
    key = loc[-1] if loc else ""
    info = field_info_at(root, loc)
    about = f"{key}: {info.description}" if info is not None and info.description else ""
    msg: str = err["msg"]
    if kind == "missing":
        return "required key is missing", f"add `{key}:` here" + (f"; {about}" if about else "")
    if kind == "extra_forbidden":
        parent = unwrap(type_at(root, loc[:-1]))
        allowed = list(parent.model_fields) if _is_model(parent) else []
        guess = did_you_mean(str(key), allowed)
        if guess:
            return f"unknown key '{key}'", f"did you mean '{guess}'?"
        if allowed:
            return f"unknown key '{key}'", f"remove it; keys allowed here: {', '.join(allowed)}"
        return f"unknown key '{key}'", "remove it or check its indentation"
    if kind in ("value_error", "assertion_error"):
        msg = msg.split(", ", 1)[1] if ", " in msg else msg
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = f"expected a mapping of keys, got {_kind_of(err.get('input'))}"
    elif kind == "too_short":
        count = ctx.get("min_length")
        msg = f"{key or 'list'} needs at least {count} item{'' if count == 1 else 's'}"
    elif isinstance(key, str) and key and msg.startswith("Input should"):
        msg = f"{key} should" + msg[len("Input should") :]
    hint = _hint_for(kind, ctx, key)
    if about and kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short"):
        hint = f"{hint}; {about}"
    elif not hint:
        hint = about or "see the commented example in streams.example.yaml"
    return msg, hint


def _kind_of(value: Any) -> str:
    names = {str: "text", int: "a number", float: "a number", bool: "true/false", list: "a list"}
    return "nothing" if value is None else names.get(type(value), type(value).__name__)


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _hint_for(kind: str, ctx: dict[str, Any], key: str | int) -> str:
    if kind == "greater_than":
        return f"use a number greater than {_num(ctx.get('gt'))}"
    if kind == "greater_than_equal":
        return f"use a number of at least {_num(ctx.get('ge'))}"
    if kind == "less_than":
        return f"use a number below {_num(ctx.get('lt'))}"
    if kind == "less_than_equal":
        return f"use a number of at most {_num(ctx.get('le'))}"
    if kind == "literal_error":
        return f"use one of: {ctx.get('expected')}"
    if kind == "too_short":
        return "add items"
    if kind == "too_long":
        return f"give at most {ctx.get('max_length')} item(s)"
    if isinstance(key, str) and key in _FIELD_HINTS:
        return _FIELD_HINTS[key]
    return _TYPE_HINTS.get(kind, "")


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
