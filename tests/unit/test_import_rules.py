"""The import rules of pyproject.toml ([tool.importlinter]): they name every package, and they catch.

``make lint`` runs ``lint-imports`` on the tree; here the same contracts run on a small tree of the same
shape with one forbidden import planted, so a rule that no longer catches anything fails a test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.import_rules import PrivateImport, is_private, private_imports, unit

REPO = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS = {c["name"]: c for c in CONFIG["contracts"]}


def _detector_parts() -> set[str]:
    """Every package and top-level module of detector/."""
    base = REPO / "detector"
    parts = {f"detector.{p.name}" for p in base.iterdir() if (p / "__init__.py").is_file()}
    parts |= {f"detector.{p.stem}" for p in base.glob("*.py") if p.stem != "__init__"}
    return parts


@pytest.mark.parametrize(
    ("contract", "exempt"),
    [
        ("the contracts are a leaf: detector.contracts imports nothing else of ours", {"detector.contracts"}),
        ("api imports of detector only its contracts", {"detector.contracts"}),
        ("training imports of detector only its contracts", {"detector.contracts"}),
    ],
)
def test_forbidden_lists_name_every_part_of_detector(contract: str, exempt: set[str]) -> None:
    forbidden = set(CONTRACTS[contract]["forbidden_modules"])
    missing = _detector_parts() - exempt - forbidden
    assert not missing, f"{contract!r} does not forbid {sorted(missing)}: add them in pyproject.toml"


@pytest.mark.parametrize(
    ("name", "private"),
    [("_inside", True), ("inside", False), ("__version__", False), ("__all__", False), ("__x", True)],
)
def test_is_private(name: str, private: bool) -> None:
    assert is_private(name) is private


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("detector.survey.dedup", "detector.survey"),
        ("detector.pipeline", "detector.pipeline"),
        ("api", "api"),
    ],
)
def test_unit(module: str, expected: str) -> None:
    assert unit(module) == expected


@pytest.mark.parametrize(
    ("importer", "source", "is_package", "found"),
    [
        # inside its own package: allowed
        ("detector.survey.change", "from detector.survey.dedup import _inside", False, []),
        ("api.ingest.batch", "from api.ingest.service import (\n    _case_values,\n)", False, []),
        # across packages: caught, with the line
        (
            "detector.commands.run",
            "import os\nfrom detector.survey.dedup import SurveyObject, _inside",
            False,
            [PrivateImport("detector.commands.run", 2, "detector.survey.dedup", "_inside")],
        ),
        (
            "api.routes.cases",
            "from detector.contracts.events import _parse_datetime as p",
            False,
            [PrivateImport("api.routes.cases", 1, "detector.contracts.events", "_parse_datetime")],
        ),
        # relative imports resolve against the importer (a package's __init__ is its own base)
        ("detector.survey.change", "from .dedup import _inside", False, []),
        (
            "detector.survey",
            "from ..rules.zones import _point",
            True,
            [PrivateImport("detector.survey", 1, "detector.rules.zones", "_point")],
        ),
        # a private module through ``import``
        (
            "training.cli",
            "import detector.inference._cache",
            False,
            [PrivateImport("training.cli", 1, "detector.inference", "_cache")],
        ),
        # public names and dunders pass
        ("training.cli", "from detector.contracts.manifest import ManifestError, __doc__", False, []),
    ],
)
def test_private_imports(importer: str, source: str, is_package: bool, found: list[PrivateImport]) -> None:
    assert list(private_imports(importer, source, is_package=is_package)) == found


# ------------------------------------------------------------------- the contracts on a planted tree
def _tree(root: Path) -> None:
    """detector/, api/, training/ with every module the contracts name, importing nothing."""
    modules = set(_detector_parts()) | {"api", "api.ingest", "training"}
    for module in sorted(modules):
        path = root.joinpath(*module.split("."))
        path.mkdir(parents=True, exist_ok=True)
        (path / "__init__.py").write_text('"""planted."""\n', encoding="utf-8")
    (root / "detector" / "__init__.py").write_text("", encoding="utf-8")
    (root / "tests").mkdir()
    shutil.copy(REPO / "tests" / "import_rules.py", root / "tests" / "import_rules.py")
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    start = text.index("\n[tool.importlinter]\n") + 1
    end = text.index("\n[tool.", start + 1)
    config = text[start:end]
    # the teacher exception names modules the planted tree does not have
    config = "\n".join(line for line in config.splitlines() if not line.startswith("ignore_imports"))
    (root / "pyproject.toml").write_text(config + "\n", encoding="utf-8")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe)], cwd=root, capture_output=True, text=True, timeout=120)


PLANTED = [
    ("api/ingest/__init__.py", "import detector.rules\n", "api imports of detector only its contracts"),
    ("detector/rules/__init__.py", "import api.ingest\n", "detector does not import api"),
    (
        "api/ingest/__init__.py",
        "import training\n",
        "nothing imports training (the citywatch command starts it by name)",
    ),
    (
        "training/__init__.py",
        "from detector.inference import x\n",
        "training imports of detector only its contracts",
    ),
    (
        "detector/contracts/__init__.py",
        "import detector.pipeline\n",
        "the contracts are a leaf: detector.contracts imports nothing else of ours",
    ),
    (
        "detector/commands/__init__.py",
        "from detector.survey import _inside\n",
        "private names (_name) only from their own package",
    ),
]


@pytest.fixture(scope="module")
def planted_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(sys.executable).with_name("lint-imports").exists():
        pytest.fail("lint-imports is missing: pip install -e '.[dev]'")
    root = tmp_path_factory.mktemp("tree")
    _tree(root)
    return root


def test_the_planted_tree_is_clean(planted_root: Path) -> None:
    result = _lint(planted_root)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("file", "line", "contract"), PLANTED, ids=[p[2] for p in PLANTED])
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, planted_root: Path, file: str, line: str, contract: str
) -> None:
    root = tmp_path / "tree"
    shutil.copytree(planted_root, root)
    (root / "detector" / "survey" / "__init__.py").write_text("_inside = 1\nx = 1\n", encoding="utf-8")
    (root / "detector" / "inference" / "__init__.py").write_text("x = 1\n", encoding="utf-8")
    with (root / file).open("a", encoding="utf-8") as fh:
        fh.write(line)
    result = _lint(root)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"{contract} BROKEN" in out, out
    assert out.count("BROKEN") == 1, out  # that contract and no other
