"""Problems in a configuration value, worded the way ``citywatch config check`` words them.

A :class:`Problem` is where (a key path), what and how to fix it. :func:`describe` turns a
validation error -- a pydantic error type with pydantic's own message, or the same pair produced by
:mod:`detector.contracts.fields` from the exported JSON Schema -- into the message and hint a person
reads. ``detector.config`` words the errors of its pydantic models with it, and the case API words the
zone editor's errors with it, so both say exactly the same thing about the same mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``loc`` relative to the value checked, a message and a fix hint."""

    loc: Loc
    message: str
    hint: str

    def under(self, prefix: Loc) -> Problem:
        """The same problem located below ``prefix``."""
        return Problem((*prefix, *self.loc), self.message, self.hint)


def format_path(loc: Loc) -> str:
    """``("streams", 2, "zones", 0, "polygon")`` -> ``streams[2].zones[0].polygon``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


TYPE_HINTS: Final[Mapping[str, str]] = {
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
"""Hints by error type."""

FIELD_HINTS: Final[Mapping[str, str]] = {
    "active_hours": 'write windows like ["07:00-10:00", "17:00-21:00"]; one may wrap midnight: "22:00-06:00"',
    "timezone": "use an IANA time zone name such as Asia/Shanghai",
    "id": "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "worker_id": "use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "classes": "list rule labels (vehicle, vendor, structure, litter) or model class names",
}
"""Hints by key, for values judged by validators (rule parameters, ids) rather than by their type."""

_BOUNDS: Final = {
    "greater_than": ("gt", "use a number greater than {}"),
    "greater_than_equal": ("ge", "use a number of at least {}"),
    "less_than": ("lt", "use a number below {}"),
    "less_than_equal": ("le", "use a number of at most {}"),
}


def number_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def kind_of(value: Any) -> str:
    """What a value is, for a person: ``text``, ``a number``, ``a list`` ..."""
    names = {str: "text", int: "a number", float: "a number", bool: "true/false", list: "a list"}
    return "nothing" if value is None else names.get(type(value), type(value).__name__)


def hint_for(kind: str, ctx: Mapping[str, Any], key: str | int) -> str:
    if kind in _BOUNDS:
        name, text = _BOUNDS[kind]
        return text.format(number_text(ctx.get(name)))
    if kind == "literal_error":
        return f"use one of: {ctx.get('expected')}"
    if kind == "too_short":
        return "add items"
    if kind == "too_long":
        return f"give at most {ctx.get('max_length')} item(s)"
    if isinstance(key, str) and key in FIELD_HINTS:
        return FIELD_HINTS[key]
    return TYPE_HINTS.get(kind, "")


def describe(
    kind: str,
    msg: str,
    key: str | int,
    *,
    ctx: Mapping[str, Any] | None = None,
    about: str = "",
    allowed: Sequence[str] = (),
    value: Any = None,
) -> tuple[str, str]:
    """Message and hint of one validation error.

    ``kind`` and ``msg`` are pydantic's error type and message, ``key`` the last element of the
    error's location, ``about`` ``"key: description"`` of the field when it is one, ``allowed`` the
    keys of the mapping an unknown key was found in, ``value`` the value judged.
    """
    ctx = ctx or {}
    if kind == "missing":
        return "required key is missing", f"add `{key}:` here" + (f"; {about}" if about else "")
    if kind == "extra_forbidden":
        guess = did_you_mean(str(key), allowed)
        if guess:
            return f"unknown key '{key}'", f"did you mean '{guess}'?"
        if allowed:
            return f"unknown key '{key}'", f"remove it; keys allowed here: {', '.join(allowed)}"
        return f"unknown key '{key}'", "remove it or check its indentation"
    if kind in ("value_error", "assertion_error"):
        msg = msg.split(", ", 1)[1] if ", " in msg else msg
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = f"expected a mapping of keys, got {kind_of(value)}"
    elif kind == "too_short":
        count = ctx.get("min_length")
        msg = f"{key or 'list'} needs at least {count} item{'' if count == 1 else 's'}"
    elif isinstance(key, str) and key and msg.startswith("Input should"):
        msg = f"{key} should" + msg[len("Input should") :]
    hint = hint_for(kind, ctx, key)
    if about and (kind in _BOUNDS or kind in ("too_short",)):
        hint = f"{hint}; {about}"
    elif not hint:
        hint = about or "see the commented example in streams.example.yaml"
    return msg, hint
