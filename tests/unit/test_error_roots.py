"""One error root per package: every exception class defined in detector/, api/ and training/ derives
from its package's root, so a caller can catch all of a part's refusals in one clause."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import api
import detector
import training
from api.errors import CityWatchAPIError
from detector.contracts.errors import DetectorError
from training.errors import TrainingError


def _exceptions(package: object) -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    path = package.__path__  # type: ignore[attr-defined]
    name = package.__name__  # type: ignore[attr-defined]
    for info in pkgutil.walk_packages(path, name + "."):
        if info.name.endswith(("__main__", ".migrations.env")) or ".migrations." in info.name:
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


@pytest.mark.parametrize(
    ("package", "root", "at_least"),
    [(detector, DetectorError, 40), (api, CityWatchAPIError, 18), (training, TrainingError, 5)],
    ids=["detector", "api", "training"],
)
def test_every_exception_derives_from_the_package_root(
    package: object, root: type[BaseException], at_least: int
) -> None:
    exceptions = _exceptions(package)
    assert len(exceptions) >= at_least, sorted(e.__name__ for e in exceptions)  # the walk found them
    strays = sorted(f"{e.__module__}.{e.__qualname__}" for e in exceptions if not issubclass(e, root))
    assert not strays, f"not under {root.__name__}: {strays}"


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("detector.config.errors.ConfigProblem", ValueError),  # pydantic validators rely on it
        ("detector.contracts.events.EventError", ValueError),
        ("detector.contracts.ultralytics_env.OfflineSetupError", RuntimeError),
        ("detector.rules.zones.ZoneError", ValueError),
        ("detector.inference.base.InferenceInputError", ValueError),
        ("api.services.routing.NoRouteError", LookupError),
        ("api.errors.EvidenceFullError", OSError),
    ],
)
def test_errors_keep_their_builtin_kind(name: str, builtin: type[BaseException]) -> None:
    module, _, cls = name.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), cls), builtin)
