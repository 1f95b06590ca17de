"""YAML with positions, ``${VAR}`` expansion and secret masking for the config loader.

``parse_yaml`` composes the node tree (``yaml.SafeLoader``), builds the data from it and maps
every key path (``("streams", 1, "zones", 0, "polygon")``) to the 1-based line and column of
the key (or of the list item), so every problem can point into the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from detector.config.errors import Loc, Problem, format_path
from detector.contracts.errors import DetectorError

Position = tuple[int, int]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlSyntaxError(DetectorError):
    """The text is not valid YAML; ``line`` and ``column`` are 1-based."""

    def __init__(self, line: int | None, column: int | None, message: str, hint: str) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.message = message
        self.hint = hint


@dataclass
class YamlDocument:
    data: Any
    positions: dict[Loc, Position] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def position(self, loc: Loc) -> Position | None:
        """Position of ``loc``, or of its nearest ancestor present in the file."""
        for end in range(len(loc), -1, -1):
            found = self.positions.get(loc[:end])
            if found is not None:
                return found
        return None


def parse_yaml(text: str) -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, None, f"YAML error: {exc}", _SYNTAX_HINT) from None
    finally:
        loader.dispose()
    doc = YamlDocument(data)
    if node is not None:
        doc.positions[()] = _mark(node)
        _walk(node, (), doc.positions, doc.problems)
    return doc


_SYNTAX_HINT = "check the indentation (spaces only, same depth for siblings) and quoting near this line"


def _syntax_error(exc: yaml.MarkedYAMLError) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    message = f"YAML syntax error: {problem}"
    if exc.context:
        where = exc.context_mark
        same_line = where is None or (mark is not None and where.line == mark.line)
        opened = "" if same_line or where is None else f" started on line {where.line + 1}"
        message += f" ({exc.context}{opened})"
    hint = _SYNTAX_HINT
    if "\\t" in problem or "tab" in problem:
        hint = "replace the tab characters with spaces"
    elif "mapping values are not allowed" in problem:
        hint = "a value containing ': ' must be quoted, and a key's value goes on the same or a deeper line"
    elif "expected ',' or ']'" in problem or "expected ',' or '}'" in problem:
        hint = "close the bracket or brace, and separate items with ', '"
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return YamlSyntaxError(line, column, message, hint)


def _mark(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _key_of(node: Node) -> str | int:
    if isinstance(node, ScalarNode):
        if node.tag == "tag:yaml.org,2002:int":
            try:
                return int(node.value)
            except ValueError:
                return str(node.value)
        return str(node.value)
    return f"<{type(node).__name__}>"


def _walk(node: Node, loc: Loc, positions: dict[Loc, Position], problems: list[Problem]) -> None:
    if isinstance(node, MappingNode):
        seen: dict[str | int, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in merged:
                    found: dict[Loc, Position] = {}
                    _walk(source, loc, found, [])
                    for path, pos in found.items():
                        positions.setdefault(path, pos)
                continue
            key = _key_of(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(
                        (*loc, key),
                        f"key '{key}' appears twice in this mapping (first on line {seen[key]})",
                        "remove or rename one of them; YAML silently keeps only the last",
                    )
                )
            seen[key] = line
            positions[(*loc, key)] = _mark(key_node)
            _walk(value_node, (*loc, key), positions, problems)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            positions[(*loc, index)] = _mark(item)
            _walk(item, (*loc, index), positions, problems)


# -- environment variables -------------------------------------------------------------------

_REF = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ONLY_REFS = re.compile(r"^(\$\{[A-Za-z_][A-Za-z0-9_]*\})+$")


def expand_env(data: Any, environ: Mapping[str, str], loc: Loc = ()) -> tuple[Any, list[Problem]]:
    """Replace every ``${VAR}`` inside string values; a missing variable is a problem."""
    problems: list[Problem] = []
    if isinstance(data, dict):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            out[key], found = expand_env(value, environ, (*loc, key))
            problems += found
        return out, problems
    if isinstance(data, list):
        items: list[Any] = []
        for index, value in enumerate(data):
            item, found = expand_env(value, environ, (*loc, index))
            items.append(item)
            problems += found
        return items, problems
    if not isinstance(data, str) or "${" not in data:
        return data, problems

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if not _NAME.match(name):
            problems.append(
                Problem(
                    loc,
                    f"'${{{match.group(1)}}}' is not a valid environment variable reference",
                    "use letters, digits and '_' only, e.g. ${CITYWATCH_CAM3_PASSWORD}",
                )
            )
            return match.group(0)
        if name not in environ:
            problems.append(
                Problem(
                    loc,
                    f"environment variable {name} is not set (used in {format_path(loc)})",
                    f"export {name}=... (or put it in the service's environment file) and start again",
                )
            )
            return match.group(0)
        return environ[name]

    expanded = _REF.sub(replace, data)
    if not problems and "${" in _REF.sub("", data):
        problems.append(Problem(loc, "unterminated '${' in value", "close the reference: ${NAME}"))
    return expanded, problems


# -- secrets ---------------------------------------------------------------------------------

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)$", re.DOTALL)
_SECRET_QUERY = re.compile(
    r"([?&;](?:password|passwd|pwd|pass|token|secret|key|api_key|apikey|access_token|auth|sig|signature)=)"
    r"[^&#;]*",
    re.IGNORECASE,
)
SECRET_KEYS = frozenset({"password", "passwd", "secret", "token", "api_key", "apikey"})
_MISSING = object()


def mask_url(url: str) -> str:
    """``rtsp://admin:pw@host/x`` -> ``rtsp://admin:***@host/x``; secret query values become ``***``."""
    match = _URL.match(url)
    if match is None:
        return url
    head, authority, rest = match.groups()
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon and not _ONLY_REFS.match(password):
            authority = f"{user}:***@{host}"
    else:
        # A password with an unencoded '/' ends the authority early: mask up to the last '@'.
        before_query = re.split(r"[?#]", rest, maxsplit=1)[0]
        user, colon, tail = authority.partition(":")
        if colon and "@" in before_query and not tail.isdigit():
            host_and_path = (authority + before_query).rpartition("@")[2]
            authority = f"{user}:***@{host_and_path}"
            rest = rest[len(before_query) :]
    return head + authority + _SECRET_QUERY.sub(lambda m: m.group(1) + "***", rest)


def mask_value(value: Any, key: str | int | None = None) -> Any:
    """A copy of ``value`` safe to print: secret keys hidden, URL passwords masked."""
    if isinstance(value, dict):
        return {k: mask_value(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    if isinstance(key, str) and key.lower() in SECRET_KEYS and value is not None:
        return value if isinstance(value, str) and _ONLY_REFS.match(value) else "***"
    if isinstance(value, str):
        return mask_url(value)
    return value


def value_at(data: Any, loc: Loc) -> Any:
    """The raw value at ``loc``, or a sentinel when absent (see :func:`render_value`)."""
    for part in loc:
        if isinstance(data, dict):
            if part not in data:
                return _MISSING
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return _MISSING
    return data


def render_value(data: Any, loc: Loc, limit: int = 100) -> str | None:
    """The masked value at ``loc`` as compact JSON, ``None`` when the key is absent."""
    value = value_at(data, loc)
    if value is _MISSING:
        return None
    key = loc[-1] if loc else None
    text = json.dumps(mask_value(value, key), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
