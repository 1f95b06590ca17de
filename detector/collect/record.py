"""The sidecar of a collected frame, as ``detector/collect`` knows it: the model and its helpers live in the
contracts (:mod:`detector.contracts.frames`), since ``training`` reads and writes the same files
(``citywatch collect export|import``, ``citywatch dataset build``) and may import only the contracts.

Every name the collect code used from here is the contracts' own object, re-exported.
"""

from __future__ import annotations

from detector.contracts.frames import (
    JPEG_QUALITY,
    KEEP_REASONS,
    SCHEMA_VERSION,
    VERDICTS,
    XYXY,
    CollectError,
    FrameRecord,
    Label,
    ModelRef,
    Prediction,
    Reason,
    Review,
    Verdict,
    frame_dir,
    frame_id,
    iso_ms,
    read_record,
    sidecars,
    utc_ms,
    write_atomic,
    write_record,
)

__all__ = [
    "JPEG_QUALITY",
    "KEEP_REASONS",
    "SCHEMA_VERSION",
    "VERDICTS",
    "XYXY",
    "CollectError",
    "FrameRecord",
    "Label",
    "ModelRef",
    "Prediction",
    "Reason",
    "Review",
    "Verdict",
    "frame_dir",
    "frame_id",
    "iso_ms",
    "read_record",
    "sidecars",
    "utc_ms",
    "write_atomic",
    "write_record",
]
