"""Open311 GeoReport v2: services and requests in JSON and XML, the status mapping, hidden
candidates, filters, extensions, filing a request, and Open311's error format."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.ingest.sample import encode, sample_event, sample_jpeg
from api.ingest.service import ingest_event
from tests.api_support import auth, key_of

BASE = "/open311/v2"
PREFIX = "citywatch/v1"


def camera(app: FastAPI, n: int, first_seen: str = "2026-02-20T08:00:00+00:00") -> int:
    body = sample_event(
        stream=f"cam-o{n}",
        first_seen=first_seen,
        last_seen=first_seen,
        location={"lat": 30.6 + n * 0.01, "lon": 114.39, "grid": "红钢城-01", "address": f"路 {n} 号"},
    )
    with app.state.session_factory() as s:
        result = ingest_event(s, f"{PREFIX}/violations/cam-o{n}", encode(body), app.state.evidence_store)
    assert result.case_id is not None
    return result.case_id


def act(client: TestClient, cid: int, *steps: tuple[str, str, dict[str, Any] | None]) -> None:
    for who, action, body in steps:
        assert client.post(f"/cases/{cid}/{action}", headers=auth(who), json=body).status_code == 200


@pytest.fixture
def seeded(app: FastAPI, client: TestClient) -> dict[str, int]:
    ids = {
        name: camera(app, n)
        for n, name in enumerate(["hidden", "open", "closed", "rejected", "merged", "old"])
    }
    act(client, ids["open"], ("reviewer", "register", None), ("dispatcher", "dispatch", None))
    act(
        client,
        ids["closed"],
        ("reviewer", "register", None),
        ("dispatcher", "dispatch", None),
        ("admin", "accept", None),
        ("admin", "dispose", None),
        ("reviewer", "close", None),
    )
    act(
        client,
        ids["rejected"],
        ("reviewer", "register", None),
        ("reviewer", "reject", {"reason": "out_of_scope"}),
    )
    act(client, ids["merged"], ("reviewer", "merge", {"into": ids["open"]}))
    with app.state.session_factory() as s, s.begin():  # make one case older than the 90-day window
        from api.models import Case
        from detector.contracts.schemas import parse_datetime

        old = s.get(Case, ids["old"])
        assert old is not None
        old.first_seen = parse_datetime("2025-10-01T00:00:00+00:00")
        old.status = "registered"
    return ids


def listed(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{BASE}/requests.json", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def test_services_json_and_xml(client: TestClient) -> None:
    services = client.get(f"{BASE}/services.json").json()
    assert [s["service_code"] for s in services] == [
        "illegal_parking",
        "street_vending",
        "illegal_structure",
        "unclean_road",
    ]
    assert all(s["metadata"] is False and s["type"] == "realtime" for s in services)
    xml = client.get(f"{BASE}/services.xml")
    assert xml.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(xml.content)
    assert root.tag == "services" and [e.findtext("service_code") for e in root] == [
        s["service_code"] for s in services
    ]
    definition = client.get(f"{BASE}/services/unclean_road.json").json()
    assert definition == {"service_code": "unclean_road", "attributes": []}
    assert ET.fromstring(client.get(f"{BASE}/services/unclean_road.xml").content).findtext(
        "service_code"
    ) == ("unclean_road")


def test_status_mapping_and_hidden_candidates(client: TestClient, seeded: dict[str, int]) -> None:
    rows = {int(r["service_request_id"]): r for r in listed(client)}
    assert seeded["hidden"] not in rows and seeded["old"] not in rows  # a candidate; older than 90 days
    assert {rows[seeded[k]]["status"] for k in ("closed", "rejected", "merged")} == {"closed"}
    open_row = rows[seeded["open"]]
    assert open_row["status"] == "open" and open_row["agency_responsible"] == "红钢城街道城管执法中队"
    assert open_row["service_code"] == "illegal_parking" and open_row["long"] == 114.39
    assert open_row["expected_datetime"] == "2026-03-02T03:00:00+00:00"
    assert open_row["media_url"] is None  # the public never gets the evidence
    assert rows[seeded["merged"]]["status_notes"] == f"duplicate of request {seeded['open']}"
    assert rows[seeded["rejected"]]["status_notes"] == "not handled by this bureau"
    assert client.get(f"{BASE}/requests/{seeded['hidden']}.json").status_code == 404


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "open"}, ["open"]),
        ({"status": "closed"}, ["closed", "rejected", "merged"]),
        ({"status": "open,closed"}, ["open", "closed", "rejected", "merged"]),
        ({"service_code": "street_vending"}, []),
        ({"start_date": "2025-09-01T00:00:00Z"}, ["open", "closed", "rejected", "merged", "old"]),
        ({"start_date": "2025-09-01T00:00:00Z", "end_date": "2025-12-01T00:00:00Z"}, ["old"]),
        ({"page_size": 2, "page": 2}, ["open", "closed"]),  # newest first, then the highest id
    ],
)
def test_filters(
    client: TestClient, seeded: dict[str, int], params: dict[str, Any], expected: list[str]
) -> None:
    got = sorted(int(r["service_request_id"]) for r in listed(client, **params))
    assert got == sorted(seeded[k] for k in expected)


def test_id_list_overrides_other_filters(client: TestClient, seeded: dict[str, int]) -> None:
    ids = f"{seeded['old']},{seeded['open']},{seeded['hidden']}"
    got = {int(r["service_request_id"]) for r in listed(client, service_request_id=ids, status="closed")}
    assert got == {seeded["old"], seeded["open"]}


def test_extensions(client: TestClient, seeded: dict[str, int]) -> None:
    (row,) = client.get(f"{BASE}/requests/{seeded['closed']}.json", params={"extensions": "true"}).json()
    assert (
        row["extended_attributes"]["case_status"] == "closed"
        and row["extended_attributes"]["unit"] == "hgc-squad"
    )
    assert [n["type"] for n in row["notes"]] == [
        "register",
        "dispatch",
        "accept",
        "dispose",
        "verify",
        "close",
    ]
    assert "extended_attributes" not in client.get(f"{BASE}/requests/{seeded['closed']}.json").json()[0]
    xml = ET.fromstring(
        client.get(f"{BASE}/requests/{seeded['closed']}.xml", params={"extensions": "true"}).content
    )
    request = xml.find("request")
    assert request is not None and request.findtext("extended_attributes/case_status") == "closed"
    assert [n.findtext("type") for n in request.findall("notes/note")][-1] == "close"


def test_staff_get_the_media_url(client: TestClient, seeded: dict[str, int]) -> None:
    (row,) = client.get(f"{BASE}/requests/{seeded['open']}.json", headers=auth("reviewer")).json()
    assert row["media_url"] == f"http://testserver/cases/{seeded['open']}/evidence"


def test_filing_a_request(client: TestClient) -> None:
    form = {
        "api_key": key_of("public"),
        "service_code": "unclean_road",
        "lat": "30.65",
        "long": "114.40",
        "description": "a heap of rubbish",
        "first_name": "Li",
        "email": "li@example.org",
    }
    response = client.post(f"{BASE}/requests.json", data=form)
    assert response.status_code == 201, response.text
    (created,) = response.json()
    rid = created["service_request_id"]
    (row,) = client.get(f"{BASE}/requests/{rid}.json").json()  # a citizen's own report is visible at once
    assert (row["status"], row["description"], row["lat"]) == ("open", "a heap of rubbish", 30.65)
    case = client.get(f"/cases/{rid}", headers=auth("reviewer")).json()
    assert (case["source"], case["status"]) == ("citizen", "candidate")
    with_photo = client.post(
        f"{BASE}/requests.xml",
        data={**form, "lat": "31.0"},
        files={"media": ("p.jpg", sample_jpeg("o311"), "image/jpeg")},
    )
    assert with_photo.status_code == 201
    assert ET.fromstring(with_photo.content).findtext("request/service_request_id") is not None


@pytest.mark.parametrize(
    ("form", "code", "words"),
    [
        ({"service_code": "unclean_road", "lat": "30", "long": "114"}, 403, "api_key is required"),
        (
            {"api_key": "nope-nope-nope-nope", "service_code": "unclean_road", "lat": "30", "long": "114"},
            403,
            "not valid",
        ),
        (
            {"api_key": key_of("detector"), "service_code": "unclean_road", "lat": "30", "long": "114"},
            403,
            "may not file",
        ),
        ({"api_key": key_of("public"), "service_code": "noise", "lat": "30", "long": "114"}, 404, "noise"),
        ({"api_key": key_of("public"), "service_code": "unclean_road"}, 400, "location is required"),
        ({"api_key": key_of("public"), "service_code": "unclean_road", "lat": "30"}, 400, "together"),
        (
            {"api_key": key_of("public"), "service_code": "unclean_road", "lat": "300", "long": "1"},
            400,
            "lat",
        ),
        ({"api_key": key_of("public"), "lat": "30", "long": "114"}, 400, "service_code"),
    ],
)
def test_post_errors_are_open311_errors(
    client: TestClient, form: dict[str, str], code: int, words: str
) -> None:
    response = client.post(f"{BASE}/requests.json", data=form)
    assert response.status_code == code
    (err,) = response.json()
    assert err["code"] == code and words in err["description"]
    xml = client.post(f"{BASE}/requests.xml", data=form)
    assert xml.status_code == code and ET.fromstring(xml.content).findtext("error/code") == str(code)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/services/noise.json", 404),
        ("/requests/999.json", 404),
        ("/requests/abc.json", 404),
        ("/tokens/abc.json", 404),
        ("/requests.json?status=pending", 400),
        ("/requests.json?page_size=5000", 400),
        ("/requests.json?start_date=yesterday", 400),
        ("/requests.csv", 400),  # the format must be json or xml
    ],
)
def test_read_errors(client: TestClient, path: str, code: int) -> None:
    response = client.get(BASE + path)
    assert response.status_code == code
    if code == 400:
        assert response.json()[0]["code"] == 400


def test_a_field_unit_gets_the_media_url_of_its_own_cases_only(
    client: TestClient, seeded: dict[str, int]
) -> None:
    rows = {int(r["service_request_id"]): r for r in listed(client, status="open,closed")}
    assert rows  # the public view has no media at all
    assert all(r["media_url"] is None for r in rows.values())
    mine = client.get(f"{BASE}/requests.json", headers=auth("unit")).json()
    by_id = {int(r["service_request_id"]): r["media_url"] for r in mine}
    assert by_id[seeded["open"]] is not None  # dispatched to hgc-squad
    assert by_id[seeded["rejected"]] is None and by_id[seeded["merged"]] is None
