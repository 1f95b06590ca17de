"""The four violation rules, their parameters and the per-stream engine.

Parameters are imported eagerly (they depend on nothing else of ours); the engine and the rule
base are loaded on first use, so ``detector.rules.zones`` can import the parameters without a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from detector.rules.params import (
    RULE_NAMES,
    LitterParams,
    ParkingParams,
    RuleParams,
    RulesConfig,
    StructureParams,
    VendingParams,
)

if TYPE_CHECKING:
    from detector.rules.base import Rule, RuleError, ViolationUpdate
    from detector.rules.engine import RuleEngine, label_map

_LAZY = {
    "Rule": "detector.rules.base",
    "RuleError": "detector.rules.base",
    "ViolationUpdate": "detector.rules.base",
    "RuleEngine": "detector.rules.engine",
    "label_map": "detector.rules.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'detector.rules' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "RULE_NAMES",
    "LitterParams",
    "ParkingParams",
    "Rule",
    "RuleEngine",
    "RuleError",
    "RuleParams",
    "RulesConfig",
    "StructureParams",
    "VendingParams",
    "ViolationUpdate",
    "label_map",
]
