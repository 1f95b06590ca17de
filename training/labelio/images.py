"""Image files: their size from the header, finding them from the names a tool gives back, and placing
them next to an export.

A labelling tool gives an image back by some name: a file name (``frame.jpg``), a relative path
(``images/frame.jpg``), a Label Studio URL (``/data/local-files/?d=cam-01/2026-06-01/frame.jpg``,
``/data/upload/3/1a2b3c4d-frame.jpg``, ``https://host/frames/frame.jpg``). :class:`ImageResolver` tries the
path under its folder first, then the file name anywhere below it (collection frame ids are unique), then
the name without Label Studio's upload prefix.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlparse

from training.dataset import IMAGE_SUFFIXES
from training.labelio.model import LabelExportError, LabelImportError, LabelledImage

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` read from a JPEG, PNG, BMP or WebP header (the pixels are not decoded)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return int(w), int(h)
            if head.startswith(b"BM") and len(head) >= 26:
                w, h = struct.unpack("<ii", head[18:26])
                return int(w), abs(int(h))
            if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
                return _webp_size(head + f.read(8))
            if head.startswith(b"\xff\xd8"):
                f.seek(2)
                return _jpeg_size(f, path)
    except OSError as err:
        raise LabelImportError(f"{path}: cannot read the image ({err.strerror})") from err
    except struct.error as err:
        raise LabelImportError(f"{path}: truncated image header") from err
    raise LabelImportError(f"{path}: not a JPEG, PNG, BMP or WebP image")


def _jpeg_size(f: BinaryIO, path: Path) -> tuple[int, int]:
    read = f.read
    while True:
        byte = read(1)
        while byte == b"\xff":
            byte = read(1)
        if not byte:
            break
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        (length,) = struct.unpack(">H", read(2))
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">xHH", read(5))
            return int(w), int(h)
        read(length - 2)
    raise LabelImportError(f"{path}: JPEG without a frame header")


def _webp_size(head: bytes) -> tuple[int, int]:
    kind = head[12:16]
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
        b = head[21:25]
        return 1 + (((b[1] & 0x3F) << 8) | b[0]), 1 + (
            ((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6)
        )
    if kind == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    raise struct.error("unknown WebP chunk")


def name_from_ref(ref: str) -> str:
    """The file path inside an image reference: a plain path, a Label Studio local-files URL (its ``d``),
    an upload URL or any other URL (its path), percent-escapes decoded."""
    parsed = urlparse(ref)
    query = parse_qs(parsed.query)
    if query.get("d"):
        return query["d"][0].lstrip("/")
    return unquote(parsed.path) if parsed.path else ref


class ImageResolver:
    """Finds images under ``root`` by the names a labelling tool gives back (module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._by_name: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for dirpath, _dirs, files in os.walk(self.root):
                for fn in files:
                    if Path(fn).suffix.lower() in IMAGE_SUFFIXES:
                        self._by_name.setdefault(fn, []).append(Path(dirpath) / fn)
        return self._by_name

    def resolve(self, ref: str) -> Path | None:
        """The image file ``ref`` names under the root, or ``None`` when there is none (or more than one
        fits equally)."""
        rel = PurePosixPath(name_from_ref(ref).replace("\\", "/"))
        direct = self.root / rel.relative_to(rel.anchor) if rel.anchor else self.root / rel
        if direct.is_file() and direct.resolve().is_relative_to(self.root.resolve()):  # never outside root
            return direct
        for name in (rel.name, *(m.group(1) for m in [_UPLOAD_PREFIX.match(rel.name)] if m)):
            found = self._pick(self._index().get(name, []), rel.parts)
            if found is not None:
                return found
        return None

    @staticmethod
    def _pick(candidates: list[Path], parts: tuple[str, ...]) -> Path | None:
        if len(candidates) <= 1:
            return candidates[0] if candidates else None

        def shared_tail(p: Path) -> int:
            n = 0
            for a, b in zip(reversed(p.parts), reversed(parts), strict=False):
                if a != b:
                    break
                n += 1
            return n

        ranked = sorted(candidates, key=shared_tail, reverse=True)
        return ranked[0] if shared_tail(ranked[0]) > shared_tail(ranked[1]) else None


def place_images(images: Iterable[LabelledImage], folder: Path, *, copy: bool = True) -> dict[Path, str]:
    """Put each image into ``folder`` under its file name (a hard link where possible, else a copy);
    ``{source path: name in the folder}``. Two different files with one name are refused."""
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[Path, str] = {}
    taken: dict[str, Path] = {}
    for img in images:
        src = img.path
        name = src.name
        if name in taken and taken[name].resolve() != src.resolve():
            raise LabelExportError(f"two images are both named {name}: {taken[name]} and {src}")
        taken[name] = src
        names[src] = name
        dest = folder / name
        if not copy or dest.exists():
            continue
        if not src.is_file():
            raise LabelExportError(f"{src}: image not found")
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)
    return names
