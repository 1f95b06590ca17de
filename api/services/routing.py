"""职责清单: the routing table (rule x grid or road -> unit, tier, deadline), the street offices
and their grids, the working calendar, duplicate windows and the assessment weights.

One YAML file (``CITYWATCH_ROUTING_FILE``, default ``api/config/routing.yaml``), checked by
pydantic models with ``extra="forbid"``. Routes are tried in order and the first match wins;
``rule``, ``grid`` and ``road`` take shell-style wildcards (``红钢城-*``, ``*``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from api.errors import CityWatchAPIError, ConfigError
from api.services.calendar import WorkCalendar

DEFAULT_ROUTING_FILE = Path(__file__).resolve().parent.parent / "config" / "routing.yaml"
Tier = Literal["district", "street", "grid", "road"]
_PERIOD = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CalendarConfig(_Strict):
    timezone: str = Field(default="Asia/Shanghai", description="IANA zone of the bureau")
    periods: list[str] = Field(default=["08:30-12:00", "14:00-17:30"], min_length=1)
    workdays: list[int] = Field(default=[1, 2, 3, 4, 5], description="ISO weekdays (1 = Monday)")
    holidays: list[date] = Field(default_factory=list)
    extra_workdays: list[date] = Field(default_factory=list, description="调休: weekend days worked")

    @field_validator("periods")
    @classmethod
    def _check_periods(cls, value: list[str]) -> list[str]:
        for text in value:
            if _PERIOD.match(text) is None:
                raise ValueError(f"working period {text!r} is not HH:MM-HH:MM")
        return value

    @field_validator("workdays")
    @classmethod
    def _check_workdays(cls, value: list[int]) -> list[int]:
        if any(d < 1 or d > 7 for d in value):
            raise ValueError("workdays are ISO weekday numbers 1..7")
        return value

    def build(self) -> WorkCalendar:
        periods = []
        for text in self.periods:
            m = _PERIOD.match(text)
            if m is None:
                raise ConfigError(f"routing calendar: working period {text!r} is not HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            periods.append((time(h1, m1), time(h2, m2)))
        try:
            return WorkCalendar(
                self.timezone,
                tuple(periods),
                frozenset(self.workdays),
                frozenset(self.holidays),
                frozenset(self.extra_workdays),
            )
        except (ValueError, LookupError) as exc:
            raise ConfigError(f"routing calendar: {exc}") from exc


class StreetConfig(_Strict):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    grids: list[str] = Field(default_factory=list, description="grid ids or wildcards")


class UnitConfig(_Strict):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    tier: Tier
    street: str | None = Field(default=None, description="street office id, for street/grid/road units")


class RouteConfig(_Strict):
    rule: str = Field(default="*", min_length=1)
    grid: str | None = Field(default=None, min_length=1)
    road: str | None = Field(default=None, min_length=1)
    unit: str = Field(min_length=1)
    deadline_hours: float = Field(gt=0, le=24 * 365, description="working hours from dispatch")


class DedupConfig(_Strict):
    radius_m: float = Field(default=30.0, ge=0, le=5000)
    window_h: float = Field(default=24.0, ge=0, le=24 * 90)
    recurrence_days: float = Field(default=30.0, ge=0, le=3650)


class WeightsConfig(_Strict):
    """30·处置率 + 20·按期处置率 + 20·(1−返工率) + 20·(1−超期待处置率) + 10·(1−延期率)."""

    disposal_rate: float = Field(default=30, ge=0)
    ontime_disposal_rate: float = Field(default=20, ge=0)
    no_rework: float = Field(default=20, ge=0)
    no_overdue_pending: float = Field(default=20, ge=0)
    no_postponement: float = Field(default=10, ge=0)


class RoutingConfig(_Strict):
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    streets: list[StreetConfig] = Field(default_factory=list)
    units: list[UnitConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(default_factory=list)
    dedup: dict[str, DedupConfig] = Field(default_factory=dict)
    weights: WeightsConfig = Field(default_factory=WeightsConfig)
    default_deadline_hours: float = Field(
        default=7.0, gt=0, description="deadline when a unit is named for a case that no route matches"
    )

    @model_validator(mode="after")
    def _cross_check(self) -> RoutingConfig:
        units = {u.id for u in self.units}
        streets = {s.id for s in self.streets}
        for kind, ids in (("unit", [u.id for u in self.units]), ("street", [s.id for s in self.streets])):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{kind} ids must be unique; repeated: {', '.join(dupes)}")
        for u in self.units:
            if u.street is not None and u.street not in streets:
                raise ValueError(f"unit {u.id!r} names unknown street {u.street!r}")
        for i, r in enumerate(self.routes):
            if r.unit not in units:
                raise ValueError(f"routes[{i}] names unknown unit {r.unit!r}")
        return self


@dataclass(frozen=True, slots=True)
class Route:
    unit: str
    unit_name: str
    tier: str
    deadline_hours: float
    street: str | None


class NoRouteError(CityWatchAPIError, LookupError):
    """No route matches and no unit was named."""


class RoutingTable:
    def __init__(self, config: RoutingConfig, source: str = "<memory>") -> None:
        self.config = config
        self.source = source
        self.calendar = config.calendar.build()
        self.units = {u.id: u for u in config.units}
        self.streets = {s.id: s for s in config.streets}

    @classmethod
    def load(cls, path: Path | None) -> RoutingTable:
        path = path if path is not None else DEFAULT_ROUTING_FILE
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"routing file {path} cannot be read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"routing file {path} is not valid YAML: {exc}") from exc
        try:
            return cls(RoutingConfig.model_validate(data), str(path))
        except ValidationError as exc:
            raise ConfigError(f"routing file {path} is invalid: {exc}") from exc

    def street_for(self, grid: str | None, unit: str | None = None) -> str | None:
        if grid is not None:
            for street in self.config.streets:
                if any(fnmatch.fnmatchcase(grid, pattern) for pattern in street.grids):
                    return street.id
        if unit is not None and unit in self.units:
            return self.units[unit].street
        return None

    def route(self, rule: str, grid: str | None, road: str | None, unit: str | None = None) -> Route:
        """The route of a case; ``unit`` overrides the unit (the deadline stays the route's)."""
        match: RouteConfig | None = None
        for r in self.config.routes:
            if not fnmatch.fnmatchcase(rule, r.rule):
                continue
            if r.grid is not None and (grid is None or not fnmatch.fnmatchcase(grid, r.grid)):
                continue
            if r.road is not None and (road is None or not fnmatch.fnmatchcase(road, r.road)):
                continue
            match = r
            break
        if unit is not None and unit not in self.units:
            raise NoRouteError(f"unknown unit {unit!r}; units: {', '.join(sorted(self.units))}")
        if match is None and unit is None:
            raise NoRouteError(f"no route for rule {rule!r} at grid {grid!r} / road {road!r}; name a unit")
        chosen = self.units[unit] if unit is not None else self.units[match.unit]  # type: ignore[union-attr]
        hours = match.deadline_hours if match is not None else self.config.default_deadline_hours
        return Route(chosen.id, chosen.name, chosen.tier, hours, self.street_for(grid, chosen.id))

    def dedup(self, rule: str) -> DedupConfig | None:
        return self.config.dedup.get(rule)

    def deadline(self, start: datetime, hours: float) -> datetime:
        return self.calendar.add_working_hours(start, hours)
