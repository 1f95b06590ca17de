"""Citizen reports (随手拍 / 12319): a photo, a place, a description; limits; the same lifecycle."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.ingest.sample import sample_jpeg
from tests.api_support import auth

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
FORM = {
    "rule": "street_vending",
    "lat": "30.641",
    "lon": "114.386",
    "description": "游商 at the school gate",
    "grid": "红钢城-05",
    "address": "建设二路 56 号",
    "reporter": "138-0000-0000",
}


@pytest.fixture
def api_settings_overrides() -> dict[str, Any]:
    return {"report_max_photo_bytes": 4096}


def post(client: TestClient, who: str | None = "public", photo: bytes = sample_jpeg("r"), **form: str) -> Any:
    headers = auth(who) if who else {}
    return client.post(
        "/reports",
        headers=headers,
        data={**FORM, **form},
        files={"photo": ("photo.jpg", photo, "image/jpeg")},
    )


def test_a_report_becomes_a_candidate_case_with_its_photo(client: TestClient) -> None:
    photo = sample_jpeg("school-gate")
    response = post(client, photo=photo, description="<b>游商</b> at the <script>x</script>gate")
    assert response.status_code == 201, response.text
    case = response.json()
    assert (case["status"], case["source"], case["rule"], case["label"]) == (
        "candidate",
        "citizen",
        "street_vending",
        "vendor",
    )
    assert case["stream"] is None and case["bbox"] is None and case["model_name"] is None
    assert case["description"] == "游商 at the xgate"
    assert (case["grid"], case["street"], case["lat"]) == ("红钢城-05", "hgc", 30.641)
    assert "reporter" not in case  # contact details are not in the public shape
    assert client.get(case["evidence_url"], headers=auth("reviewer")).content == photo
    events = client.get(f"/cases/{case['id']}/events", headers=auth("reviewer")).json()["data"]
    assert [(e["kind"], e["actor"], e["to_status"]) for e in events] == [
        ("reported", "public:t-public", "candidate")
    ]
    listed = client.get("/cases", params={"source": "citizen"}, headers=auth("reviewer")).json()
    assert listed["count"] == 1


def test_hotline_operators_file_reports_too(client: TestClient) -> None:
    response = post(client, who="reviewer", source="hotline")
    assert response.status_code == 201 and response.json()["source"] == "hotline"


@pytest.mark.parametrize(
    ("who", "photo", "form", "code", "words"),
    [
        (None, sample_jpeg(), {}, 401, "credential"),
        ("detector", sample_jpeg(), {}, 403, "may not file reports"),
        ("unit", sample_jpeg(), {}, 403, "may not file reports"),
        ("public", sample_jpeg() + b"\x00" * 5000, {}, 413, "limit is 4096 bytes"),
        ("public", PNG, {}, 415, "must be a JPEG"),
        ("public", b"", {}, 415, "must be a JPEG"),
        ("public", sample_jpeg(), {"lat": "91"}, 422, "lat"),
        ("public", sample_jpeg(), {"rule": "noise"}, 422, "rule"),
        ("public", sample_jpeg(), {"description": ""}, 422, "description"),
        ("public", sample_jpeg(), {"description": "x" * 4001}, 422, "description"),
        ("public", sample_jpeg(), {"source": "camera"}, 422, "source"),
    ],
)
def test_refusals(
    client: TestClient, who: str | None, photo: bytes, form: dict[str, str], code: int, words: str
) -> None:
    response = post(client, who=who, photo=photo, **form)
    assert response.status_code == code, response.text
    assert words in response.text
    assert client.get("/cases", headers=auth("admin")).json()["count"] == 0


def test_a_report_without_a_photo_is_422_and_a_form_without_files_415(client: TestClient) -> None:
    other = {"note": ("note.txt", b"no photo here", "text/plain")}
    no_photo = client.post("/reports", headers=auth("public"), data=FORM, files=other)
    assert no_photo.status_code == 422 and "photo" in no_photo.text
    urlencoded = client.post("/reports", headers=auth("public"), data=FORM)  # cannot carry a photo
    assert urlencoded.status_code == 415 and "multipart/form-data" in urlencoded.text


def test_the_field_unit_rectifies_with_a_photo_limit_too(client: TestClient) -> None:
    cid = post(client).json()["id"]
    for who, action in (("reviewer", "register"), ("dispatcher", "dispatch")):
        assert client.post(f"/cases/{cid}/{action}", headers=auth(who)).status_code == 200
    assert client.post(f"/cases/{cid}/accept", headers=auth("unit")).status_code == 200
    too_big = client.post(
        f"/cases/{cid}/dispose",
        headers=auth("unit"),
        files={"photo": ("a.jpg", sample_jpeg() + b"\x00" * 5000, "image/jpeg")},
    )
    assert too_big.status_code == 413
    png = client.post(
        f"/cases/{cid}/dispose", headers=auth("unit"), files={"photo": ("a.png", PNG, "image/png")}
    )
    assert png.status_code == 415
    assert client.get(f"/cases/{cid}", headers=auth("unit")).json()["status"] == "in_progress"
