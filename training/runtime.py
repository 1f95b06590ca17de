"""Loading ultralytics the offline way, choosing the device, and keeping stdout clean for ``--json``."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detector.contracts.ultralytics_env import prepare_offline


def yolo(model: str | Path) -> Any:
    """``ultralytics.YOLO(model)`` after :func:`prepare_offline`. Only local files or model yamls, never hub
    names."""
    prepare_offline()
    from ultralytics.models.yolo import YOLO

    return YOLO(str(model), task="detect")


def device() -> str:
    """``"0"`` when CUDA is usable, else ``"cpu"``."""
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send ultralytics' logging, progress bars and prints to stderr, so stdout carries only our own
    output."""
    prepare_offline()
    from ultralytics.utils import LOGGER

    handlers = [h for h in LOGGER.handlers if isinstance(h, logging.StreamHandler)]
    old = [h.stream for h in handlers]
    try:
        for h in handlers:
            h.setStream(sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h, s in zip(handlers, old, strict=True):
            h.setStream(s)
