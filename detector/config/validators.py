"""Field checks for the config schema: zone polygons, rule names, source URLs.

Each raises :class:`ConfigProblem` with locations relative to the checked value, a message
and a fix hint; ``detector.config`` attaches them to fields with ``Annotated`` validators.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from detector.config.errors import ConfigProblem, Problem
from detector.contracts.zones import (
    Point,
    close_polygon,
    polygon_problems,
    polygon_shape_problems,
    rule_name_problems,
)

_Names = TypeVar("_Names", list[str], dict[str, dict[str, Any]])

SOURCE_SCHEMES = ("file", "rtsp", "rtsps", "http", "https")


# -- polygons and rule names (the checks live in detector.contracts.zones: the API runs them too) ----


def check_polygon_shape(value: Any) -> Any:
    """Before type validation: a list of two-number points, with one clear message per bad point."""
    problems = polygon_shape_problems(value)
    if problems:
        raise ConfigProblem(problems)
    return value


def check_polygon(points: list[Point]) -> list[Point]:
    """Coordinates in 0..1, at least 3 points, no zero area, no crossing edges.

    A closing point equal to the first one is dropped.
    """
    problems = polygon_problems(points)
    if problems:
        raise ConfigProblem(problems)
    return close_polygon(points)


def check_rule_names(value: _Names) -> _Names:
    """Every name (list item or mapping key) is one of ``RULE_NAMES``; a list names each once."""
    problems = rule_name_problems(value)
    if problems:
        raise ConfigProblem(problems)
    return value


# -- stream ids ----------------------------------------------------------------------------


def duplicate_stream_ids(ids: Iterable[tuple[int, str]]) -> list[Problem]:
    """A problem at each later ``streams[i].id`` equal (ignoring letter case) to an earlier one."""
    problems: list[Problem] = []
    seen: dict[str, tuple[int, str]] = {}
    for index, stream_id in ids:
        folded = stream_id.casefold()
        if folded not in seen:
            seen[folded] = (index, stream_id)
            continue
        first, first_id = seen[folded]
        same = (
            "is already used by"
            if first_id == stream_id
            else f"differs only in letter case from '{first_id}' in"
        )
        message = f"stream id '{stream_id}' {same} streams[{first}]"
        hint = "give every stream its own id (ids name topics and files: letter case does not count)"
        problems.append(Problem(("streams", index, "id"), message, hint))
    return problems


# -- source URLs -----------------------------------------------------------------------------

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def check_source_url(value: str) -> str:
    """A file path, or a file://, rtsp://, rtsps://, http:// or https:// URL with a host."""
    url = value.strip()
    if not url:
        raise ConfigProblem.at((), "source URL is empty", "give a file path or an rtsp:// URL")
    match = _SCHEME.match(url)
    if match is None:
        return url  # a plain (relative or absolute, possibly Windows) file path
    scheme = match.group(1).lower()
    rest = url[match.end() :]
    if scheme not in SOURCE_SCHEMES:
        if not rest.startswith("//"):
            return url  # e.g. "clip:1.mp4", a file name with a colon
        raise ConfigProblem.at(
            (),
            f"unsupported URL scheme '{scheme}://'",
            "use rtsp://, rtsps://, http(s)://, file:// or a file path; re-stream other protocols "
            "(RTMP, SRT, UDP) through an RTSP server such as MediaMTX",
        )
    if not rest.startswith("//"):
        raise ConfigProblem.at(
            (), f"malformed {scheme} URL: '//' missing after '{scheme}:'", f"write {scheme}://..."
        )
    if scheme == "file":
        return url
    authority = rest[2:].split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        raise ConfigProblem.at(
            (),
            "the user name or password in the URL contains an unencoded '@'",
            "percent-encode '@' as %40 (also inside the environment variable)",
        )
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port == -1 or port == 0:
        raise ConfigProblem.at(
            (), "the URL's port is not a number from 1 to 65535", "write host:554 or leave the port out"
        )
    if not parts.hostname:
        raise ConfigProblem.at((), f"{scheme} URL has no host", f"write {scheme}://host[:port]/path")
    return url
