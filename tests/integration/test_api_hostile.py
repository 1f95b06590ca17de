"""Hostile requests against the case API with its real MQTT ingest (real Mosquitto; SQLite and
PostgreSQL), each with the answer it must get and the check that nothing was stored and nothing
lost (issue 12): oversized bodies refused from their headers, before one byte is read and
without a temp file; wrong types; credentials and roles checked before the body; one file per
form; quotas per key and per address while camera events still become cases; a disk at the
upload floor refusing uploads (507) while camera events still become cases.

Start-up refusals and a real socket against uvicorn: tests/integration/test_api_startup.py.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import starlette.formparsers
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.core.config import Settings
from api.ingest.sample import encode, sample_event, sample_jpeg
from api.models import Case
from tests.api_support import auth, key_of

pytestmark = pytest.mark.mqtt

MiB = 1024 * 1024
Wait = Callable[..., Any]
FORM = {"rule": "street_vending", "lon": "114.386", "description": "hostile", "grid": "红钢城-05"}
MULTIPART = "multipart/form-data; boundary=hostile"


class Body:
    """A request body of ``size`` bytes that counts how much of it was read."""

    def __init__(self, size: int, chunk: int = MiB) -> None:
        self.size, self.chunk, self.read = size, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        while sent < self.size:
            part = b"\x00" * min(self.chunk, self.size - sent)
            sent += len(part)
            self.read = sent
            yield part


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every temp file the multipart parser makes (it spools uploads there)."""
    made: list[Any] = []

    class Counting(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", Counting)
    return made


@dataclass(frozen=True)
class Stored:
    cases: int
    evidence: frozenset[str]


def stored(api: TestClient) -> Stored:
    app: Any = api.app
    with app.state.session_factory() as session:
        cases = int(session.scalar(select(func.count()).select_from(Case)) or 0)
    files = frozenset(p.name for p in app.state.evidence_store.root.rglob("*.jpg"))
    return Stored(cases, files)


def who(name: str | None) -> dict[str, str]:
    if name is None:
        return {}
    if name == "stranger":
        return {"X-API-Key": "not-a-key-of-this-api-0000"}
    return auth(name)


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str
    caller: str | None
    size: int
    content_type: str
    status: int
    words: str
    declared: bool = True  # a Content-Length; False: chunked


HOSTILE = [
    Hostile("50 MB report, no key", "/reports", None, 50 * MiB, MULTIPART, 413, "over the limit"),
    Hostile("50 MB report, public key", "/reports", "public", 50 * MiB, MULTIPART, 413, "over the limit"),
    Hostile("50 MB Open311 request", "/open311/v2/requests.json", None, 50 * MiB, MULTIPART, 413, "limit"),
    Hostile(
        "50 MB Open311 request (XML)", "/open311/v2/requests.xml", None, 50 * MiB, MULTIPART, 413, "limit"
    ),
    Hostile("50 MB dispose, no key", "/cases/1/dispose", None, 50 * MiB, MULTIPART, 413, "over the limit"),
    Hostile(
        "1 MiB token request", "/auth/token", None, MiB, "application/x-www-form-urlencoded", 413, "limit"
    ),
    Hostile("1 MiB case action", "/cases/1/register", "admin", MiB, "application/json", 413, "limit"),
    Hostile(
        "9 MiB re-check answer",
        "/recheck-results/cam-1",
        "detector",
        9 * MiB,
        "application/json",
        413,
        "limit",
    ),
    Hostile("report as text/plain", "/reports", "public", 1000, "text/plain", 415, "multipart/form-data"),
    Hostile("report as JSON", "/reports", "public", 1000, "application/json", 415, "multipart/form-data"),
    Hostile(
        "case action as multipart", "/cases/1/register", "admin", 1000, MULTIPART, 415, "application/json"
    ),
    Hostile("token request as JSON", "/auth/token", None, 100, "application/json", 415, "urlencoded"),
    Hostile("report, unknown key", "/reports", "stranger", 4 * MiB, MULTIPART, 401, "unknown API key"),
    Hostile("report, detector key", "/reports", "detector", 4 * MiB, MULTIPART, 403, "may not file reports"),
    Hostile("report, no key", "/reports", None, 4 * MiB, MULTIPART, 401, "credential"),
    Hostile("dispose, public key", "/cases/1/dispose", "public", 4 * MiB, MULTIPART, 403, "may not dispose"),
    Hostile(
        "Open311 request, unknown header key",
        "/open311/v2/requests.json",
        "stranger",
        MiB,
        MULTIPART,
        403,
        "unknown",
    ),
    Hostile(
        "re-check answer, public key",
        "/recheck-results/c",
        "public",
        1000,
        "application/json",
        403,
        "may not",
    ),
    Hostile("case action, no key", "/cases/1/register", None, 100, "application/json", 401, "credential"),
    Hostile("chunked 8 MiB report", "/reports", "public", 8 * MiB, MULTIPART, 413, "over the limit", False),
]


@pytest.mark.parametrize("row", HOSTILE, ids=[row.name for row in HOSTILE])
def test_hostile_requests_are_refused_and_store_nothing(
    api: TestClient, spooled: list[Any], row: Hostile
) -> None:
    before = stored(api)
    body = Body(row.size)
    headers = {**who(row.caller), "Content-Type": row.content_type}
    if row.declared:
        headers["Content-Length"] = str(row.size)
    response = api.post(row.path, content=iter(body), headers=headers)
    assert response.status_code == row.status, response.text
    assert row.words in response.text
    if row.path.startswith("/open311/"):  # Open311's own error format, JSON or XML
        if row.path.endswith(".xml"):
            assert ET.fromstring(response.content).findtext("error/code") == str(row.status)
        else:
            assert response.json()[0]["code"] == row.status
    if row.declared:
        assert body.read == 0, "the body was read before the answer"
        assert spooled == [], "an upload was spooled to a temp file"
    assert all(f.closed for f in spooled)
    assert stored(api) == before
    assert api.get("/health").json()["status"] == "ok"


def _report(api: TestClient, caller: str, photo: bytes, more_files: dict[str, Any] | None = None) -> Any:
    """A citizen report at a place of its own (no duplicate of another test's report)."""
    form = {**FORM, "lat": f"30.{uuid.uuid4().int % 10**6:06d}"}
    files = {"photo": ("p.jpg", photo, "image/jpeg"), **(more_files or {})}
    return api.post("/reports", headers=who(caller), data=form, files=files)


def test_one_file_per_form(api: TestClient, spooled: list[Any]) -> None:
    before = stored(api)
    two = _report(api, "public", sample_jpeg("one"), {"extra": ("b.jpg", sample_jpeg("two"), "image/jpeg")})
    assert two.status_code == 400 and "Too many files" in two.text
    token = api.post("/auth/token", data={"grant_type": "password"}, files={"f": ("f", b"x", "text/plain")})
    assert token.status_code == 400
    assert stored(api) == before and all(f.closed for f in spooled)


@pytest.mark.parametrize(
    ("media", "status", "words"),
    [
        (
            sample_jpeg("big") + b"\x00" * (5 * MiB),
            413,
            "limit is",
        ),  # within the body limit, over the photo's
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 415, "JPEG"),
    ],
)
def test_open311_photo_checks_answer_in_open311_format(
    api: TestClient, media: bytes, status: int, words: str
) -> None:
    before = stored(api)
    form = {"api_key": key_of("public"), "service_code": "unclean_road", "lat": "30.6", "long": "114.3"}
    answer = api.post("/open311/v2/requests.json", data=form, files={"media": ("m.jpg", media, "image/jpeg")})
    assert answer.status_code == status and answer.json()[0]["code"] == status
    assert words in answer.json()[0]["description"]
    assert stored(api) == before


def _walk_to_in_progress(api: TestClient) -> int:
    cid = int(_report(api, "public", sample_jpeg(uuid.uuid4().hex)).json()["id"])
    for caller, action in (("reviewer", "register"), ("dispatcher", "dispatch"), ("admin", "accept")):
        assert api.post(f"/cases/{cid}/{action}", headers=auth(caller)).status_code == 200, action
    return cid


def test_dispose_stores_the_photo_only_once_allowed(api: TestClient) -> None:
    cid = _walk_to_in_progress(api)
    unit = api.get(f"/cases/{cid}", headers=auth("admin")).json()["unit"]
    wrong = "other_unit" if unit == "hgc-squad" else "unit"
    photo = sample_jpeg("rectified")
    before = stored(api)
    refused = api.post(
        f"/cases/{cid}/dispose", headers=auth(wrong), files={"photo": ("a.jpg", photo, "image/jpeg")}
    )
    assert refused.status_code == 403 and "not held by unit" in refused.text
    assert stored(api) == before, "a refused dispose stored its photo"
    done = api.post(
        f"/cases/{cid}/dispose", headers=auth("admin"), files={"photo": ("a.jpg", photo, "image/jpeg")}
    )
    assert done.status_code == 200
    assert stored(api).evidence - before.evidence == {f"{hashlib.sha256(photo).hexdigest()}.jpg"}
    assert done.json()["events"][0]["evidence_sha256"] == hashlib.sha256(photo).hexdigest()


def camera_event_becomes_a_case(api: TestClient, settings: Settings, publisher: Any, wait_until: Wait) -> int:
    """Publish one violation event with its own JPEG through the broker; wait for its case."""
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    body = sample_event(stream=stream, jpeg=sample_jpeg(stream))
    publisher.publish(f"{settings.mqtt_topic_prefix}/violations/{stream}", encode(body))
    rows = wait_until(
        lambda: api.get("/cases", params={"stream": stream}).json()["data"], what="the camera event's case"
    )
    store = api.app.state.evidence_store  # type: ignore[attr-defined]
    assert store.exists(rows[0]["evidence_sha256"])
    return int(rows[0]["id"])


@pytest.mark.parametrize(
    ("quotas", "addresses", "accepted"),
    [
        ({}, 1, 20),  # the defaults: one address files 20 an hour
        ({"rate_reports_per_key": "50/min"}, 1000, 50),  # one key from 1,000 addresses
    ],
    ids=["one address", "many addresses"],
)
def test_a_thousand_reports_from_one_key_in_a_minute(
    runner: Any,
    api_settings: Settings,
    publisher: Any,
    wait_until: Wait,
    quotas: dict[str, str],
    addresses: int,
    accepted: int,
) -> None:
    settings = api_settings.model_copy(update=quotas)
    api = runner.start(settings)
    frozen = {"now": 5000.0}
    api.app.state.limiter.clock = lambda: frozen["now"]  # the thousand arrive within the same instant
    before = stored(api)
    statuses, waits = [], []
    for i in range(1000):
        client = (
            api if addresses == 1 else TestClient(api.app, client=(f"198.18.{i // 250}.{i % 250}", 40000))
        )
        response = _report(client, "public", sample_jpeg(f"flood-{i}"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            waits.append(int(response.headers["Retry-After"]))
    assert statuses == [201] * accepted + [429] * (1000 - accepted)
    assert min(waits) >= 1
    after = stored(api)
    assert after.cases - before.cases == accepted and len(after.evidence - before.evidence) == accepted
    camera_event_becomes_a_case(api, settings, publisher, wait_until)  # ingest is not limited
    frozen["now"] += max(waits)  # after Retry-After the key files again: nothing lost for good
    client = api if addresses == 1 else TestClient(api.app, client=("198.18.200.1", 40000))
    assert _report(client, "public", sample_jpeg("after the wait")).status_code == 201


def test_quotas_of_a_key_in_an_open311_form_and_of_token_requests(
    runner: Any, api_settings: Settings
) -> None:
    settings = api_settings.model_copy(
        update={"rate_reports_per_key": "3/min", "rate_reports_per_address": "off"}
    )
    api = runner.start(settings)
    api.app.state.limiter.clock = lambda: 10.0
    form = {"api_key": key_of("public"), "service_code": "unclean_road", "lat": "30.6", "long": "114.3"}
    answers = [api.post("/open311/v2/requests.xml", data=form) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert ET.fromstring(answers[-1].content).findtext("error/code") == "429"
    assert int(answers[-1].headers["Retry-After"]) >= 1
    token_form = {"grant_type": "client_credentials", "client_secret": "guessing-a-key-0000"}
    codes = [api.post("/auth/token", data=token_form).status_code for _ in range(121)]
    assert codes == [401] * 120 + [429]  # 120 an hour per address, wrong guesses included


def test_a_disk_at_the_upload_floor(
    api: TestClient, api_settings: Settings, publisher: Any, wait_until: Wait, spooled: list[Any]
) -> None:
    cid = _walk_to_in_progress(api)
    store = api.app.state.evidence_store  # type: ignore[attr-defined]
    free = {"bytes": api_settings.evidence_upload_floor_bytes}  # filled to the upload floor
    store.free_space = lambda _root: free["bytes"]
    before = stored(api)
    small = _report(api, "public", sample_jpeg("full"))
    assert small.status_code == 507 and "floor" in small.text
    big = sample_jpeg("big") + b"\x00" * MiB  # over the form overhead: refused from its headers
    spooled_before = len(spooled)
    assert _report(api, "public", big).status_code == 507 and len(spooled) == spooled_before
    media = {"media": ("m.jpg", sample_jpeg("o311"), "image/jpeg")}
    o311 = {"api_key": key_of("public"), "service_code": "unclean_road", "lat": "30.6", "long": "114.3"}
    refused = api.post("/open311/v2/requests.json", data=o311, files=media)
    assert refused.status_code == 507 and refused.json()[0]["code"] == 507
    photo = {"photo": ("a.jpg", sample_jpeg("after"), "image/jpeg")}
    assert api.post(f"/cases/{cid}/dispose", headers=auth("admin"), files=photo).status_code == 507
    assert api.get(f"/cases/{cid}", headers=auth("admin")).json()["status"] == "in_progress"
    assert stored(api) == before, "an upload got past the floor"
    camera_event_becomes_a_case(api, api_settings, publisher, wait_until)  # camera evidence goes in
    text_only = api.post("/open311/v2/requests.json", data=o311)  # no photo: nothing for the disk
    assert text_only.status_code == 201

    free["bytes"] = api_settings.evidence_ingest_floor_bytes  # now at the camera's floor too
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    body = sample_event(stream=stream, jpeg=sample_jpeg(stream))
    publisher.publish(f"{api_settings.mqtt_topic_prefix}/violations/{stream}", encode(body))
    ingest = api.app.state.ingest  # type: ignore[attr-defined]
    wait_until(lambda: "floor" in (ingest.stats()["last_error"] or ""), 60, "the ingest to wait at the floor")
    assert api.get("/cases", params={"stream": stream}).json()["count"] == 0
    free["bytes"] = 10 * api_settings.evidence_upload_floor_bytes  # space again: the event was kept
    rows = wait_until(
        lambda: api.get("/cases", params={"stream": stream}).json()["data"], 60, "the held event"
    )
    assert store.exists(rows[0]["evidence_sha256"])
    assert _report(api, "public", sample_jpeg("space again")).status_code == 201
