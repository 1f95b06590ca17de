"""The detector's ``streams.yaml`` as the case API reads and edits it (``CITYWATCH_STREAMS_FILE``).

``GET /streams`` shows each stream's zones from it; ``PUT /streams/{id}/zones`` replaces one stream's
``zones:`` list after judging it with ``detector.contracts.zones.check_zones`` -- the checks and the
words of ``citywatch config check`` -- and writes the file back with ruamel.yaml's round trip: comments,
blank lines, key order, quoting and indentation stay; a zone whose id is kept keeps its comments and
unchanged keys. The write is atomic (a temporary file beside it, fsynced, renamed over it), so the
detector, which reloads the file when it changes, never reads half of it. Without the setting, or with
a file the API may not write, the zones are read-only and the answer says why (409).
"""

from __future__ import annotations

import io
import itertools
import os
import re
import stat
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from api.errors import ConflictError, InvalidRequestError, NotFoundError
from api.services.auth import Role
from detector.contracts.problems import Problem, format_path
from detector.contracts.zones import check_zones

ZONE_KEYS: Final = ("id", "name", "polygon", "rules", "params")
ZONE_EDITORS: Final = frozenset({Role.admin})
"""Who may save zones (``PUT /streams/{id}/zones``)."""
_BLOCK_KEY: Final = re.compile(r"^(\s*)(- )?([^\s#'\"-][^:#]*|'[^']*'|\"[^\"]*\"):\s*(#.*)?$")


class StreamsFileError(ConflictError):
    """The streams file is not set, cannot be read or parsed, or cannot be written (409)."""


class StreamNotInFileError(NotFoundError):
    """The streams file has no stream of that id (404)."""


class ZonesInvalidError(InvalidRequestError):
    """The zones break the rules ``config check`` applies; ``problems`` located in the zones list."""

    def __init__(self, stream_index: int, problems: list[Problem]) -> None:
        self.stream_index = stream_index
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the zones: {problems[0].message}")

    def detail(self) -> list[dict[str, Any]]:
        """FastAPI-shaped 422 items, with ``config check``'s key path and hint."""
        prefix = ("streams", self.stream_index, "zones")
        return [
            {"loc": ["body", *p.loc], "msg": p.message, "type": "value_error", "hint": p.hint,
             "path": format_path((*prefix, *p.loc))}
            for p in self.problems
        ]  # fmt: skip


@dataclass(frozen=True)
class StreamEntry:
    """One ``streams:`` entry as the console needs it (plain JSON values)."""

    index: int
    id: str
    name: str | None
    enabled: bool
    zones: list[Any]


def plain(value: Any) -> Any:
    """ruamel's round-trip nodes as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def guess_indent(text: str) -> tuple[int, int]:
    """``(mapping indent, sequence dash offset)`` the file is written with (2 and 0 when unknown)."""
    mapping: int | None = None
    offset: int | None = None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for parent, child in itertools.pairwise(lines):
        opener = _BLOCK_KEY.match(parent)
        if opener is None:
            continue
        key_col = len(opener.group(1)) + (2 if opener.group(2) else 0)
        depth = len(child) - len(child.lstrip(" ")) - key_col
        if depth < 0:
            continue
        if child.lstrip().startswith("- "):
            offset = depth if offset is None else offset
        elif depth > 0:
            mapping = depth if mapping is None else mapping
        if mapping is not None and offset is not None:
            break
    return (mapping or 2, offset or 0)


def _yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    mapping, offset = guess_indent(text)
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    null = "null" if re.search(r":\s+null\s*(#|$)", text, re.M) else "~" if re.search(r":\s+~", text) else ""
    if null:
        yaml.representer.add_representer(
            type(None), lambda r, _d: r.represent_scalar("tag:yaml.org,2002:null", null)
        )
    return yaml


def _flow(items: Sequence[Any]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _styled(key: str, value: Any) -> Any:
    """A zone value as streams.yaml writes it: flow polygons, rules and per-rule parameters."""
    if key == "polygon" and isinstance(value, list):
        return _flow([_flow(p) if isinstance(p, list) else p for p in value])
    if key == "rules" and isinstance(value, list):
        return _flow(value)
    if key == "params" and isinstance(value, Mapping):
        params = CommentedMap()
        for rule, values in value.items():
            if isinstance(values, Mapping):
                params[rule] = CommentedMap(values)
                params[rule].fa.set_flow_style()
            else:
                params[rule] = values
        return params
    return value


def _zone_node(zone: Mapping[str, Any], old: CommentedMap | None) -> CommentedMap:
    """``old`` (a zone of the same id) changed into ``zone`` where they differ, else a new node."""
    order = [k for k in ZONE_KEYS if k in zone] + [k for k in zone if k not in ZONE_KEYS]
    if old is None:
        node = CommentedMap()
        for key in order:
            node[key] = _styled(key, zone[key])
        return node
    for key in [k for k in old if k not in zone]:
        del old[key]
    for key in order:
        if key not in old or plain(old[key]) != zone[key]:
            old[key] = _styled(key, zone[key])
    return old


def _zones_node(zones: list[Mapping[str, Any]], old: Any) -> CommentedSeq:
    by_id = {
        str(z.get("id")): z for z in (old if isinstance(old, list) else []) if isinstance(z, CommentedMap)
    }
    nodes = [_zone_node(zone, by_id.pop(str(zone["id"]), None)) for zone in zones]
    if isinstance(old, CommentedSeq):
        del old[:]
        old.extend(nodes)
        return old
    return CommentedSeq(nodes)


class StreamsFile:
    """Reads the streams of the file (cached while it is unchanged) and replaces one's zones."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int], list[StreamEntry]] | None = None

    def read_only_reason(self) -> str | None:
        """Why zones cannot be saved (``None``: they can)."""
        if self.path is None:
            return "CITYWATCH_STREAMS_FILE is not set: the API does not know the detector's streams.yaml"
        real = self.path.resolve()
        if not real.is_file():
            return f"the streams file {self.path} does not exist"
        if not os.access(real, os.R_OK | os.W_OK):
            return f"the API may not read and write the streams file {self.path}"
        if not os.access(real.parent, os.W_OK | os.X_OK):
            return f"the API may not create files in {real.parent} (the file is replaced atomically)"
        return None

    def _load(self) -> tuple[str, YAML, Any]:
        if self.path is None:
            raise StreamsFileError(self.read_only_reason() or "no streams file")
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StreamsFileError(f"cannot read the streams file {self.path}: {exc}") from exc
        yaml = _yaml(text)
        try:
            data = yaml.load(text)
        except YAMLError as exc:
            raise StreamsFileError(f"the streams file {self.path} is no valid YAML: {exc}") from exc
        return text, yaml, data

    def streams(self) -> list[StreamEntry]:
        """The file's stream entries ([] without a file); ``StreamsFileError`` when it cannot be read."""
        if self.path is None:
            return []
        try:
            info = self.path.stat()
        except OSError as exc:
            raise StreamsFileError(f"cannot read the streams file {self.path}: {exc}") from exc
        key = (info.st_mtime_ns, info.st_size)
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        _, _, data = self._load()
        entries = _entries(data)
        self._cache = (key, entries)
        return entries

    def replace_zones(self, stream_id: str, zones: Any, *, dry_run: bool = False) -> StreamEntry:
        """Judge ``zones`` and write them as the stream's ``zones:``; the entry as written.
        ``dry_run``: judge only (the file need not be writable), the entry as it would be."""
        reason = self.read_only_reason()
        if reason is not None and not (dry_run and self.path is not None):
            raise StreamsFileError(f"the zones cannot be saved: {reason}")
        with self._lock:
            text, yaml, data = self._load()
            index, entry = _find(data, stream_id)
            problems = check_zones(zones)
            if problems:
                raise ZonesInvalidError(index, problems)
            entry["zones"] = _zones_node(zones, entry.get("zones"))
            out = io.StringIO()
            yaml.dump(data, out)
            if dry_run:
                return _entries(data)[index]
            if out.getvalue() != text:
                _write_atomically(self.path, out.getvalue())  # type: ignore[arg-type]
            self._cache = None
            return _entries(data)[index]


def _entries(data: Any) -> list[StreamEntry]:
    streams = data.get("streams") if isinstance(data, Mapping) else None
    out: list[StreamEntry] = []
    for index, entry in enumerate(streams if isinstance(streams, list) else []):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        name, zones = entry.get("name"), plain(entry.get("zones") or [])
        enabled = entry.get("enabled", True)
        out.append(
            StreamEntry(
                index, str(entry["id"]), None if name is None else str(name), enabled is not False, zones
            )
        )
    return out


def _find(data: Any, stream_id: str) -> tuple[int, CommentedMap]:
    streams = data.get("streams") if isinstance(data, Mapping) else None
    for index, entry in enumerate(streams if isinstance(streams, list) else []):
        if isinstance(entry, CommentedMap) and entry.get("id") == stream_id:
            return index, entry
    raise StreamNotInFileError(f"the streams file has no stream {stream_id!r}")


def _write_atomically(path: Path, text: str) -> None:
    real = path.resolve()
    tmp = real.with_name(f".{real.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        mode = stat.S_IMODE(real.stat().st_mode)
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, real)
        folder = os.open(real.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StreamsFileError(f"cannot write the streams file {path}: {exc}") from exc
