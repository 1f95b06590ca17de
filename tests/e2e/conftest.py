"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model_ready() -> None:
    from detector.manifest import ManifestError, load_manifest, resolve_path

    try:
        entry = load_manifest().get(None)
        resolve_path(entry)
    except ManifestError as err:
        pytest.fail(f"the default model is not usable: {err}")
