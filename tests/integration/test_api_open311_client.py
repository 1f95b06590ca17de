"""Third-party Open311 clients from PyPI against a live API (uvicorn on a free port):
``civicbot`` lists services and requests and files a request; ``georeport`` reads JSON and XML."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.api_support import TEST_KEYS, key_of
from tests.live_api import live_api as start_api

civicbot = pytest.importorskip("civicbot", reason="pip install civicbot (dev extra)")
georeport = pytest.importorskip("georeport", reason="pip install georeport (dev extra)")


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"CITYWATCH_INGEST_ENABLED": "false", "CITYWATCH_API_KEYS": json.dumps(list(TEST_KEYS.values()))}
    with start_api(tmp_path_factory.mktemp("open311"), env) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> object:
    endpoint = civicbot.Endpoint(
        id="citywatch-test", name="citywatch", base_url=f"{api_url}/open311/v2", write=True
    )
    transport = civicbot.HttpTransport(rate_limiter=civicbot.http.RateLimiter(min_interval=0.0))
    return civicbot.Open311Client(endpoint, transport=transport)


def test_civicbot_lists_services_and_files_and_lists_requests(client: object, api_url: str) -> None:
    services = client.list_services()  # type: ignore[attr-defined]
    codes = [s["service_code"] for s in services]
    assert codes == ["illegal_parking", "street_vending", "illegal_structure", "unclean_road"]
    prepared = client.create_request(  # type: ignore[attr-defined]
        "unclean_road",
        dry_run=False,
        confirm="SEND",
        api_key=key_of("public"),
        validate_remote=True,
        lat=30.6412,
        lng=114.3861,
        address_string="建设二路 56 号",
        description="暴露垃圾 beside the bus stop",
        email="citizen@example.org",
    )
    (created,) = prepared.response
    rid = created["service_request_id"]
    requests = client.list_requests(status="open")  # type: ignore[attr-defined]
    assert rid in [r["service_request_id"] for r in requests]
    one = client.get_request(rid)  # type: ignore[attr-defined]
    assert (one["service_code"], one["status"], one["address"]) == ("unclean_road", "open", "建设二路 56 号")
    case = httpx.get(f"{api_url}/cases/{rid}", headers={"X-API-Key": key_of("reviewer")}).json()
    assert (case["source"], case["status"], case["description"]) == (
        "citizen",
        "candidate",
        "暴露垃圾 beside the bus stop",
    )


def test_civicbot_sees_the_refusal_of_a_bad_key(client: object) -> None:
    with pytest.raises(civicbot.HttpError) as err:
        client.create_request(
            "unclean_road",
            dry_run=False,
            confirm="SEND",
            api_key="wrong-key-wrong-key",  # type: ignore[attr-defined]
            lat=30.6,
            lng=114.3,
        )
    assert err.value.status == 403 and json.loads(err.value.body)[0]["code"] == 403


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_georeport_reads_json_and_xml(api_url: str, client: object, fmt: str) -> None:
    client.create_request(
        "illegal_parking",
        dry_run=False,
        confirm="SEND",
        api_key=key_of("public"),  # type: ignore[attr-defined]
        lat=30.61,
        lng=114.39,
        description=f"car on the pavement ({fmt})",
    )
    reader = georeport.GeoReport(f"{api_url}/open311/v2", output_format=fmt)
    services = reader.get_service_list()
    assert {s["service_code"] for s in services} >= {"illegal_parking", "unclean_road"}
    requests = reader.get_service_requests(service_code="illegal_parking", status="open")
    requests = requests if isinstance(requests, list) else [requests]
    assert any(r["description"] == f"car on the pavement ({fmt})" for r in requests)
    one = reader.get_service_request(requests[0]["service_request_id"])
    assert one["service_code"] == "illegal_parking"
