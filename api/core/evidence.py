"""Content-addressed store of evidence JPEGs.

A file's name is its sha256 and nothing else (``<root>/<ab>/<abcdef...>.jpg``): every name is
checked against ``^[0-9a-f]{64}$`` before a path is built, so no string from a request or a
message ever becomes part of a filesystem path. Writes are atomic (temp file + rename) and
idempotent (the same bytes always land on the same name).

Two free-space floors keep uploads from starving the cameras: an HTTP upload (citizen report,
Open311 request, rectification photo) is refused (``EvidenceFullError``, 507) when it would
leave less than ``upload_floor_bytes`` free; camera evidence (MQTT ingest, re-check answers)
may go below that, down to the lower ``ingest_floor_bytes``. ``free_space`` is a function so a
test can simulate a disk filled to the floor. ``usage_bytes`` is what the retention budget
(``CITYWATCH_EVIDENCE_BUDGET_MB``, api/services/retention_budget.py) counts.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from api.errors import ConfigError, EvidenceFullError, EvidenceNotFoundError, InvalidDigestError

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
JPEG_MAGIC = b"\xff\xd8\xff"


def check_sha256(digest: str) -> str:
    if not isinstance(digest, str) or _SHA256_RE.fullmatch(digest) is None:
        raise InvalidDigestError(f"not a lowercase hex sha256: {str(digest)[:80]!r}")
    return digest


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header; None when ``data`` has none."""
    if not data.startswith(JPEG_MAGIC):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE_MARKERS:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF_MARKERS and i + 9 <= len(data):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return (width, height) if width and height else None
        if length < 2:
            return None
        i += 2 + length
    return None


def disk_free_bytes(path: Path) -> int:
    """Bytes free for an unprivileged writer on ``path``'s file system."""
    return shutil.disk_usage(path).free


class EvidenceStore:
    def __init__(
        self,
        root: Path,
        *,
        upload_floor_bytes: int = 0,
        ingest_floor_bytes: int = 0,
        free_space: Callable[[Path], int] = disk_free_bytes,
    ) -> None:
        self.root = Path(root).resolve()
        self.upload_floor_bytes = upload_floor_bytes
        self.ingest_floor_bytes = ingest_floor_bytes
        self.free_space = free_space

    def free_bytes(self) -> int:
        return self.free_space(self.root)

    def check_room(self, size: int, *, upload: bool) -> None:
        """Raise ``EvidenceFullError`` when writing ``size`` bytes would cross the floor
        (``upload``: the upload floor; otherwise the lower ingest floor)."""
        floor = self.upload_floor_bytes if upload else self.ingest_floor_bytes
        if floor <= 0:
            return
        free = self.free_bytes()
        if free - size < floor:
            who = "uploads" if upload else "camera evidence"
            raise EvidenceFullError(
                f"the evidence store is full for {who}: {free} bytes free, the floor is {floor} bytes; "
                "try again later"
            )

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"evidence directory {self.root} cannot be created: {exc}") from exc
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"evidence directory {self.root} is not writable")

    def path_for(self, digest: str) -> Path:
        digest = check_sha256(digest)
        return self.root / digest[:2] / f"{digest}.jpg"

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def put(self, data: bytes, *, upload: bool = False) -> str:
        """Store ``data``; return its sha256. Raises ``OSError`` when the disk refuses, and
        ``EvidenceFullError`` (an ``OSError``) below the floor (``upload``: the upload floor)."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.is_file():
            return digest
        self.check_room(len(data), upload=upload)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def remove(self, digest: str) -> bool:
        """Delete the file of ``digest`` (retention); False when it was not there."""
        try:
            self.path_for(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def size(self, digest: str) -> int:
        """Bytes of the stored file of ``digest``; 0 when it is not there."""
        try:
            return self.path_for(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def usage_bytes(self) -> int:
        """Bytes of all the JPEGs in the store (the retention budget counts these)."""
        total = 0
        try:
            shards = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for shard in shards:
            if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                continue
            with os.scandir(shard.path) as files:
                for entry in files:
                    if entry.name.endswith(".jpg") and entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        return total

    def frame_size(self, digest: str) -> tuple[int, int] | None:
        """(width, height) of the stored JPEG ``digest``; None when it is gone or has no frame header."""
        try:
            return jpeg_size(self.read(digest))
        except EvidenceNotFoundError:
            return None

    def read(self, digest: str) -> bytes:
        path = self.path_for(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise EvidenceNotFoundError(f"evidence {digest} is not in the evidence store") from exc
