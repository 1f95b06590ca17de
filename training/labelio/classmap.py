"""Their class names -> our rule labels, applied to every import.

A class map file is a YAML or JSON mapping ``{their_name: our_label}``; an empty value (``person:`` or
``person: null``) leaves that class out on purpose, and the import counts it under ``ignored``. Inline,
the same is ``car=vehicle,garbage=litter,person=``. A name that already is one of our labels maps to
itself without being listed. Targets must be our labels, so a typo in the map fails at load.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from training.dataset import RULE_LABELS
from training.labelio.model import LabelImportError


class ClassMap:
    """``label_for(their_name)`` -> our label, or ``None`` for a class left out on purpose."""

    def __init__(
        self, mapping: Mapping[str, str | None] | None = None, *, labels: Iterable[str] = RULE_LABELS
    ) -> None:
        self.labels: tuple[str, ...] = tuple(labels)
        self.mapping: dict[str, str | None] = {}
        bad: list[str] = []
        for theirs, ours in (mapping or {}).items():
            target = ours.strip() if isinstance(ours, str) else ours
            if not isinstance(theirs, str) or not theirs.strip():
                bad.append(f"{theirs!r} (the class name must be a non-empty string)")
            elif target is not None and target != "" and target not in self.labels:
                bad.append(f"{theirs}={target} ({target!r} is not one of our labels)")
            else:
                self.mapping[theirs.strip()] = target or None
        if bad:
            raise LabelImportError(
                f"class map: {'; '.join(bad)}; our labels are {', '.join(self.labels)} "
                "(an empty value leaves a class out)"
            )

    def __repr__(self) -> str:
        return f"ClassMap({self.mapping!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassMap) and (self.mapping, self.labels) == (other.mapping, other.labels)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is mapped (to a label or deliberately to nothing) or is one of our labels."""
        return name in self.mapping or name in self.labels

    def label_for(self, name: str) -> str | None:
        """Our label for ``name``; ``None`` when the map leaves it out. Unknown names raise ``KeyError``."""
        if name in self.mapping:
            return self.mapping[name]
        if name in self.labels:
            return name
        raise KeyError(name)

    @classmethod
    def load(cls, path: Path, *, labels: Iterable[str] = RULE_LABELS) -> ClassMap:
        """A class map file: YAML (``.yaml``/``.yml``) or JSON, one mapping of their name -> our label."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise LabelImportError(f"class map {path}: cannot read it ({err.strerror})") from err
        try:
            raw: Any = json.loads(text) if Path(path).suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise LabelImportError(
                f"class map {path}: not valid {Path(path).suffix or 'YAML'}: {err}"
            ) from err
        if raw is None:
            raw = {}
        if not isinstance(raw, dict) or not all(v is None or isinstance(v, str) for v in raw.values()):
            raise LabelImportError(
                f"class map {path}: must be one mapping of their class name -> our label, e.g. `car: vehicle`"
            )
        try:
            return cls({str(k): v for k, v in raw.items()}, labels=labels)
        except LabelImportError as err:
            raise LabelImportError(f"{path}: {err}") from err

    @classmethod
    def parse(cls, pairs: Iterable[str], *, labels: Iterable[str] = RULE_LABELS) -> ClassMap:
        """Inline pairs ``their=our`` (each item may hold several, comma-separated; ``their=`` leaves out)."""
        mapping: dict[str, str | None] = {}
        for item in pairs:
            for pair in filter(None, (p.strip() for p in item.split(","))):
                theirs, sep, ours = pair.partition("=")
                if not sep:
                    raise LabelImportError(f"class map: {pair!r} is not their_name=our_label")
                mapping[theirs.strip()] = ours.strip() or None
        return cls(mapping, labels=labels)

    @classmethod
    def from_arg(cls, value: str | Path | None, *, labels: Iterable[str] = RULE_LABELS) -> ClassMap:
        """What a ``--class-map`` option holds: a file path, inline pairs, or nothing (our labels only)."""
        if value is None or value == "":
            return cls(labels=labels)
        p = Path(value)
        if p.is_file() or p.suffix.lower() in {".yaml", ".yml", ".json"}:
            return cls.load(p, labels=labels)
        return cls.parse([str(value)], labels=labels)
