"""Content-addressed store of evidence JPEGs.

A file's name is its sha256 and nothing else (``<root>/<ab>/<abcdef...>.jpg``): every name is
checked against ``^[0-9a-f]{64}$`` before a path is built, so no string from a request or a
message ever becomes part of a filesystem path. Writes are atomic (temp file + rename) and
idempotent (the same bytes always land on the same name).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from api.errors import ConfigError, EvidenceNotFoundError, InvalidDigestError

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
JPEG_MAGIC = b"\xff\xd8\xff"


def check_sha256(digest: str) -> str:
    if not isinstance(digest, str) or _SHA256_RE.fullmatch(digest) is None:
        raise InvalidDigestError(f"not a lowercase hex sha256: {str(digest)[:80]!r}")
    return digest


class EvidenceStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

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

    def put(self, data: bytes) -> str:
        """Store ``data``; return its sha256. Raises ``OSError`` when the disk refuses."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.is_file():
            return digest
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

    def read(self, digest: str) -> bytes:
        path = self.path_for(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise EvidenceNotFoundError(f"evidence {digest} is not in the evidence store") from exc
