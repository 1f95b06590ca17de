"""违章停放 illegal parking: a stationary vehicle in a no-parking zone for ``dwell_s``.

One violation per parked vehicle (per zone). The dwell runs from the first sample at the vehicle's
current position (its anchor); a vehicle whose box moves away from the anchor (IoU below
``stationary_iou``) restarts it, so slow passing traffic never opens a case. A vehicle lost and
re-acquired inside the grace period keeps its violation, whether the tracker re-acquires the same
track or a new track appears on the lost vehicle's spot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.contracts.detections import Detections
from detector.rules.base import Entry, Rule, RuleError, class_mask, new_entry
from detector.rules.params import ParkingParams, RulesConfig
from detector.rules.tracker import Anchor, Box, box_tuple, iou, labels_of
from detector.rules.zones import FrameSize, Zone

REACQUIRE_IOU = 0.3


class ParkingRule(Rule[ParkingParams]):
    name = "illegal_parking"

    def __init__(
        self,
        zones: Sequence[Zone],
        config: RulesConfig | None = None,
        *,
        max_gap_s: float | None = None,
    ) -> None:
        super().__init__(zones, config, max_gap_s=max_gap_s)
        self._anchors: dict[str, Anchor] = {}
        self._alias: dict[tuple[str, int], str] = {}

    def _params(self, config: RulesConfig) -> ParkingParams:
        return config.illegal_parking

    def _observe(self, dets: Detections, ts: float, frame_size: FrameSize) -> set[str]:
        seen: set[str] = set()
        if len(dets) == 0:
            return seen
        if dets.tracker_id is None:
            raise RuleError("illegal_parking judges tracked vehicles: run the tracker before this rule")
        labels = labels_of(dets)
        for zone, params in self.zones:
            mask = class_mask(dets, params.classes) & zone.contains_boxes(dets.xyxy, frame_size)
            for i in (int(k) for k in np.flatnonzero(mask)):
                tid = int(dets.tracker_id[i])
                box = box_tuple(dets.xyxy[i])
                key = self._alias.get((zone.id, tid)) or self._adopt(zone.id, box, seen)
                if key is None:
                    key = f"{self.name}:{zone.id}:track{tid}@{int(ts)}"
                    self.entries[key] = new_entry(key, labels[i], zone.id, params, ts, box)
                    self._anchors[key] = Anchor(box, ts)
                else:
                    self._anchors[key].advance(box, ts, params.stationary_iou)
                self._alias[(zone.id, tid)] = key
                self.entries[key].observe(ts, box, float(dets.confidence[i]))
                seen.add(key)
        return seen

    def _adopt(self, zone_id: str, box: Box, seen: set[str]) -> str | None:
        """A lost entry of this zone whose vehicle was where ``box`` is now."""
        best: tuple[float, str] | None = None
        for key, entry in self.entries.items():
            if entry.zone != zone_id or key in seen or entry.missed_s <= 0:
                continue
            overlap = max(iou(box, self._anchors[key].box), iou(box, entry.bbox))
            if overlap >= REACQUIRE_IOU and (best is None or overlap > best[0]):
                best = (overlap, key)
        return None if best is None else best[1]

    def _ready(self, entry: Entry[ParkingParams], ts: float) -> bool:
        anchor = self._anchors[entry.key]
        return (
            anchor.samples >= 2
            and ts - anchor.since >= entry.params.dwell_s
            and entry.score_median >= entry.params.min_score
        )

    def _forget(self, key: str) -> None:
        super()._forget(key)
        self._anchors.pop(key, None)
        for alias in [a for a, k in self._alias.items() if k == key]:
            del self._alias[alias]
