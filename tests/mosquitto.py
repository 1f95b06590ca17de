"""A private Mosquitto for tests that need their own broker settings: an ACL file and a password
file (``deploy/mosquitto/``), or unlimited queues for a flood.

``acl_broker(dir)`` runs the shipped ``deploy/mosquitto/acl`` (topic prefix ``citywatch/v1``
rewritten to ``citywatch-test/+/v1``, so every test's unique prefix is covered by the same rules)
with a password file made by ``mosquitto_passwd`` for each role, ``allow_anonymous false``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "acl"
SHIPPED_PREFIX = "citywatch/v1"
TEST_PREFIX_PATTERN = "citywatch-test/+/v1"  # tests.conftest.unique_topic_prefix() makes these
ROLES = ("detector", "api", "survey")


class MosquittoError(RuntimeError):
    """The test broker could not start; the message holds the end of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@dataclass
class Broker:
    host: str
    port: int
    folder: Path
    accounts: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (user, password)

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def mosquitto(
    folder: Path,
    settings: str,
    accounts: dict[str, tuple[str, str]] | None = None,
    *,
    port: int | None = None,
) -> Iterator[Broker]:
    """Mosquitto on a free loopback port with ``settings`` (mosquitto.conf lines) in ``folder``;
    with ``port``, ``settings`` is the whole configuration and names that port's listener."""
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        raise MosquittoError("mosquitto is not installed: apt-get install mosquitto")
    folder.mkdir(parents=True, exist_ok=True)
    head = "" if port else "listener {port} 127.0.0.1\npersistence false\n"
    port = port or free_port()
    head = head.format(port=port)
    conf = folder / "mosquitto.conf"
    root = "user root\n" if os.geteuid() == 0 else ""  # else it drops to `mosquitto`, who cannot read tmp
    conf.write_text(f"{root}{head}{settings}")
    broker = Broker("127.0.0.1", port, folder, dict(accounts or {}))
    with (folder / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([exe, "-c", str(conf), "-v"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while not _answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise MosquittoError(f"mosquitto did not start on {port}:\n{broker.log()[-2000:]}")
                time.sleep(0.05)
            yield broker
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rewritten_acl(prefix_pattern: str = TEST_PREFIX_PATTERN) -> str:
    """The shipped ACL file with its topic prefix rewritten for the tests' prefixes."""
    return SHIPPED_ACL.read_text().replace(f" {SHIPPED_PREFIX}/", f" {prefix_pattern}/")


def write_passwords(path: Path, roles: tuple[str, ...] = ROLES) -> dict[str, tuple[str, str]]:
    """A mosquitto password file with one account per role (user name = role, random password)."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise MosquittoError("mosquitto_passwd is not installed: apt-get install mosquitto")
    accounts = {role: (role, secrets.token_urlsafe(12)) for role in roles}
    path.write_text("")
    for user, password in accounts.values():
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
    return accounts


OBSERVER_ACL = "\n# test harness only: publishes and sees everything, to watch what the others may do\n"
OBSERVER_ACL += "user observer\ntopic readwrite #\n"


ACL_MODE_ENV = "CITYWATCH_TEST_BROKER"  # =acl: the session broker is acl_broker() (tests/conftest.py)


def _account_vars(role: str) -> tuple[str, str]:
    return f"CITYWATCH_TEST_MQTT_{role.upper()}_USER", f"CITYWATCH_TEST_MQTT_{role.upper()}_PASSWORD"


def export_accounts(accounts: dict[str, tuple[str, str]]) -> None:
    """Put each role's login in the environment (child processes of the tests inherit it)."""
    for role, (user, password) in accounts.items():
        user_var, password_var = _account_vars(role)
        os.environ[user_var], os.environ[password_var] = user, password


def forget_accounts(roles: tuple[str, ...] = ROLES) -> None:
    for role in roles:
        for var in _account_vars(role):
            os.environ.pop(var, None)


def account(role: str) -> tuple[str, str, str] | None:
    """``(user, password, name of the password's variable)`` of ``role`` on the session broker when
    it is the ACL broker (``CITYWATCH_TEST_BROKER=acl``); ``None`` on an anonymous broker."""
    user_var, password_var = _account_vars(role)
    if user_var not in os.environ or password_var not in os.environ:
        return None
    return os.environ[user_var], os.environ[password_var], password_var


@contextmanager
def acl_broker(folder: Path, extra: str = "", *, observer: bool = False) -> Iterator[Broker]:
    """Mosquitto with the shipped ACL file, a password file per role and no anonymous access;
    ``observer``: one more account (tests only) that may publish and read every topic."""
    folder.mkdir(parents=True, exist_ok=True)
    acl = folder / "acl"
    acl.write_text(rewritten_acl() + (OBSERVER_ACL if observer else ""))
    accounts = write_passwords(folder / "passwd", (*ROLES, "observer") if observer else ROLES)
    settings = f"allow_anonymous false\npassword_file {folder / 'passwd'}\nacl_file {acl}\n{extra}"
    with mosquitto(folder, settings, accounts) as broker:
        yield broker
