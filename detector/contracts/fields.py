"""A plain value checked against a JSON Schema exported from pydantic, the way pydantic validates it.

``streams.yaml`` is read by pydantic models in lax mode: ``"5"`` is a number, ``yes`` a boolean,
``2.0`` an integer. :class:`SchemaChecker` judges a value against a node of such a schema (objects
with ``properties`` are models, ``additionalProperties`` dicts, ``$ref`` and ``anyOf`` with null) by
the same rules, and reports each error with pydantic's error type and message, worded by
:func:`detector.contracts.problems.describe`: what the case API says about a zone is what
``citywatch config check`` says about it. What a schema cannot express (a polygon's geometry, rule
names, time windows) is checked by the ``custom`` checks given per key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from detector.contracts.problems import Loc, Problem, describe

JsonNode = Mapping[str, Any]
Custom = Callable[["SchemaChecker", JsonNode, Any, Loc], list[Problem]]
"""A check replacing the schema's for one key: ``(checker, node, value, loc) -> problems``."""

_TRUE: Final = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE: Final = frozenset({"0", "off", "f", "false", "n", "no"})
_BOUNDS: Final = (
    ("minimum", "ge", "greater_than_equal", "greater than or equal to", lambda v, b: v >= b),
    ("exclusiveMinimum", "gt", "greater_than", "greater than", lambda v, b: v > b),
    ("maximum", "le", "less_than_equal", "less than or equal to", lambda v, b: v <= b),
    ("exclusiveMaximum", "lt", "less_than", "less than", lambda v, b: v < b),
)


def _bound_text(value: float) -> str:
    """A bound as pydantic prints it: ``0`` for 0.0, ``0.5`` for 0.5."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class SchemaChecker:
    """Checks values against nodes of one schema's ``$defs``."""

    def __init__(self, defs: Mapping[str, Any], custom: Mapping[str, Custom] | None = None) -> None:
        self.defs = defs
        self.custom = dict(custom or {})

    def resolve(self, node: JsonNode) -> JsonNode:
        while "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            node = {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def error(
        self,
        kind: str,
        msg: str,
        loc: Loc,
        value: Any,
        *,
        about: str = "",
        ctx: Mapping[str, Any] | None = None,
        allowed: tuple[str, ...] = (),
    ) -> Problem:
        key = loc[-1] if loc else ""
        message, hint = describe(kind, msg, key, ctx=ctx, about=about, allowed=allowed, value=value)
        return Problem(loc, message, hint)

    def check(self, node: JsonNode, value: Any, loc: Loc = (), *, about: str = "") -> list[Problem]:
        """Every problem of ``value`` against ``node``; ``about`` describes the field, if it is one."""
        node = self.resolve(node)
        if "anyOf" in node:
            branches = [self.resolve(b) for b in node["anyOf"]]
            if value is None and any(b.get("type") == "null" for b in branches):
                return []
            rest = [b for b in branches if b.get("type") != "null"]
            if len(rest) != 1:
                return []  # a real union: not used by the zones; the detector judges it
            node = rest[0]
        kind = node.get("type")
        if kind == "object":
            if "properties" in node:
                return self._model(node, value, loc, about)
            return self._dict(node, value, loc, about)
        if kind == "array":
            return self._list(node, value, loc, about)
        if kind == "string":
            return self._string(node, value, loc, about)
        if kind in ("number", "integer"):
            return self._number(node, value, loc, about)
        if kind == "boolean":
            return self._bool(value, loc, about)
        return []

    # -- containers ------------------------------------------------------------------------
    def _model(self, node: JsonNode, value: Any, loc: Loc, about: str) -> list[Problem]:
        if not isinstance(value, Mapping):
            title = node.get("title", "the model")
            msg = f"Input should be a valid dictionary or instance of {title}"
            return [self.error("model_type", msg, loc, value, about=about)]
        props: Mapping[str, JsonNode] = node["properties"]
        required = set(node.get("required", ()))
        out: list[Problem] = []
        for name, sub in props.items():
            where = (*loc, name)
            field_about = f"{name}: {sub['description']}" if sub.get("description") else ""
            if name not in value:
                if name in required:
                    out.append(self.error("missing", "Field required", where, None, about=field_about))
                continue
            custom = self.custom.get(name)
            if custom is not None:
                out += custom(self, sub, value[name], where)
            else:
                out += self.check(sub, value[name], where, about=field_about)
        if node.get("additionalProperties") is False:
            allowed = tuple(props)
            for name in value:
                if name not in props:
                    msg = "Extra inputs are not permitted"
                    out.append(self.error("extra_forbidden", msg, (*loc, name), value[name], allowed=allowed))
        return out

    def _dict(self, node: JsonNode, value: Any, loc: Loc, about: str) -> list[Problem]:
        if not isinstance(value, Mapping):
            return [self.error("dict_type", "Input should be a valid dictionary", loc, value, about=about)]
        item = node.get("additionalProperties")
        if not isinstance(item, Mapping):
            return []
        out: list[Problem] = []
        for key, sub in value.items():
            out += self.check(item, sub, (*loc, key))
        return out

    def _list(self, node: JsonNode, value: Any, loc: Loc, about: str) -> list[Problem]:
        if not isinstance(value, list | tuple):
            return [self.error("list_type", "Input should be a valid list", loc, value, about=about)]
        out: list[Problem] = []
        item = node.get("items")
        if isinstance(item, Mapping):
            for index, sub in enumerate(value):
                out += self.check(item, sub, (*loc, index))
        if out:
            return out
        least, most = node.get("minItems"), node.get("maxItems")
        if least is not None and len(value) < least:
            ctx = {"field_type": "List", "min_length": least, "actual_length": len(value)}
            s = "" if least == 1 else "s"
            msg = f"List should have at least {least} item{s} after validation, not {len(value)}"
            out.append(self.error("too_short", msg, loc, value, about=about, ctx=ctx))
        elif most is not None and len(value) > most:
            ctx = {"field_type": "List", "max_length": most, "actual_length": len(value)}
            s = "" if most == 1 else "s"
            msg = f"List should have at most {most} item{s} after validation, not {len(value)}"
            out.append(self.error("too_long", msg, loc, value, about=about, ctx=ctx))
        return out

    # -- scalars ---------------------------------------------------------------------------
    def _string(self, node: JsonNode, value: Any, loc: Loc, about: str) -> list[Problem]:
        if not isinstance(value, str):
            return [self.error("string_type", "Input should be a valid string", loc, value, about=about)]
        least = node.get("minLength")
        if least is not None and len(value) < least:
            s = "" if least == 1 else "s"
            msg = f"String should have at least {least} character{s}"
            return [self.error("string_too_short", msg, loc, value, about=about, ctx={"min_length": least})]
        pattern = node.get("pattern")
        if pattern is not None and re.search(pattern, value) is None:
            msg, ctx = f"String should match pattern '{pattern}'", {"pattern": pattern}
            return [self.error("string_pattern_mismatch", msg, loc, value, about=about, ctx=ctx)]
        return []

    def _number(self, node: JsonNode, value: Any, loc: Loc, about: str) -> list[Problem]:
        number = (_as_int if node.get("type") == "integer" else _as_float)(value)
        if isinstance(number, tuple):
            kind, msg = number
            return [self.error(kind, msg, loc, value, about=about)]
        for keyword, name, kind, words, holds in _BOUNDS:
            bound = node.get(keyword)
            if bound is not None and not holds(number, bound):
                msg = f"Input should be {words} {_bound_text(bound)}"
                return [self.error(kind, msg, loc, value, about=about, ctx={name: bound})]
        return []

    def _bool(self, value: Any, loc: Loc, about: str) -> list[Problem]:
        if isinstance(value, bool):
            return []
        if isinstance(value, int | float) and value in (0, 1):
            return []
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return []
        if isinstance(value, str | int | float):
            msg = "Input should be a valid boolean, unable to interpret input"
            return [self.error("bool_parsing", msg, loc, value, about=about)]
        return [self.error("bool_type", "Input should be a valid boolean", loc, value, about=about)]


def _as_float(value: Any) -> float | tuple[str, str]:
    if isinstance(value, bool | int | float):
        try:
            return float(value)
        except OverflowError:
            return ("float_type", "Input should be a valid number")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return ("float_parsing", "Input should be a valid number, unable to parse string as a number")
    return ("float_type", "Input should be a valid number")


def _as_int(value: Any) -> float | tuple[str, str]:
    parsing = ("int_parsing", "Input should be a valid integer, unable to parse string as an integer")
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ("finite_number", "Input should be a finite number")
        if not value.is_integer():
            return ("int_from_float", "Input should be a valid integer, got a number with a fractional part")
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value.strip())
        except ValueError:
            return parsing
        return int(number) if number.is_integer() else parsing
    return ("int_type", "Input should be a valid integer")
