"""An import-linter contract type: a private name (``_name``) is imported only within its own package.

``import-linter``'s ``private_modules`` covers ``_module.py`` files; this covers the names inside
modules: ``from detector.survey.dedup import _inside`` is fine in ``detector.survey`` and a broken
contract anywhere else. "Its own package" is the unit a name's module belongs to: the first two
components of the module's name (``detector.survey``, ``api.ingest``, ``training.synth``), or the module
itself when it sits at a root package's top (``detector.pipeline``, ``api.deps``). Dunder names
(``__version__``) are not private.

Registered in ``pyproject.toml`` (``contract_types``) and run by ``lint-imports`` (``make lint``); the
pure parts are tested in ``tests/unit/test_import_rules.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grimp
from importlinter.domain.contract import Contract, ContractCheck


@dataclass(frozen=True)
class PrivateImport:
    importer: str  # module that imports
    line: int
    target: str  # the module the name comes from
    name: str  # the private name

    def describe(self) -> str:
        return f"{self.importer}:{self.line} imports {self.target}.{self.name}"


def is_private(name: str) -> bool:
    """``_x`` is private; ``__x__`` (dunder) and ``__x`` without the trailing pair too, except dunders."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def unit(module: str) -> str:
    """The package a module belongs to for privacy: its first two components."""
    return ".".join(module.split(".")[:2])


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module of a (possibly relative) ``from ... import``."""
    if level == 0:
        return module or ""
    parts = importer.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def private_imports(importer: str, source: str, *, is_package: bool = False) -> Iterator[PrivateImport]:
    """Every import in ``source`` (the text of module ``importer``) of a private name, or through a
    private attribute path, from a module outside the importer's own package."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(importer, is_package, node.level, node.module)
            if unit(target) == unit(importer):
                continue
            for alias in node.names:
                if is_private(alias.name):
                    yield PrivateImport(importer, node.lineno, target, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if unit(alias.name) == unit(importer):
                    continue
                private = [p for p in alias.name.split(".") if is_private(p)]
                if private:
                    parent = alias.name.rsplit(".", 1)[0]
                    yield PrivateImport(importer, node.lineno, parent, private[0])


def _module_files(root_dir: Path, package: str) -> Iterable[tuple[str, Path]]:
    base = root_dir / package
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(root_dir).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


class PrivateNamesContract(Contract):
    """No module imports a private name from another package's module."""

    type_name = "private_names"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        root_dir = Path.cwd()
        found: list[PrivateImport] = []
        packages = sorted({m.split(".")[0] for m in graph.modules if not graph.is_module_squashed(m)})
        for package in packages:
            if not (root_dir / package / "__init__.py").is_file():
                continue
            for module, path in _module_files(root_dir, package):
                if module not in graph.modules:
                    continue
                text = path.read_text(encoding="utf-8")
                found.extend(private_imports(module, text, is_package=path.name == "__init__.py"))
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        from importlinter.application import output

        for item in check.metadata["found"]:
            output.print_error(f"- {item.describe()}", bold=False)
        output.new_line()
        output.print("Make the name public in its module (no leading underscore) or keep the use inside")
        output.print("its package.")
