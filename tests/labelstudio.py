"""A real Label Studio for the tests (``tests/integration/test_labelstudio.py``): the ``label-studio``
package in its own virtualenv ``.venv-labelstudio`` (``make test-services`` installs it; it pins Django
and more, which would clash with the project's own dependencies).

:func:`label_studio` starts ``label-studio start`` on a free loopback port with a fresh data folder, an
admin account whose legacy API token is known (``Authorization: Token ...``), sign-up closed, no
telemetry, no version check, and local file serving rooted at ``files_root`` (a task's image is
``/data/local-files/?d=<path under files_root>`` once the project has a local-files storage on that
folder). It waits, with a deadline, until the server answers, yields a :class:`LabelStudio` and stops it.

A fresh database costs Label Studio ~20 s of migrations; the first start migrates one into
``.venv-labelstudio/citywatch-template/`` (``--prepare`` does it at install time) and every start
copies it.

Run as a script (any Python 3.9+, stdlib only at that point): ``--check`` exits 0 when the pinned
Label Studio is installed, ``--prepare`` builds the migrated template database.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("CITYWATCH_LABELSTUDIO_VENV") or REPO / ".venv-labelstudio").absolute()
EXE = VENV / "bin" / "label-studio"
TEMPLATE = VENV / "citywatch-template" / "label_studio.sqlite3"
USER, PASSWORD = "citywatch-test@example.com", "citywatch-test-pw"
TOKEN = "citywatch-test-token-0123456789abcdef"  # legacy API token (`Authorization: Token ...`)
INSTALL_HINT = "run `make test-services-labelstudio` (installs label-studio into .venv-labelstudio)"
_LISTENING = re.compile(r"Starting development server at http://[\d.]+:(\d+)/")


class LabelStudioError(RuntimeError):
    """Label Studio is not installed here or did not start; the message holds the end of its log."""


def unavailable_reason() -> str | None:
    """None when the Label Studio of ``.venv-labelstudio`` can be started; else why not."""
    if not EXE.exists():
        return f"no Label Studio at {EXE}: {INSTALL_HINT}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(data_dir: Path, files_root: Path) -> dict[str, str]:
    """The environment of the server: ours without Label Studio's own variables (``LABEL_STUDIO_*``,
    ``HEARTEX_*`` and the bare names it also reads), plus the test settings."""
    bare = {"HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DATABASE_NAME", "DEBUG"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "HEARTEX_", "DJANGO_")) and k not in bare
    }
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=USER,
        LABEL_STUDIO_PASSWORD=PASSWORD,
        LABEL_STUDIO_USER_TOKEN=TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",  # since 1.17 only JWTs work unless this is set
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(files_root),
        LABEL_STUDIO_HOST="",  # task URLs relative to the server
        # nothing leaves this machine: no Sentry, no PyPI version check, no usage analytics
        LABEL_STUDIO_SENTRY_DSN="",
        LABEL_STUDIO_FRONTEND_SENTRY_DSN="",
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        LABEL_STUDIO_FEATURE_FLAGS_OFFLINE="true",
        LOG_LEVEL="INFO",
    )
    return env


def prepare_template(timeout: float = 300.0) -> Path:
    """The migrated, empty database every start copies (built once: ``label-studio version`` migrates)."""
    if TEMPLATE.exists():
        return TEMPLATE
    reason = unavailable_reason()
    if reason is not None:
        raise LabelStudioError(reason)
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="citywatch-ls-template-") as tmp:
        data = Path(tmp) / "data"
        cmd = [str(EXE), "version", "--data-dir", str(data)]
        env = server_env(data, Path(tmp))
        try:
            out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabelStudioError(f"`label-studio version` did not finish in {timeout:.0f}s") from exc
        db = data / "label_studio.sqlite3"
        if out.returncode != 0 or not db.exists():
            raise LabelStudioError(f"`label-studio version` failed ({out.returncode}):\n{out.stderr[-3000:]}")
        part = TEMPLATE.with_name(f"{TEMPLATE.name}.{os.getpid()}.part")
        shutil.copyfile(db, part)
        os.replace(part, TEMPLATE)  # atomic: a concurrent start sees no template or a whole one
    return TEMPLATE


@dataclass
class LabelStudio:
    url: str  # http://127.0.0.1:PORT
    token: str
    files_root: Path  # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT
    log_path: Path

    def client(self, timeout: float = 60.0) -> httpx.Client:
        import httpx

        headers = {"Authorization": f"Token {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def local_file_url(self, path: Path) -> str:
        """How a task refers to ``path`` (under ``files_root``) without uploading it."""
        return f"/data/local-files/?d={path.resolve().relative_to(self.files_root.resolve()).as_posix()}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@contextmanager
def label_studio(folder: Path, files_root: Path, *, timeout: float = 180.0) -> Iterator[LabelStudio]:
    """Label Studio on a free loopback port, its data in ``folder``, serving files under ``files_root``."""
    reason = unavailable_reason()
    if reason is not None:
        raise LabelStudioError(reason)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(LabelStudioError, OSError):  # else the server migrates one itself (slower)
        shutil.copyfile(prepare_template(), data / "label_studio.sqlite3")
    port = free_port()
    log_path = folder / "label-studio.log"
    cmd = [str(EXE), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data), "--log-level", "INFO"]
    with log_path.open("wb") as log:
        # its own folder as cwd: the version report runs `git` in the working directory
        proc = subprocess.Popen(
            cmd, cwd=folder, env=server_env(data, files_root), stdout=log, stderr=subprocess.STDOUT
        )
    server = LabelStudio(f"http://127.0.0.1:{port}", TOKEN, files_root, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise LabelStudioError(f"label-studio exited ({proc.returncode}):\n{server.log_tail()}")
            # it moves to the next port when ours was taken meanwhile: read the one it chose
            found = _LISTENING.search(server.log_tail(20000))
            if found is not None and int(found.group(1)) != port:
                port = int(found.group(1))
                server.url = f"http://127.0.0.1:{port}"
            if found is not None and _answers(server.url):
                break
            if time.monotonic() > deadline:
                raise LabelStudioError(f"label-studio did not answer in {timeout:.0f}s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if unavailable_reason() is None else 1)
    if sys.argv[1:] == ["--prepare"]:
        print(f"migrated template database: {prepare_template()}")
        sys.exit(0)
    print(__doc__)
    sys.exit(2)
