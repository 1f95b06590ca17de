"""The case API as its own process (``python -m api`` under uvicorn on a free port), for the tests that
talk to it over HTTP the way the desk, the detector's re-check and third-party clients do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_ok(url: str) -> bool:
    return httpx.get(f"{url}/health", timeout=1).status_code == 200


def ingest_connected(url: str) -> bool:
    return bool(httpx.get(f"{url}/health", timeout=1).json().get("ingest", {}).get("connected"))


@contextmanager
def live_api(
    folder: Path,
    env: Mapping[str, str],
    *,
    ready: Callable[[str], bool] = health_ok,
    cwd: Path = REPO,
    args: tuple[str, ...] = ("--log-level", "warning"),
    timeout_s: float = 60.0,
) -> Iterator[str]:
    """Start the API with ``env`` on top of this process's environment (SQLite and evidence under
    ``folder`` unless ``env`` says otherwise), wait until ``ready(url)``, yield the URL, stop it.
    Its log is ``folder / "api.log"``; a start that fails shows the log's tail."""
    port = free_port()
    full = {
        **os.environ,
        "CITYWATCH_DATABASE_URL": f"sqlite:///{folder / 'cases.db'}",
        "CITYWATCH_EVIDENCE_DIR": str(folder / "evidence"),
        **env,
    }
    log_path = folder / "api.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--port", str(port), *args],
            env=full,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if ready(url):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the API did not come up:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)
