"""GET /streams, GET /streams/{id}/snapshot, PUT /streams/{id}/zones (api/routes/streams.py) on the real
app, with stream states and snapshots handed to its StreamBoard as the MQTT ingest hands them over."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ruamel.yaml import YAML

from api.ingest.streams import StreamBoard
from detector.config import ConfigError, load_config, load_config_text
from tests.api_support import auth

STREAMS_YAML = """\
# The test deployment's streams (comments must survive an edit).
version: 1
worker_id: det-t

streams:
  - id: cam-1
    name: 和平大道 东侧   # the name the console shows
    url: a.mp4
    rules:
      illegal_parking: {dwell_s: 60}
    zones:
      # the kerb in front of the bus stop
      - id: kerb
        name: 公交站前
        polygon: [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]]   # drawn on the 2026-03 snapshot
        rules: [illegal_parking]
      - id: pavement
        polygon: [[0.6, 0.2], [0.95, 0.2], [0.95, 0.45]]
        rules: [street_vending]
        params:
          street_vending: {dwell_s: 120}

  # a second camera, no zones yet
  - id: cam-2
    url: b.mp4
    enabled: false
"""
NEW_ZONES = [
    {"id": "kerb", "name": "公交站前", "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]],
     "rules": ["illegal_parking"]},
    {"id": "road", "polygon": [[0, 0.6], [1, 0.6], [1, 1], [0, 1]],
     "rules": ["unclean_road", "illegal_parking"],
     "params": {"illegal_parking": {"dwell_s": 90, "min_score": 0.5}}},
]  # fmt: skip


def state(stream: str, name: str = "live", **extra: Any) -> bytes:
    payload = {
        "stream": stream, "state": name, "since": 1_772_000_000.0, "connected": name == "live",
        "last_frame_ts": 1_772_000_100.0, "last_sample_at": 1_772_000_100.5, "last_error": None,
        "reason": None, "samples": 50, "reconnects": 0, "sample_fps": 0.5, "sample_interval_s": 2.0,
        "url": "rtsp://admin:***@192.0.2.1/x", "lag_s": 0.25, **extra,
    }  # fmt: skip
    return json.dumps(payload).encode()


def jpeg(width: int = 64, height: int = 36) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 127, np.uint8))
    assert ok
    return bytes(buf.tobytes())


@pytest.fixture
def streams_file(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "streams.yaml"
    path.parent.mkdir()
    path.write_text(STREAMS_YAML, encoding="utf-8")
    return path


@pytest.fixture
def api_settings_overrides(streams_file: Path) -> dict[str, Any]:
    return {"streams_file": streams_file}


@pytest.fixture
def board(app: FastAPI, client: TestClient) -> StreamBoard:
    b: StreamBoard = app.state.streams
    return b


def test_streams_lists_the_file_then_the_reported_ones(client: TestClient, board: StreamBoard) -> None:
    board.put_state("cam-1", state("cam-1", "stalled", reason="lost", last_error="connection reset"))
    board.put_state("cam-9", state("cam-9"))
    board.put_snapshot("cam-1", jpeg())
    answer = client.get("/streams", headers=auth("reviewer"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["count"], body["zones_editable"], body["zones_read_only_reason"]) == (3, True, None)
    cam1, cam2, cam9 = body["data"]
    assert (cam1["id"], cam1["name"], cam1["in_file"], cam1["enabled"]) == (
        "cam-1",
        "和平大道 东侧",
        True,
        True,
    )
    assert [z["id"] for z in cam1["zones"]] == ["kerb", "pavement"]
    assert cam1["zones"][1]["params"] == {"street_vending": {"dwell_s": 120}}
    st = cam1["state"]
    assert (st["state"], st["reason"], st["last_error"], st["sample_fps"], st["lag_s"]) == (
        "stalled", "lost", "connection reset", 0.5, 0.25,
    )  # fmt: skip
    assert st["last_seen"].startswith("2026-02-25T") and cam1["snapshot_at"] is not None
    assert (cam2["id"], cam2["enabled"], cam2["state"], cam2["zones"], cam2["snapshot_at"]) == (
        "cam-2", False, None, [], None,
    )  # fmt: skip
    assert (cam9["id"], cam9["in_file"], cam9["zones"], cam9["state"]["state"]) == (
        "cam-9",
        False,
        None,
        "live",
    )


@pytest.mark.parametrize(
    ("who", "status"),
    [("admin", 200), ("reviewer", 200), ("dispatcher", 200), ("unit", 200), ("detector", 403),
     ("public", 403), (None, 401)],
)  # fmt: skip
def test_who_may_read_the_streams(
    client: TestClient, board: StreamBoard, who: str | None, status: int
) -> None:
    board.put_snapshot("cam-1", jpeg())
    headers = auth(who) if who else {}
    assert client.get("/streams", headers=headers).status_code == status
    assert client.get("/streams/cam-1/snapshot", headers=headers).status_code == status


def test_snapshot(client: TestClient, board: StreamBoard) -> None:
    headers = auth("dispatcher")
    assert client.get("/streams/cam-1/snapshot", headers=headers).status_code == 404
    image = jpeg(640, 360)
    assert board.put_snapshot("cam-1", image)
    answer = client.get("/streams/cam-1/snapshot", headers=headers)
    assert answer.status_code == 200
    assert (answer.headers["content-type"], answer.content) == ("image/jpeg", image)
    again = client.get(
        "/streams/cam-1/snapshot", headers={**headers, "If-None-Match": answer.headers["etag"]}
    )
    assert again.status_code == 304
    assert not board.put_snapshot("cam-1", b"<html>not a jpeg</html>")  # ignored: the old one stays
    assert client.get("/streams/cam-1/snapshot", headers=headers).content == image
    board.put_snapshot("cam-1", b"")  # the retained message was cleared
    assert client.get("/streams/cam-1/snapshot", headers=headers).status_code == 404
    assert client.get("/streams/bad%20id/snapshot", headers=headers).status_code == 422


def test_snapshots_are_bounded() -> None:
    small = jpeg(16, 16)
    board = StreamBoard(on_change=None, max_snapshot_bytes=5000, max_total_bytes=2 * len(small) + 10)
    assert not board.put_snapshot("big", jpeg(640, 480) + bytes(5000))
    for name in ("a", "b", "c"):
        assert board.put_snapshot(name, small)
    kept = set(board.snapshot_times())
    assert "a" not in kept and "c" in kept  # the oldest went first
    assert board.snapshot("big") is None


def test_a_state_change_is_handed_to_live_once() -> None:
    seen: list[dict[str, Any]] = []
    board = StreamBoard(on_change=lambda s: seen.append(dict(s)))
    assert board.put_state("cam-1", state("cam-1"))
    assert not board.put_state("cam-1", state("cam-1", samples=51))  # the same to the console
    assert board.put_state("cam-1", state("cam-1", "failed", reason="unauthorized"))
    assert not board.put_state("cam-1", b'{"stream": "cam-1", "state": "exploded"}')  # breaks the contract
    assert not board.put_state("cam-1", state("cam-2"))  # another stream's state on this topic
    assert [(s["id"], s["state"], s["reason"]) for s in seen] == [
        ("cam-1", "live", None), ("cam-1", "failed", "unauthorized"),
    ]  # fmt: skip
    assert seen[0]["sample_fps"] == 0.5 and seen[0]["lag_s"] == 0.25
    assert board.on_message("citywatch/v1/streams/cam-1/state", b"", "citywatch/v1")
    assert board.states() == {}
    board.put_state("cam-2", state("cam-2"))
    board.put_snapshot("cam-2", jpeg())
    assert board.put_state("cam-2", state("cam-2", "removed"))  # taken out of the detector's config
    assert board.states() == {} and board.snapshot("cam-2") is None
    assert seen[-1]["state"] == "removed"
    assert not board.on_message("citywatch/v1/violations/cam-1", b"{}", "citywatch/v1")


# -- PUT /streams/{id}/zones ------------------------------------------------------------------


def load(path: Path) -> Any:
    return YAML(typ="rt").load(path.read_text(encoding="utf-8"))


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line]


def test_saving_zones_rewrites_only_them(client: TestClient, streams_file: Path) -> None:
    answer = client.put("/streams/cam-1/zones", json=NEW_ZONES, headers=auth("admin"))
    assert answer.status_code == 200, answer.text
    assert [z["id"] for z in answer.json()["zones"]] == ["kerb", "road"]
    text = streams_file.read_text(encoding="utf-8")
    before, after = load_from_text(STREAMS_YAML), load(streams_file)
    assert json.loads(json.dumps(after["streams"][0]["zones"])) == NEW_ZONES
    before["streams"][0]["zones"] = after["streams"][0]["zones"]
    assert after == before  # nothing else changed
    kept = set(comments(text))
    lost = [c for c in comments(STREAMS_YAML) if c not in kept]
    assert lost == [], "comments outside the replaced zone (pavement) were kept"
    # the unchanged zone kept its inline comment; the new one is written as streams.yaml writes zones
    assert "[[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]]   # drawn on the 2026-03 snapshot" in text
    assert "        rules: [unclean_road, illegal_parking]\n" in text
    assert "          illegal_parking: {dwell_s: 90, min_score: 0.5}\n" in text
    assert (
        load_config(streams_file).config.stream("cam-1").zone("road").effective_rules.illegal_parking.dwell_s
        == 90
    )
    assert not list(streams_file.parent.glob(".*.tmp"))  # the temporary file was renamed over it
    listed = client.get("/streams", headers=auth("admin")).json()["data"][0]
    assert [z["id"] for z in listed["zones"]] == ["kerb", "road"]


def load_from_text(text: str) -> Any:
    return YAML(typ="rt").load(text)


def candidate(zones: Any) -> str:
    """streams.yaml with cam-1's zones replaced, as `config check` would be given it."""
    yaml, data, out = YAML(typ="rt"), load_from_text(STREAMS_YAML), io.StringIO()
    data["streams"][0]["zones"] = zones
    yaml.dump(data, out)
    return out.getvalue()


INVALID = [
    [{**NEW_ZONES[0], "polygon": [[0.1, 0.5], [0.9, 0.95], [0.9, 0.5], [0.1, 0.95]]}],
    [{**NEW_ZONES[0], "rules": ["ilegal_parking"]}, {**NEW_ZONES[1], "polygon": [[0, 0], [1, 0]]}],
    [NEW_ZONES[0], NEW_ZONES[0]],
    [{**NEW_ZONES[1], "params": {"illegal_parking": {"dwell_s": -5, "colour": "red"}}}],
    [{"id": "x", "polygon": [[0, 0], [640, 0], [640, 480]], "rules": ["unclean_road"], "zone": 1}],
    {"kerb": NEW_ZONES[0]},
]


@pytest.mark.parametrize(
    "zones", INVALID, ids=["crossing", "two zones", "same id", "params", "pixels", "dict"]
)
def test_invalid_zones_get_config_checks_words(client: TestClient, streams_file: Path, zones: Any) -> None:
    answer = client.put("/streams/cam-1/zones", json=zones, headers=auth("admin"))
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    with pytest.raises(ConfigError) as caught:
        load_config_text(candidate(zones), environ={})
    expected = sorted((i.path, i.message, i.hint) for i in caught.value.issues)
    assert sorted((d["path"], d["msg"], d["hint"]) for d in detail) == expected
    assert all(d["loc"][0] == "body" and d["type"] == "value_error" for d in detail)
    assert streams_file.read_text(encoding="utf-8") == STREAMS_YAML  # untouched


@pytest.mark.parametrize("who", ["reviewer", "dispatcher", "unit", "detector", "public"])
def test_only_admins_save_zones(client: TestClient, streams_file: Path, who: str) -> None:
    answer = client.put("/streams/cam-1/zones", json=NEW_ZONES, headers=auth(who))
    assert answer.status_code == 403
    assert streams_file.read_text(encoding="utf-8") == STREAMS_YAML


def test_a_dry_run_judges_without_writing(
    client: TestClient, streams_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("api.services.streams_file.os.access", lambda _p, _mode: False)  # read-only
    url = "/streams/cam-1/zones?dry_run=true"
    answer = client.put(url, json=NEW_ZONES, headers=auth("reviewer"))
    assert answer.status_code == 200, answer.text
    assert [z["id"] for z in answer.json()["zones"]] == ["kerb", "road"]
    bad = client.put(url, json=INVALID[0], headers=auth("dispatcher"))
    assert bad.status_code == 422 and "self-intersecting" in bad.json()["detail"][0]["msg"]
    assert client.put(url, json=NEW_ZONES, headers=auth("detector")).status_code == 403
    assert streams_file.read_text(encoding="utf-8") == STREAMS_YAML


def test_unknown_stream_is_404(client: TestClient) -> None:
    assert client.put("/streams/cam-7/zones", json=[], headers=auth("admin")).status_code == 404


def test_zones_of_a_stream_without_zones(client: TestClient, streams_file: Path) -> None:
    answer = client.put("/streams/cam-2/zones", json=NEW_ZONES[1:], headers=auth("admin"))
    assert answer.status_code == 200, answer.text
    assert load_config(streams_file).config.stream("cam-2").zones[0].id == "road"
    assert client.put("/streams/cam-2/zones", json=[], headers=auth("admin")).status_code == 200
    assert load_config(streams_file).config.stream("cam-2").zones == []


@pytest.mark.parametrize("api_settings_overrides", [{"streams_file": None}])
def test_without_a_streams_file_zones_are_read_only(client: TestClient, board: StreamBoard) -> None:
    board.put_state("cam-1", state("cam-1"))
    body = client.get("/streams", headers=auth("admin")).json()
    assert body["zones_editable"] is False and "CITYWATCH_STREAMS_FILE" in body["zones_read_only_reason"]
    assert [(s["id"], s["zones"]) for s in body["data"]] == [("cam-1", None)]
    answer = client.put("/streams/cam-1/zones", json=NEW_ZONES, headers=auth("admin"))
    assert answer.status_code == 409 and "CITYWATCH_STREAMS_FILE is not set" in answer.json()["detail"]


def test_an_unwritable_streams_file_is_409(
    client: TestClient, streams_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access
    monkeypatch.setattr(
        "api.services.streams_file.os.access",
        lambda p, mode: False if mode & os.W_OK else real_access(p, mode),
    )
    body = client.get("/streams", headers=auth("admin")).json()
    assert body["zones_editable"] is False and "may not" in body["zones_read_only_reason"]
    answer = client.put("/streams/cam-1/zones", json=NEW_ZONES, headers=auth("admin"))
    assert answer.status_code == 409
    assert streams_file.read_text(encoding="utf-8") == STREAMS_YAML
