"""占道经营/游商 street vending: a vendor or stall in a no-vending zone, in the zone's active hours,
persisting ``dwell_s``. One violation per stall position (location cell), not per track.

Outside the active hours detections are not counted, so a stall left after hours ages out and is
cleared after the grace period; it opens again (as a new violation) only in the next window.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections
from detector.rules.base import CellRule, Entry
from detector.rules.params import RulesConfig, VendingParams
from detector.rules.zones import FrameSize


@lru_cache(maxsize=32)
def _tz(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def in_active_hours(active_hours: list[str], timezone: str, ts: float) -> bool:
    """Whether frame time ``ts`` (epoch seconds) falls in any ``HH:MM-HH:MM`` local window.

    A window is start-inclusive and end-exclusive; a start later than the end wraps midnight;
    equal start and end mean the whole day; no windows at all mean always.
    """
    if not active_hours:
        return True
    local = datetime.fromtimestamp(ts, _tz(timezone))
    now = local.hour * 60 + local.minute + local.second / 60
    for window in active_hours:
        start_s, end_s = window.split("-")
        start, end = _minutes(start_s), _minutes(end_s)
        if start == end:
            return True
        if start < end and start <= now < end:
            return True
        if start > end and (now >= start or now < end):
            return True
    return False


class VendingRule(CellRule[VendingParams]):
    name = "street_vending"

    def _params(self, config: RulesConfig) -> VendingParams:
        return config.street_vending

    def _cell_size(self, params: VendingParams) -> float:
        return params.cell

    def _accept(
        self, dets: Detections, params: VendingParams, ts: float, frame_size: FrameSize
    ) -> npt.NDArray[np.bool_]:
        return np.full(len(dets), in_active_hours(params.active_hours, params.timezone, ts), bool)

    def _ready(self, entry: Entry[VendingParams], ts: float) -> bool:
        return ts - entry.first_seen >= entry.params.dwell_s and entry.score_median >= entry.params.min_score
