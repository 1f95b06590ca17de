"""The working calendar (deadlines in working hours) and the routing table (职责清单)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.errors import ConfigError
from api.services.calendar import WorkCalendar
from api.services.routing import DEFAULT_ROUTING_FILE, NoRouteError, RoutingTable

CAL = WorkCalendar(holidays=frozenset({date(2026, 5, 1)}), extra_workdays=frozenset({date(2026, 5, 9)}))


def local(text: str) -> datetime:
    return datetime.fromisoformat(f"{text}+08:00")


@pytest.mark.parametrize(
    ("start", "hours", "deadline"),
    [
        ("2026-03-02T09:00", 2, "2026-03-02T11:00"),  # Monday morning
        ("2026-03-02T11:00", 2, "2026-03-02T15:00"),  # over the lunch break
        ("2026-03-02T12:30", 1, "2026-03-02T15:00"),  # starts in the lunch break
        ("2026-03-02T17:00", 1, "2026-03-03T09:00"),  # over the night
        ("2026-03-02T20:00", 7, "2026-03-03T17:30"),  # one whole working day
        ("2026-03-06T17:00", 1, "2026-03-09T09:00"),  # Friday → Monday
        ("2026-03-07T10:00", 0.5, "2026-03-09T09:00"),  # Saturday counts from Monday 08:30
        ("2026-04-30T17:00", 1, "2026-05-04T09:00"),  # Friday 1 May is a holiday, then the weekend
        ("2026-05-08T17:00", 1, "2026-05-09T09:00"),  # make-up Saturday (调休)
        ("2026-03-02T09:00", 0, "2026-03-02T09:00"),
        ("2026-03-02T11:59", 105, "2026-03-23T11:59"),  # 15 working days
    ],
)
def test_deadlines(start: str, hours: float, deadline: str) -> None:
    assert CAL.add_working_hours(local(start), hours) == local(deadline).astimezone(UTC)


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        ("2026-03-02T09:00", "2026-03-02T15:00", 4.0),
        ("2026-03-06T17:00", "2026-03-09T09:00", 1.0),
        ("2026-03-02T15:00", "2026-03-02T09:00", -4.0),
    ],
)
def test_working_hours_between(start: str, end: str, hours: float) -> None:
    assert CAL.working_hours_between(local(start), local(end)) == pytest.approx(hours)


def test_calendar_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        WorkCalendar(periods=((time(12), time(8)),))
    with pytest.raises(ValueError, match="overlap"):
        WorkCalendar(periods=((time(8), time(12)), (time(11), time(13))))
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.add_working_hours(datetime(2026, 3, 2, 9), 1)
    assert CAL.hours_per_day == 7.0


@pytest.fixture(scope="module")
def table() -> RoutingTable:
    return RoutingTable.load(None)


@pytest.mark.parametrize(
    ("rule", "grid", "road", "unit", "tier", "hours", "street"),
    [
        ("illegal_parking", "红钢城-03", "和平大道", "hgc-squad", "street", 2, "hgc"),
        ("illegal_parking", "钢花村-01", None, "ghc-squad", "street", 2, "ghc"),
        ("illegal_parking", None, None, "xcq-squad", "street", 2, "xcq"),
        ("street_vending", "红钢城-03", None, "hgc-grid-03", "grid", 2, "hgc"),
        ("street_vending", "红钢城-05", None, "hgc-squad", "street", 2, "hgc"),
        ("unclean_road", "红钢城-03", "和平大道", "heping-road-chief", "road", 5, "hgc"),
        ("unclean_road", "钢花村-02", "建设二路", "district-sanitation", "district", 7, "ghc"),
        ("illegal_structure", "G-01", None, "district-demolition", "district", 105, "xcq"),
    ],
)
def test_default_routes(
    table: RoutingTable,
    rule: str,
    grid: str | None,
    road: str | None,
    unit: str,
    tier: str,
    hours: float,
    street: str,
) -> None:
    route = table.route(rule, grid, road)
    assert (route.unit, route.tier, route.deadline_hours, route.street) == (unit, tier, hours, street)


def test_a_named_unit_keeps_the_routes_deadline(table: RoutingTable) -> None:
    route = table.route("illegal_structure", "红钢城-01", None, unit="hgc-squad")
    assert (route.unit, route.deadline_hours, route.street) == ("hgc-squad", 105, "hgc")
    with pytest.raises(NoRouteError, match="unknown unit"):
        table.route("illegal_parking", None, None, unit="ghost")


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_no_route_without_a_catch_all(tmp_path: Path) -> None:
    data = {
        "units": [{"id": "u", "name": "U", "tier": "district"}],
        "routes": [{"rule": "illegal_parking", "grid": "A-*", "unit": "u", "deadline_hours": 1}],
    }
    t = RoutingTable.load(_write(tmp_path, data))
    assert t.route("illegal_parking", "A-1", None).unit == "u"
    with pytest.raises(NoRouteError, match="no route"):
        t.route("illegal_parking", "B-1", None)
    assert t.route("unclean_road", None, None, unit="u").deadline_hours == 7.0  # default_deadline_hours


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"routes": [{"rule": "*", "unit": "ghost", "deadline_hours": 1}]}, "unknown unit 'ghost'"),
        ({"units": [{"id": "u", "name": "U", "tier": "city"}]}, "tier"),
        ({"units": [{"id": "u", "name": "U", "tier": "street", "street": "nowhere"}]}, "unknown street"),
        ({"calendar": {"periods": ["8:30-12:00"]}}, "HH:MM-HH:MM"),
        ({"calendar": {"timezone": "Mars/Olympus"}}, "Mars/Olympus"),
        ({"calendar": {"workdays": [0]}}, "1..7"),
        ({"colour": "red"}, "colour"),
        ({"dedup": {"illegal_parking": {"radius_m": -1}}}, "radius_m"),
    ],
)
def test_bad_routing_files_stop_the_start(tmp_path: Path, change: dict[str, Any], words: str) -> None:
    data: dict[str, Any] = {"units": [{"id": "u", "name": "U", "tier": "district"}]}
    data.update(change)
    with pytest.raises(ConfigError, match=words):
        RoutingTable.load(_write(tmp_path, data))


def test_the_default_file_is_the_one_shipped() -> None:
    assert DEFAULT_ROUTING_FILE.is_file()
    with pytest.raises(ConfigError, match="cannot be read"):
        RoutingTable.load(Path("/nonexistent/routing.yaml"))
