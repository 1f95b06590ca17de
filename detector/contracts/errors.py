"""The root of every error the detector raises on purpose.

Each part keeps its own errors (``ConfigError``, ``SourceError``, ``ManifestError`` ...) with their
messages; they all derive from :class:`DetectorError`, so a caller can catch "anything the detector
refused or could not do" in one clause and still tell the parts apart. An error that was a
``ValueError`` (or ``RuntimeError``) stays one.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Base class of the detector's own errors."""
