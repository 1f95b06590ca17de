"""The inference service's figures per stream and per model (what ``stats()`` and the metrics read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class StreamCounters:
    """Per-stream figures; ``max_lag_s`` is the worst since the last :meth:`InferenceService.reset_lag`."""

    submitted: int = 0
    done: int = 0
    dropped: int = 0
    last_lag_s: float | None = None
    max_lag_s: float = 0.0
    infer_s: float = 0.0  # model seconds spent on this stream's frames (its share of each batch)


@dataclass
class ModelCounters:
    """Per-model figures: frames inferred, batches, seconds spent inferring."""

    frames: int = 0
    batches: int = 0
    busy_s: float = 0.0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        ms = 1000.0 * self.busy_s / self.frames if self.frames else None
        return {
            "frames": self.frames,
            "batches": self.batches,
            "busy_s": round(self.busy_s, 3),
            "ms_per_frame": None if ms is None else round(ms, 2),
            "errors": self.errors,
        }
