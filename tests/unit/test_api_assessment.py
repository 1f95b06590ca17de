"""Monthly assessment of a seeded month against figures computed by hand (api/ASSESSMENT.md has
the same worked example), on SQLite and PostgreSQL; the CSV export; ranking ties."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.ingest.sample import sample_event
from api.services.assessment import Counts, finish, rank
from api.services.routing import WeightsConfig
from tests.api_support import FakeClock, auth, db_url, ingest_sample, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures

PREFIX = "citywatch/v1"


def z(text: str) -> datetime:
    """Local time of the bureau (+08:00) given as 'MM-DD HH:MM' in 2026, as an aware UTC datetime."""
    return datetime.fromisoformat(f"2026-{text}:00+08:00").astimezone(UTC)


def case(app: FastAPI, n: int, grid: str) -> int:
    """A camera case ~1 km from the others (so no duplicate merging)."""
    body = sample_event(stream=f"cam-a{n}", location={"lat": 30.60 + n * 0.01, "lon": 114.39, "grid": grid})
    return ingest_sample(app, body)


def seed_march(app: FastAPI, client: TestClient, clock: FakeClock) -> None:
    """The month of ASSESSMENT.md's worked example."""

    def do(at: str, who: str, cid: int, action: str, body: dict[str, Any] | None = None) -> None:
        clock.set(z(at))
        response = client.post(f"/cases/{cid}/{action}", headers=auth(who), json=body)
        assert response.status_code == 200, (at, who, cid, action, response.text)

    h1, h2, h3, h4, h6 = (case(app, n, "红钢城-01") for n in (1, 2, 3, 4, 6))
    h5, x1 = case(app, 5, "红钢城-02"), case(app, 7, "G-01")
    for cid in (h1, h2, h3, h4, h5, h6):
        do("03-02 09:00", "reviewer", cid, "register")
        do("03-02 09:00", "dispatcher", cid, "dispatch")  # hgc-squad, deadline 11:00
    for cid in (h1, h2, h3, h4):
        do("03-02 09:00", "unit", cid, "accept")
    do("03-02 09:00", "dispatcher", h6, "hold", {"note": "挂账: owner unknown"})
    do("03-02 09:30", "unit", h5, "return", {"note": "not ours"})
    do("03-02 10:00", "unit", h1, "dispose")
    do("03-02 10:00", "dispatcher", h5, "dispatch", {"unit": "xcq-squad"})  # deadline 12:00
    do("03-02 10:00", "other_unit", h5, "accept")
    do("03-02 10:00", "dispatcher", h3, "postpone", {"hours": 7, "note": "延期"})  # deadline Tue 11:00
    do("03-02 10:30", "reviewer", h1, "close")
    do("03-02 11:00", "other_unit", h5, "dispose")
    do("03-02 11:30", "reviewer", h5, "close")
    do("03-02 14:30", "unit", h2, "dispose")  # late
    do("03-02 15:00", "reviewer", h2, "rework", {"note": "still parked"})
    do("03-02 15:30", "unit", h2, "dispose")
    do("03-02 16:00", "reviewer", h2, "close")
    do("03-03 10:00", "unit", h3, "dispose")  # on time after the postponement; never closed
    do("03-31 17:00", "reviewer", x1, "register")
    do("03-31 17:00", "dispatcher", x1, "dispatch")  # xcq-squad, deadline 04-01 10:00: not overdue
    clock.set(z("04-05 09:00"))


def rows_by_key(client: TestClient, by: str) -> dict[str, dict[str, Any]]:
    response = client.get("/assessment", params={"month": "2026-03", "by": by}, headers=auth("dispatcher"))
    assert response.status_code == 200, response.text
    return {r["key"]: r for r in response.json()["rows"]}


COUNT_KEYS = [
    "dispatched",
    "returned",
    "on_hold",
    "due",
    "disposed",
    "disposed_on_time",
    "overdue_pending",
    "to_close",
    "closed",
    "closed_on_time",
    "reworked",
    "postponed",
]
RATE_KEYS = [
    "disposal_rate",
    "ontime_disposal_rate",
    "closure_rate",
    "ontime_closure_rate",
    "rework_rate",
    "postponement_rate",
    "overdue_pending_rate",
    "dispatch_accuracy",
]

# Hand-computed (ASSESSMENT.md, "Worked example").
EXPECTED: dict[str, dict[str, tuple[list[int], list[float | None], float | None, int | None]]] = {
    "unit": {
        "hgc-squad": (
            [6, 1, 1, 4, 3, 2, 1, 4, 2, 1, 1, 1],
            [0.75, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.8333],
            70.0,
            2,
        ),
        "xcq-squad": (
            [2, 0, 0, 2, 1, 1, 0, 1, 1, 1, 0, 0],
            [0.5, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            75.0,
            1,
        ),
    },
    "street": {
        "hgc": ([7, 1, 1, 5, 4, 3, 1, 5, 3, 2, 1, 1], [0.8, 0.6, 0.6, 0.4, 0.2, 0.2, 0.2, 0.8571], 76.0, 1),
        "xcq": ([1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0.0, 0.0, None, None, None, 0.0, 0.0, 1.0], 50.0, 2),
    },
    "grid": {
        "红钢城-01": (
            [5, 0, 1, 4, 3, 2, 1, 4, 2, 1, 1, 1],
            [0.75, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 1.0],
            70.0,
            2,
        ),
        "红钢城-02": (
            [2, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5],
            100.0,
            1,
        ),
        "G-01": ([1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0.0, 0.0, None, None, None, 0.0, 0.0, 1.0], 50.0, 3),
    },
}


def test_seeded_month_matches_the_hand_computed_figures(
    client: TestClient, app: FastAPI, clock: FakeClock
) -> None:
    seed_march(app, client, clock)
    for by, expected in EXPECTED.items():
        rows = rows_by_key(client, by)
        assert set(rows) == set(expected), by
        for key, (counts, rates, score, rank_) in expected.items():
            row = rows[key]
            assert [row[k] for k in COUNT_KEYS] == counts, (by, key)
            assert [row[k] for k in RATE_KEYS] == rates, (by, key)
            assert (row["score"], row["rank"]) == (score, rank_), (by, key)
    assert rows_by_key(client, "unit")["hgc-squad"]["name"] == "红钢城街道城管执法中队"
    # February and April had no dispatches
    empty = client.get("/assessment", params={"month": "2026-02"}, headers=auth("reviewer")).json()
    assert empty["rows"] == []


def test_mid_month_counts_up_to_now(client: TestClient, app: FastAPI, clock: FakeClock) -> None:
    seed_march(app, client, clock)
    clock.set(z("03-02 10:45"))  # H1 disposed and closed, H2 and H4 not yet late, H5 back with xcq
    hgc = rows_by_key(client, "unit")["hgc-squad"]
    assert (hgc["disposed"], hgc["closed"], hgc["overdue_pending"], hgc["returned"]) == (1, 1, 0, 1)


def test_csv_export(client: TestClient, app: FastAPI, clock: FakeClock) -> None:
    seed_march(app, client, clock)
    response = client.get(
        "/assessment/csv", params={"month": "2026-03", "by": "unit"}, headers=auth("reviewer")
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="citywatch-assessment-2026-03-unit.csv"' in response.headers["content-disposition"]
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    table = list(csv.DictReader(io.StringIO(text[1:])))
    assert [r["编号 key"] for r in table] == ["xcq-squad", "hgc-squad"]
    assert (
        table[1]["处置率"] == "0.75" and table[1]["综合得分 score"] == "70.0" and table[1]["排名 rank"] == "2"
    )
    assert table[1]["准确派遣率"] == "0.8333" and table[0]["返工率"] == "0.0"


@pytest.mark.parametrize(("who", "code"), [("public", 403), ("detector", 403), ("unit", 200), ("admin", 200)])
def test_who_may_read_it(client: TestClient, who: str, code: int) -> None:
    assert client.get("/assessment", params={"month": "2026-03"}, headers=auth(who)).status_code == code


@pytest.mark.parametrize("month", ["2026-13", "2026-3", "March", "2026-00"])
def test_bad_month_is_422(client: TestClient, month: str) -> None:
    assert client.get("/assessment", params={"month": month}, headers=auth("admin")).status_code == 422


def test_ranking_ties_share_a_rank_and_no_due_cases_no_score() -> None:
    w = WeightsConfig()
    perfect = Counts(dispatched=1, due=1, disposed=1, disposed_on_time=1, closed=1, closed_on_time=1)
    rows = rank(
        [
            finish("a", "a", perfect, w),
            finish("b", "b", perfect, w),
            finish("c", "c", Counts(dispatched=2, returned=2), w),
            finish("d", "d", Counts(dispatched=1, due=1, overdue_pending=1), w),
        ]
    )
    assert [(r.key, r.score, r.rank) for r in rows] == [
        ("a", 100.0, 1),
        ("b", 100.0, 1),
        ("d", 30.0, 3),
        ("c", None, None),
    ]
    assert rows[3].dispatch_accuracy == 0.0
