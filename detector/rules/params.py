"""Rule parameters: one pydantic model per rule, all defaults from DESIGN.md.

Every number is configurable per stream and per zone; ``RulesConfig.merged`` applies
partial override dicts (stream level, then zone level) on top of the defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from detector.contracts.zones import RULE_NAMES, active_hours_error, timezone_error

__all__ = [
    "RULE_NAMES",
    "LitterParams",
    "ParkingParams",
    "RuleParams",
    "RulesConfig",
    "StructureParams",
    "VendingParams",
]


class RuleParams(BaseModel):
    """Parameters every rule shares."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] = Field(
        default_factory=list,
        description="Rule labels (vehicle, vendor, structure, litter) or model class names to watch.",
    )
    min_score: float = Field(
        default=0.35,
        ge=0.0,
        le=1.0,
        description="Threshold compared with the median of a track's recent scores.",
    )
    grace_s: float = Field(
        default=60.0, ge=0.0, description="An object gone longer than this clears its violation."
    )
    enabled: bool = Field(default=True, description="Turn the rule off without removing its zones.")
    update_interval_s: float = Field(
        default=60.0, gt=0.0, description="While a violation is active, emit `updated` at most this often."
    )
    veto: list[str] = Field(
        default_factory=list,
        description="Labels or class names (of any model the stream runs, e.g. the COCO model's `person`) "
        "that overrule this rule's detection where they cover it: a box another model confidently calls a "
        "person or a vehicle is not a stall, litter or a structure. Read per stream (defaults + stream "
        "`rules:`), not per zone.",
    )
    veto_min_score: float = Field(
        default=0.35,
        ge=0.0,
        le=1.0,
        description="Score a vetoing detection needs (default: the parking rule's min_score, so whatever "
        "parking would count as a vehicle overrules a stall on it).",
    )
    veto_memory_s: float = Field(
        default=60.0,
        ge=0.0,
        description="A vetoing box keeps overruling its place this long after it was last seen (a parked car "
        "the vehicle model sees only now and then).",
    )
    veto_overlap: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="A detection is overruled when its IoU with a vetoing box, or the share of its own area "
        "inside that box, reaches this.",
    )


class ParkingParams(RuleParams):
    classes: list[str] = Field(default_factory=lambda: ["vehicle"], description="Vehicle labels / classes.")
    dwell_s: float = Field(
        default=300.0, ge=0.0, description="Stationary time in a no-parking zone before it opens."
    )
    stationary_iou: float = Field(
        default=0.7,
        gt=0.0,
        le=1.0,
        description="IoU with the box at the dwell start at or above which it is stationary.",
    )


class VendingParams(RuleParams):
    veto: list[str] = Field(
        default_factory=lambda: ["person", "vehicle"],
        description="Labels / class names overruling this rule's detection where they cover it (per stream).",
    )
    classes: list[str] = Field(
        default_factory=lambda: ["vendor"], description="Vendor / stall labels or classes."
    )
    dwell_s: float = Field(default=300.0, ge=0.0, description="Time a stall must persist before it opens.")
    active_hours: list[str] = Field(
        default_factory=list,
        description='Local time windows "HH:MM-HH:MM" (may wrap midnight); empty means always.',
    )
    timezone: str = Field(default="Asia/Shanghai", description="IANA time zone of the camera's local time.")
    cell: float = Field(
        default=0.05, gt=0.0, le=1.0, description="Stall position cell size, fraction of frame width."
    )

    @field_validator("active_hours")
    @classmethod
    def _check_hours(cls, value: list[str]) -> list[str]:
        error = active_hours_error(value)  # the API's zone editor judges them the same way
        if error is not None:
            raise ValueError(error)
        return [v.strip() for v in value]

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        error = timezone_error(value)
        if error is not None:
            raise ValueError(error)
        return value


class StructureParams(RuleParams):
    veto: list[str] = Field(
        default_factory=lambda: ["person", "vehicle"],
        description="Labels / class names overruling this rule's detection where they cover it (per stream).",
    )
    classes: list[str] = Field(
        default_factory=lambda: ["structure"], description="Structure labels / classes."
    )
    min_samples: int = Field(
        default=5, ge=1, description="Samples a structure must be seen on before it opens."
    )
    grace_s: float = Field(
        default=600.0, ge=0.0, description="A structure gone longer than this clears its violation."
    )
    cell: float = Field(
        default=0.05, gt=0.0, le=1.0, description="Footprint cell size, fraction of frame width."
    )


class LitterParams(RuleParams):
    veto: list[str] = Field(
        default_factory=lambda: ["person", "vehicle"],
        description="Labels / class names overruling this rule's detection where they cover it (per stream).",
    )
    classes: list[str] = Field(
        default_factory=lambda: ["litter"], description="Litter / garbage labels or classes."
    )
    dwell_s: float = Field(default=120.0, ge=0.0, description="Time litter must persist before it opens.")
    min_area: float = Field(
        default=0.0005, ge=0.0, le=1.0, description="Minimum box area, fraction of the frame area."
    )
    cell: float = Field(
        default=0.05, gt=0.0, le=1.0, description="Location cell size, fraction of frame width."
    )


class RulesConfig(BaseModel):
    """The four rules' parameters for one stream (or one zone after overrides)."""

    model_config = ConfigDict(extra="forbid")

    illegal_parking: ParkingParams = Field(default_factory=lambda: ParkingParams(), description="违章停放")
    street_vending: VendingParams = Field(
        default_factory=lambda: VendingParams(), description="占道经营/游商"
    )
    illegal_structure: StructureParams = Field(
        default_factory=lambda: StructureParams(), description="违法搭建"
    )
    unclean_road: LitterParams = Field(
        default_factory=lambda: LitterParams(), description="道路不洁/暴露垃圾"
    )

    def of(self, rule: str) -> RuleParams | None:
        """One rule's parameters by the rule's name; None for a name that is no rule."""
        by_name: dict[str, RuleParams] = {
            "illegal_parking": self.illegal_parking,
            "street_vending": self.street_vending,
            "illegal_structure": self.illegal_structure,
            "unclean_road": self.unclean_road,
        }
        return by_name.get(rule)

    def merged(self, overrides: dict[str, Any] | None) -> RulesConfig:
        """A new config with ``overrides`` (partial, nested dicts) deep-merged and re-validated."""
        if not overrides:
            return self
        return RulesConfig.model_validate(_deep_merge(self.model_dump(), overrides))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
