"""Schemathesis over the whole OpenAPI of a live API (uvicorn, SQLite, an admin key): no 5xx,
no undocumented status code or content type, every response valid against its schema.

Slow (a few minutes on two cores): ``pytest -m slow tests/integration/test_api_schemathesis.py``.
``CITYWATCH_SCHEMATHESIS_EXAMPLES`` sets the examples per operation (default 10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.ingest.sample import sample_jpeg
from tests.api_support import TEST_KEYS, key_of
from tests.live_api import live_api as start_api

pytest.importorskip("schemathesis", reason="pip install schemathesis (dev extra)")

pytestmark = pytest.mark.slow
EXAMPLES = os.environ.get("CITYWATCH_SCHEMATHESIS_EXAMPLES", "10")
MAX_TIME_S = os.environ.get("CITYWATCH_SCHEMATHESIS_MAX_TIME", "180")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "response_headers_conformance"
)


def _seed(url: str) -> None:
    """A few cases in several states, so that ids 1..3 exist."""
    admin = {"X-API-Key": key_of("admin")}
    for i in range(3):
        response = httpx.post(
            f"{url}/reports",
            headers=admin,
            files={"photo": ("p.jpg", sample_jpeg(str(i)))},
            data={"rule": "unclean_road", "lat": f"30.{i}", "lon": "114.3", "description": "seed"},
        )
        response.raise_for_status()
    for action in ("register", "dispatch", "accept"):
        httpx.post(f"{url}/cases/1/{action}", headers=admin).raise_for_status()
    httpx.post(f"{url}/cases/2/register", headers=admin).raise_for_status()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "CITYWATCH_INGEST_ENABLED": "false",
        "CITYWATCH_API_KEYS": json.dumps(list(TEST_KEYS.values())),
        # the fuzzer files hundreds of reports from one address: quotas off so it explores past them
        # (the quotas' 429s are documented and tested in tests/integration/test_api_hostile.py)
        "CITYWATCH_RATE_REPORTS_PER_ADDRESS": "off",
        "CITYWATCH_RATE_REPORTS_PER_KEY": "off",
        "CITYWATCH_RATE_REPORT_BYTES_PER_ADDRESS": "off",
        "CITYWATCH_RATE_REPORT_BYTES_PER_KEY": "off",
        "CITYWATCH_RATE_TOKEN_PER_ADDRESS": "off",
    }
    with start_api(tmp_path_factory.mktemp("schemathesis"), env) as url:
        _seed(url)
        yield url


# the fuzzer's time cap, its subprocess's 120 s beyond it, and the live API's start-up (pytest-timeout)
@pytest.mark.timeout(int(MAX_TIME_S) + 300)
def test_no_server_error_and_no_schema_violation(live_api: str, tmp_path: Path) -> None:
    """The schemathesis CLI (its pytest plugin does not load on this pytest) over every operation."""
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{live_api}/openapi.json",
        "-H",
        f"X-API-Key: {key_of('admin')}",
        "--checks",
        CHECKS,
        "-n",
        EXAMPLES,
        "-w",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-time",
        MAX_TIME_S,
        "--seed",
        "20261128",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=int(MAX_TIME_S) + 120)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "API Operations:" in run.stdout and "failure" not in run.stdout.splitlines()[-1]
