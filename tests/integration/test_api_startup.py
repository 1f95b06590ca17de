"""The API as its own process: it does not start without keys (the exit code and the message
name the variable to set), nor in dev mode beyond loopback; in dev mode on loopback it starts
with anonymous reads off. Over a real socket, uvicorn answers an oversized upload from its
headers (413 before one byte of the body is sent) and stops a chunked one at the limit."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api_support import TEST_KEYS, key_of
from tests.live_api import REPO, free_port, live_api

MiB = 1024 * 1024
KEYS = json.dumps(list(TEST_KEYS.values()))
SECRET = "s3cret-key-value-0123456789"
BAD_ROLE = {"name": "x", "role": "root", "key": SECRET}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    return {**env, "CITYWATCH_INGEST_ENABLED": "false", **extra}


API = [sys.executable, "-m", "api"]
CLI = [sys.executable, "-c", "import sys; from detector.commands.cli import main; sys.exit(main())", "api"]


@pytest.mark.parametrize(
    ("command", "args", "env", "words"),
    [
        (API, [], {}, ["CITYWATCH_API_KEYS", "CITYWATCH_API_KEYS_FILE", "CITYWATCH_DEV_MODE"]),
        (API, [], {"CITYWATCH_API_KEY": KEYS}, ["CITYWATCH_API_KEYS"]),  # a misspelt variable: unset
        (API, [], {"CITYWATCH_API_KEYS": "[]"}, ["lists no key"]),
        (API, ["--dev", "--host", "0.0.0.0"], {}, ["loopback only", "--host 0.0.0.0"]),
        (API, ["--host", "192.0.2.10"], {"CITYWATCH_DEV_MODE": "true"}, ["loopback only"]),
        (API, ["--dev"], {"CITYWATCH_API_KEYS": KEYS}, ["unset CITYWATCH_DEV_MODE"]),
        (API, [], {"CITYWATCH_RATE_REPORTS_PER_KEY": "many"}, ["AMOUNT/PERIOD"]),
        (API, [], {"CITYWATCH_API_KEYS": '[{"name": "x", key: "' + SECRET}, ["api_keys", "valid list"]),
        (API, [], {"CITYWATCH_API_KEYS": json.dumps([BAD_ROLE])}, ["entry 1 ('x')", "role"]),
        (API, [], {"CITYWATCH_API_KEYS": json.dumps([{**BAD_ROLE, "role": "admin", "unit": 7}])}, ["unit"]),
        (CLI, [], {}, ["CITYWATCH_API_KEYS"]),  # citywatch api
        (CLI, ["--dev", "--host", "::"], {}, ["loopback only"]),
    ],
)
def test_the_api_refuses_to_start(
    tmp_path: Path, command: list[str], args: list[str], env: dict[str, str], words: list[str]
) -> None:
    run = subprocess.run(
        [*command, "--port", str(free_port()), *args],
        env=clean_env(CITYWATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}", **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    for word in words:
        assert word in run.stderr
    assert SECRET not in run.stdout + run.stderr, "a key was echoed"
    assert not (tmp_path / "never.db").exists(), "the refused API touched its database"


def test_dev_mode_on_loopback_starts_with_anonymous_reads_off(tmp_path: Path) -> None:
    with live_api(tmp_path, clean_env(CITYWATCH_DEV_MODE="true")) as url:
        assert httpx.get(f"{url}/cases").status_code == 401
        admin = {"X-API-Key": "citywatch-dev-admin-key"}
        assert httpx.get(f"{url}/auth/me", headers=admin).json()["role"] == "admin"
        assert httpx.get(f"{url}/cases", headers=admin).status_code == 200


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def read_answer(sock: socket.socket, start: bytes = b"") -> bytes:
    """One HTTP response: its head and a body of its Content-Length (or until the server closes)."""
    data = start
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            return data
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    while length is None or len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return head + b"\r\n\r\n" + body


def test_uvicorn_answers_an_oversized_upload_before_its_body(tmp_path: Path) -> None:
    with live_api(tmp_path, clean_env(CITYWATCH_API_KEYS=KEYS)) as url:
        port = urlsplit(url).port
        assert port is not None
        head = (
            "POST /reports HTTP/1.1\r\nHost: citywatch\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {50 * MiB}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head.encode())  # the headers only: the answer must come without the body
            answer = read_answer(sock)
        assert _status(answer) == 413 and b"over the limit" in answer

        chunked = (
            "POST /reports HTTP/1.1\r\nHost: citywatch\r\n"
            f"X-API-Key: {key_of('public')}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        part = b'--b\r\nContent-Disposition: form-data; name="photo"; filename="p.jpg"\r\n'
        part += b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff"
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(chunked.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
            block = b"\x00" * (256 * 1024)
            while sent < 64 * MiB:
                if select.select([sock], [], [], 0)[0]:
                    break
                try:
                    sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(block)
            answer = read_answer(sock)
        assert _status(answer) == 413 and b"over the limit" in answer, answer[:300]
        assert sent < 32 * MiB, f"the server read {sent} bytes of a stream it should have stopped at ~5 MiB"
        cases = httpx.get(f"{url}/cases", headers={"X-API-Key": key_of("admin")}).json()
        assert cases["count"] == 0
        assert not list((tmp_path / "evidence").rglob("*.jpg"))
