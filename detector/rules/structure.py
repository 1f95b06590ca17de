"""违法搭建 illegal structure (camera): a structure seen on at least ``min_samples`` samples.

One violation per footprint (location cell). Structures do not walk away, so the grace period is
long (600 s by default): a structure hidden by a parked lorry for a few minutes keeps its case.
"""

from __future__ import annotations

from detector.rules.base import CellRule, Entry
from detector.rules.params import RulesConfig, StructureParams


class StructureRule(CellRule[StructureParams]):
    name = "illegal_structure"

    def _params(self, config: RulesConfig) -> StructureParams:
        return config.illegal_structure

    def _cell_size(self, params: StructureParams) -> float:
        return params.cell

    def _ready(self, entry: Entry[StructureParams], ts: float) -> bool:
        return entry.samples >= entry.params.min_samples and entry.score_median >= entry.params.min_score
