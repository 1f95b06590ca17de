"""Shared fixtures: real services behind markers.

- ``mqtt_broker`` (session): ``(host, port)`` of a real MQTT broker — the one on 127.0.0.1:1883
  when it answers (or ``CITYWATCH_TEST_MQTT=host:port``), else a ``mosquitto`` started from PATH
  on a free port; without mosquitto the test fails and says how to install it. With
  ``CITYWATCH_TEST_BROKER=acl``: a mosquitto with the shipped ACL (deploy/mosquitto/acl), a login
  per role and no anonymous access (``tests.mosquitto.account(role)``; the end-to-end fixtures
  log in with it; tests that use anonymous clients of their own do not run in that mode).
- ``pg_url`` (session): URL of a fresh database created for this test session in the local
  PostgreSQL (127.0.0.1:5432, user postgres; or ``CITYWATCH_TEST_PG_ADMIN_URL``), dropped at the
  end; skips with the reason when no PostgreSQL answers.
- ``topic_prefix``: a topic prefix no other test uses (``unique_topic_prefix()`` for more).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.mosquitto import ACL_MODE_ENV, acl_broker, export_accounts, forget_accounts

DEFAULT_MQTT = ("127.0.0.1", 1883)
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_topic_prefix(name: str = "t") -> str:
    """``citywatch-test/<name>-<random>/v1``: messages of one test never reach another's."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40] or "t"
    return f"citywatch-test/{safe}-{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    return unique_topic_prefix(request.node.name)


@pytest.fixture(scope="session", autouse=True)
def scenario_clips() -> None:
    """The bundled scenario clips are built from their scripts, not kept in git: render any missing."""
    from training.synth.scenario import ensure_rendered

    folder = Path(__file__).resolve().parents[1] / "training" / "synth" / "scenarios"
    for script in sorted(folder.glob("*.yaml")):
        ensure_rendered(script, folder)


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    mode = os.environ.get(ACL_MODE_ENV, "")
    if mode:
        if mode != "acl":
            pytest.fail(f"{ACL_MODE_ENV}={mode!r}: the only value is 'acl'")
        with acl_broker(tmp_path_factory.mktemp("acl-broker")) as broker:
            export_accounts(broker.accounts)
            try:
                yield broker.host, broker.port
            finally:
                forget_accounts()
        return
    configured = os.environ.get("CITYWATCH_TEST_MQTT")
    if configured:
        host, _, port_text = configured.rpartition(":")
        if not _port_answers(host, int(port_text)):
            pytest.fail(f"CITYWATCH_TEST_MQTT={configured} does not answer")
        yield host, int(port_text)
        return
    if _port_answers(*DEFAULT_MQTT):
        yield DEFAULT_MQTT
        return
    exe = shutil.which("mosquitto")
    if exe is None:
        pytest.fail(
            "no MQTT broker on 127.0.0.1:1883 and `mosquitto` is not installed: "
            "run `apt-get install mosquitto` (or `make test-services`), or set CITYWATCH_TEST_MQTT=host:port"
        )
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="citywatch-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        log = (Path(tmp) / "mosquitto.log").open("w")
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while not _port_answers("127.0.0.1", port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    output = (Path(tmp) / "mosquitto.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"mosquitto did not start on port {port}:\n{output}")
                time.sleep(0.05)
            yield "127.0.0.1", port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'psycopg[binary]'")
    admin_url = os.environ.get("CITYWATCH_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"no PostgreSQL at {admin_url} ({str(exc).strip()[:200]}); set CITYWATCH_TEST_PG_ADMIN_URL"
        )
    name = f"citywatch_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        parts = urlsplit(admin_url)
        yield urlunsplit(("postgresql+psycopg", parts.netloc, f"/{name}", "", ""))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
