"""A real RTSP server for the tests and benchmarks: GStreamer's gst-rtsp-server (Debian packages
``gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad python3-gi``).

Two halves in one file:

- run as a script with the *system* Python (``/usr/bin/python3``, where ``python3-gi`` lives; the
  project's virtualenv has no GObject bindings) it serves H.264 files, each mount its own camera;
- imported (stdlib only), :class:`RtspServer` starts that script in a subprocess, waits until it
  answers, and kills / restarts it (``kill -9`` like a camera losing power).

Mounts are ``PATH=FILE``; ``FILE`` is an ``.mp4``, ``.mkv`` or ``.ts`` with H.264 video. With ``--auth``
every mount asks for ``--user`` / ``--password`` (RTSP basic auth, 401 without them).
``--copies N`` serves ``PATH0 .. PATH{N-1}`` for every mount. Each client session gets its own
pipeline, playing the file from its start in real time, over TCP or UDP as the client asks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("CITYWATCH_GST_PYTHON", "/usr/bin/python3")
APT_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad python3-gi"
)
_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('qtdemux', 'h264parse', 'rtph264pay', 'tsdemux', 'matroskademux') "
    "if Gst.ElementFactory.find(e) is None]; print(','.join(missing))"
)


class RtspServerError(Exception):
    """The RTSP server cannot run here (packages missing) or did not start."""


def unavailable_reason() -> str | None:
    """None when the GStreamer RTSP server can run here; else why not and what to install."""
    if shutil.which(SYSTEM_PYTHON) is None and not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (set CITYWATCH_GST_PYTHON to a Python with python3-gi)"
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server not usable ({last}); apt-get install {APT_PACKAGES}"
    if out.stdout.strip():
        return f"GStreamer elements missing ({out.stdout.strip()}); apt-get install {APT_PACKAGES}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RtspServer:
    """The script below in a subprocess on ``127.0.0.1:port``; ``url(path)`` gives a mount's URL."""

    def __init__(
        self,
        mounts: dict[str, Path | str],
        *,
        port: int | None = None,
        auth: bool = False,
        user: str = "admin",
        password: str = "s3cret-pw",
        copies: int = 0,
        log_dir: Path | None = None,
    ) -> None:
        self.mounts = {p if p.startswith("/") else f"/{p}": Path(f) for p, f in mounts.items()}
        self.port = port or free_port()
        self.auth = auth
        self.user, self.password, self.copies = user, password, copies
        self._log_dir = Path(log_dir or tempfile.mkdtemp(prefix="citywatch-rtsp-"))
        self.log_path = self._log_dir / f"rtsp-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str, *, user: str | None = None, password: str | None = None) -> str:
        path = path if path.startswith("/") else f"/{path}"
        cred = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{cred}127.0.0.1:{self.port}{path}"

    def command(self) -> list[str]:
        cmd = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--port", str(self.port)]
        for path, file in self.mounts.items():
            cmd += ["--mount", f"{path}={file}"]
        cmd += ["--user", self.user, "--password", self.password, "--copies", str(self.copies)]
        return [*cmd, "--auth"] if self.auth else cmd

    def start(self, timeout: float = 20.0) -> RtspServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        for f in self.mounts.values():
            if not f.is_file():
                raise RtspServerError(f"cannot serve {f}: no such file")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RtspServerError(f"RTSP server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    msg = f"RTSP server did not listen in {timeout:.0f}s:\n{self.log_tail()}"
                    raise RtspServerError(msg) from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a camera losing power: no TEARDOWN, the connections just break."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    stop = kill

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


# ------------------------------------------------------------------------------------------ the server
def _pipeline(file: str) -> str:
    demux = {".ts": "tsdemux", ".mkv": "matroskademux"}.get(Path(file).suffix.lower(), "qtdemux")
    loc = file.replace('"', '\\"')
    return (
        f'( filesrc location="{loc}" ! {demux} ! h264parse ! video/x-h264,alignment=au '
        "! rtph264pay name=pay0 pt=96 config-interval=0 )"
    )


def serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="serve H.264 files over RTSP (GStreamer)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", action="append", default=[], help="PATH=FILE")
    p.add_argument("--copies", type=int, default=0, help="serve PATH0..PATH{N-1} for every mount")
    p.add_argument("--auth", action="store_true", help="every mount asks for --user / --password")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="s3cret-pw")
    a = p.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    server.set_backlog(1024)
    mounts = server.get_mount_points()
    if a.auth:  # no default token: a client without valid credentials is asked for them (401)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        server.set_auth(auth)
    for spec in a.mount:
        path, _, file = spec.partition("=")
        for mount in [path] if a.copies <= 0 else [f"{path}{i}" for i in range(a.copies)]:
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(_pipeline(file))
            factory.set_shared(False)
            if a.auth:
                perm = Gst.Structure.new_empty("user")
                perm.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
                perm.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
                factory.add_role_from_structure(perm)
            mounts.add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{a.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"serving {len(a.mount)} mount(s) x {max(a.copies, 1)} on rtsp://127.0.0.1:{a.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:  # `make test-services`: exit 0 when this Python can serve RTSP
        why = unavailable_reason() if sys.executable != SYSTEM_PYTHON else None
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
        sys.exit(0 if why is None and out.returncode == 0 and not out.stdout.strip() else 1)
    sys.exit(serve(sys.argv[1:]))
