"""The manifest's ``history:``: every change of the default model, a promotion or a rollback.

``citywatch models promote`` appends a ``promote`` record (through the gate, or ``--force`` with the figures
it overrode); ``citywatch models rollback`` a ``rollback`` record. ``from`` and ``to`` are the
``name@version`` the default resolved to before and after, so a rollback returns to exactly the model that
ran before even when ``default`` names a model without a version. Old manifests have no history.

    history:
    - at: '2026-12-08T09:30:00Z'
      by: alice
      action: promote                 # promote | rollback
      from: citywatch-synth@1.2.0
      to: citywatch-synth@1.3.0
      default: citywatch-synth@1.3.0  # `default` as written after the change
      forced: true                    # the gate refused; --force overrode it
      failures:                       # the figures it refused
      - {figure: AP50 litter, current: 0.839, candidate: 0.801, drop: 0.038, tolerance: 0.02}
      reason: litter relabelled; street cameras need the new vehicle recall
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class GateFigure(BaseModel):
    """One figure the promotion gate found worse than the current default's (recorded when forced)."""

    model_config = ConfigDict(extra="forbid")

    figure: str = Field(
        description="what was compared, e.g. `AP50 litter`, `mAP50`, `eval-clips false cases`"
    )
    current: float | None = Field(
        default=None, description="the current default's value (None: not measured)"
    )
    candidate: float | None = Field(default=None, description="the candidate's value (None: not measured)")
    drop: float | None = Field(default=None, description="how much worse: AP lost, or failures added")
    tolerance: float = Field(default=0.0, ge=0.0, description="the largest drop the gate allows")
    note: str | None = Field(default=None, description="why it could not be measured, when it was not")


class HistoryRecord(BaseModel):
    """One change of the default model."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: AwareDatetime = Field(description="when (UTC)")
    by: str = Field(min_length=1, description="who (`--by`, else the login name)")
    action: Literal["promote", "rollback"]
    from_: str | None = Field(
        default=None, alias="from", description="name@version the default resolved to before (None: none)"
    )
    to: str = Field(min_length=1, description="name@version the default resolves to after")
    default: str | None = Field(
        default=None, description="`default` as written after the change (a bare name: its highest version)"
    )
    forced: bool = Field(default=False, description="the gate refused and `--force` overrode it")
    failures: list[GateFigure] = Field(default_factory=list, description="the figures the gate refused")
    reason: str | None = Field(default=None, description="why (required with --force)")


__all__ = ["GateFigure", "HistoryRecord"]
