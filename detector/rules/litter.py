"""道路不洁/暴露垃圾 unclean road: litter on a road zone, box area ≥ ``min_area`` of the frame,
persisting ``dwell_s``. One violation per location cell; several litter boxes in one cell are one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detector.contracts.detections import Detections
from detector.rules.base import CellRule, Entry
from detector.rules.params import LitterParams, RulesConfig
from detector.rules.zones import FrameSize


class LitterRule(CellRule[LitterParams]):
    name = "unclean_road"

    def _params(self, config: RulesConfig) -> LitterParams:
        return config.unclean_road

    def _cell_size(self, params: LitterParams) -> float:
        return params.cell

    def _accept(
        self, dets: Detections, params: LitterParams, ts: float, frame_size: FrameSize
    ) -> npt.NDArray[np.bool_]:
        frame_area = float(frame_size[0]) * float(frame_size[1])
        result: npt.NDArray[np.bool_] = dets.area.astype(np.float64) >= params.min_area * frame_area
        return result

    def _ready(self, entry: Entry[LitterParams], ts: float) -> bool:
        return ts - entry.first_seen >= entry.params.dwell_s and entry.score_median >= entry.params.min_score
