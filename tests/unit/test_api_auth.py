"""Credentials and roles: API keys from settings, env JSON and a YAML file; OAuth2 bearer tokens;
dev mode; who reads what (a field unit only its own cases, evidence included)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.core.config import Settings
from api.errors import ConfigError
from api.ingest.sample import encode, sample_event
from api.ingest.service import ingest_event
from api.main import create_app
from api.services.auth import DEV_KEYS, Authenticator, Principal, Role
from tests.api_support import auth, key_of, make_settings

PREFIX = "citywatch/v1"


def camera_case(app: FastAPI, stream: str, grid: str) -> int:
    body = sample_event(
        stream=stream, location={"lat": 30.6, "lon": 114.3 + len(stream) * 0.01, "grid": grid}
    )
    with app.state.session_factory() as s:
        result = ingest_event(s, f"{PREFIX}/violations/{stream}", encode(body), app.state.evidence_store)
    assert result.case_id is not None
    return result.case_id


def dispatched(client: TestClient, app: FastAPI, stream: str, grid: str) -> int:
    cid = camera_case(app, stream, grid)
    for who, action in (("reviewer", "register"), ("dispatcher", "dispatch")):
        assert client.post(f"/cases/{cid}/{action}", headers=auth(who)).status_code == 200
    return cid


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong-key-000000000000"}, 401),
        ({"Authorization": "Bearer not.a.token"}, 401),
        (auth("public"), 403),
        (auth("detector"), 403),
        (auth("reviewer"), 200),
        (auth("dispatcher"), 200),
        (auth("unit"), 200),
        (auth("admin"), 200),
    ],
)
def test_reading_cases_needs_a_staff_credential(
    client: TestClient, headers: dict[str, str], code: int
) -> None:
    assert client.get("/cases", headers=headers).status_code == code


def test_a_field_unit_sees_and_acts_on_its_own_cases_only(client: TestClient, app: FastAPI) -> None:
    mine = dispatched(client, app, "cam-1", "红钢城-01")  # hgc-squad
    theirs = dispatched(client, app, "cam-22", "G-09")  # xcq-squad
    undispatched = camera_case(app, "cam-333", "红钢城-01")
    listed = client.get("/cases", headers=auth("unit")).json()
    assert [c["id"] for c in listed["data"]] == [mine] and listed["count"] == 1
    assert client.get("/cases", params={"unit": "xcq-squad"}, headers=auth("unit")).json()["count"] == 0
    assert client.get(f"/cases/{mine}", headers=auth("unit")).status_code == 200
    for path in (
        f"/cases/{theirs}",
        f"/cases/{theirs}/evidence",
        f"/cases/{theirs}/events",
        f"/cases/{undispatched}/evidence",
    ):
        assert client.get(path, headers=auth("unit")).status_code == 403, path
    assert client.get(f"/cases/{theirs}/evidence", headers=auth("other_unit")).status_code == 200
    assert client.post(f"/cases/{theirs}/accept", headers=auth("unit")).status_code == 403
    assert client.post(f"/cases/{mine}/accept", headers=auth("unit")).status_code == 200
    assert client.get("/cases", headers=auth("reviewer")).json()["count"] == 3


def test_token_flow(client: TestClient) -> None:
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "t-dispatcher",
            "client_secret": key_of("dispatcher"),
        },
    )
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 3600
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.json() == {"name": "t-dispatcher", "role": "dispatcher", "unit": None, "via": "token"}
    pw = client.post(
        "/auth/token", data={"grant_type": "password", "username": "t-unit-hgc", "password": key_of("unit")}
    ).json()["access_token"]
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {pw}"}).json()["unit"] == "hgc-squad"
    tampered = token["access_token"][:-2] + ("AA" if not token["access_token"].endswith("AA") else "BB")
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


@pytest.mark.parametrize(
    ("form", "code", "error"),
    [
        ({"grant_type": "client_credentials", "client_secret": "nope-nope-nope-nope"}, 401, "invalid_client"),
        (
            {"grant_type": "client_credentials", "client_id": "t-admin", "client_secret": key_of("public")},
            401,
            "invalid_client",
        ),
        ({"grant_type": "authorization_code", "code": "x"}, 400, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "t-admin"}, 400, "invalid_request"),
    ],
)
def test_token_refusals(client: TestClient, form: dict[str, str], code: int, error: str) -> None:
    response = client.post("/auth/token", data=form)
    assert response.status_code == code and response.json()["error"] == error


def test_tokens_expire_and_die_with_their_key(tmp_path: Path) -> None:
    settings = make_settings("sqlite://", tmp_path)
    authn = Authenticator.from_settings(settings)
    principal = authn.principal_for_key(key_of("reviewer"))
    assert principal is not None
    token, ttl = authn.issue_token(principal, now=1_000_000)
    assert authn.principal_for_token(token, now=1_000_000 + ttl - 1) is not None
    assert authn.principal_for_token(token, now=1_000_000 + ttl) is None
    fewer = settings.model_copy(
        update={"api_keys": [k for k in settings.api_keys or [] if k["role"] != "reviewer"]}
    )
    assert Authenticator.from_settings(fewer).principal_for_token(token, now=1_000_000) is None
    other_secret = settings.model_copy(update={"token_secret": SecretStr("another-secret")})
    assert Authenticator.from_settings(other_secret).principal_for_token(token, now=1_000_000) is None


def test_keys_from_the_environment_and_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYWATCH_API_KEYS", json.dumps([{"name": "ops", "role": "admin", "key": "k" * 20}]))
    assert Authenticator.from_settings(Settings()).principal_for_key("k" * 20) == Principal("ops", Role.admin)
    monkeypatch.delenv("CITYWATCH_API_KEYS")
    key_file = tmp_path / "keys.yaml"
    digest = hashlib.sha256(b"a-secret-only-the-unit-has").hexdigest()
    key_file.write_text(
        f"api_keys:\n  - {{name: squad, role: field_unit, unit: hgc-squad, key_sha256: {digest}}}\n"
    )
    monkeypatch.setenv("CITYWATCH_API_KEYS_FILE", str(key_file))
    authn = Authenticator.from_settings(Settings())
    assert authn.principal_for_key("a-secret-only-the-unit-has") == Principal(
        "squad", Role.field_unit, "hgc-squad"
    )
    assert not authn.dev_mode and not authn.anonymous_read


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([{"name": "u", "role": "field_unit", "key": "k" * 20}], "needs its unit"),
        ([{"name": "u", "role": "admin", "unit": "x", "key": "k" * 20}], "only field_unit"),
        ([{"name": "u", "role": "admin"}], "exactly one of key and key_sha256"),
        ([{"name": "u", "role": "root", "key": "k" * 20}], "role"),
        ([{"name": "u", "role": "system", "key": "k" * 20}], "the API's own"),
        ([{"name": "u", "role": "admin", "key": "short"}], "at least 16"),
        (
            [
                {"name": "u", "role": "admin", "key": "k" * 20},
                {"name": "u", "role": "public", "key": "j" * 20},
            ],
            "unique",
        ),
    ],
)
def test_bad_key_configuration_stops_the_start(
    tmp_path: Path, entries: list[dict[str, Any]], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        Authenticator.from_settings(make_settings("sqlite://", tmp_path, api_keys=entries))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"api_keys": None}, "CITYWATCH_API_KEYS"),  # nothing configured: fail closed
        ({"api_keys": None}, "CITYWATCH_DEV_MODE=true"),
        ({"api_keys": []}, "lists no key"),
        ({"dev_mode": True}, "unset CITYWATCH_DEV_MODE"),  # keys and dev mode: which one is meant?
    ],
)
def test_the_api_does_not_start_without_keys_or_with_both(
    tmp_path: Path, overrides: dict[str, Any], words: str
) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'k.db'}", tmp_path, **overrides)
    with pytest.raises(ConfigError, match=re.escape(words)):
        Authenticator.from_settings(settings)
    with pytest.raises(ConfigError, match=re.escape(words)), TestClient(create_app(settings)):
        pass  # the lifespan refuses too (an app built without python -m api)


LOOPBACK = ("127.0.0.1", 50000)


def test_dev_mode_uses_the_documented_keys_for_loopback_clients_only(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'dev.db'}", tmp_path, api_keys=None, dev_mode=True)
    app = create_app(settings)
    with TestClient(app, client=LOOPBACK) as client:
        assert client.get("/cases").status_code == 401  # anonymous reads are off in dev mode too
        assert client.post("/cases/1/register").status_code == 401
        admin = next(k for k in DEV_KEYS if k.role is Role.admin)
        assert admin.key == "citywatch-dev-admin-key"
        me = client.get("/auth/me", headers={"X-API-Key": "citywatch-dev-admin-key"}).json()
        assert me["role"] == "admin"
        for host in ("203.0.113.7", "2001:db8::1", "10.1.2.3"):
            remote = TestClient(app, client=(host, 50000))  # the lifespan already runs
            refused = remote.get("/auth/me", headers={"X-API-Key": "citywatch-dev-admin-key"})
            assert refused.status_code == 403 and "loopback" in refused.json()["detail"], host
        ipv6 = TestClient(app, client=("::1", 50000))
        assert ipv6.get("/auth/me", headers={"X-API-Key": "citywatch-dev-admin-key"}).status_code == 200


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({}, 401),  # keys configured: anonymous reads off by default
        ({"anonymous_read": True}, 200),
        ({"api_keys": None, "dev_mode": True}, 401),  # dev mode: off by default as well
        ({"api_keys": None, "dev_mode": True, "anonymous_read": True}, 200),
    ],
)
def test_anonymous_reads_only_when_asked_for(tmp_path: Path, overrides: dict[str, Any], code: int) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'anon.db'}", tmp_path, **overrides)
    with TestClient(create_app(settings), client=LOOPBACK) as client:
        assert client.get("/cases").status_code == code
        assert client.post("/reports").status_code == 401  # writes always need a credential


def test_the_docs_offer_both_credentials(client: TestClient) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/auth/token"
