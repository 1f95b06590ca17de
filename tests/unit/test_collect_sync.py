"""``citywatch collect sync`` and ``stats`` (detector/collect/sync.py, cli.py) against a fake ``GET /reviews``
(httpx.MockTransport answering the design's JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from detector.collect.record import FrameRecord, frame_id, read_record, utc_ms
from detector.collect.store import CollectionStore
from detector.collect.sync import STATE_FILE, SyncError, load_state, sync
from detector.commands.cli import main as citywatch

API = "http://api.test"
T0 = 1_780_279_200.0


def item(case_id: int, vid: str, verdict: str = "confirmed", **extra: Any) -> dict[str, Any]:
    base = {
        "case_id": case_id, "violation_id": vid, "stream": "cam", "rule": "illegal_parking",
        "label": "vehicle", "bbox": [0.1, 0.2, 0.3, 0.4], "verdict": verdict, "reason": None,
        "corrected_label": None, "corrected_bbox": None,
        "model": {"name": "citywatch-synth", "version": "1.2.0", "sha256": None},
        "reviewed_at": f"2026-06-02T08:00:0{case_id}.000000Z", "reviewed_by": "reviewer:ana",
    }  # fmt: skip
    return {**base, **extra}


class FakeReviews:
    """``GET /reviews`` over ``items`` with the API's cursor: ``next_since`` = the last item's
    ``reviewed_at~case_id``; an empty page echoes ``since``."""

    def __init__(self, items: list[dict[str, Any]], key: str = "k-reviewer") -> None:
        self.items = items
        self.key = key
        self.calls: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("X-API-Key") != self.key:
            return httpx.Response(401, json={"detail": "invalid API key"})
        if request.url.path != "/reviews":
            return httpx.Response(404, json={"detail": "Not Found"})
        params = dict(request.url.params)
        self.calls.append(params)
        cursors = [f"{i['reviewed_at']}~{i['case_id']}" for i in self.items]
        since = params.get("since")
        start = cursors.index(since) + 1 if since in cursors else 0
        page = self.items[start : start + int(params["limit"])]
        nxt = cursors[start + len(page) - 1] if page else since
        return httpx.Response(200, json={"items": page, "next_since": nxt})


def client(handler: Callable[[httpx.Request], httpx.Response], key: str = "k-reviewer") -> httpx.Client:
    return httpx.Client(base_url=API, headers={"X-API-Key": key}, transport=httpx.MockTransport(handler))


def collection(tmp_path: Path, cases: dict[str, int]) -> tuple[Path, dict[str, Path]]:
    """Case frames (violation id -> how many frames), plus one uniform frame."""
    root = tmp_path / "collect"
    store = CollectionStore(root, 10**9, 1e9, 1e9)
    paths: dict[str, Path] = {}
    i = 0
    for vid, count in cases.items():
        for n in range(count):
            i += 1
            rec = FrameRecord(
                id=frame_id("cam", T0 + i, "case"), stream="cam", captured_at=utc_ms(T0 + i),
                width=640, height=360, reasons=["case"], violation_id=vid,
            )  # fmt: skip
            paths[f"{vid}/{n}"] = store.write(rec, b"\xff\xd8jpeg")
    plain = FrameRecord(
        id=frame_id("cam", T0, "uniform"), stream="cam", captured_at=utc_ms(T0), width=640, height=360,
        reasons=["uniform"],
    )  # fmt: skip
    paths["uniform"] = store.write(plain, b"\xff\xd8jpeg")
    return root, paths


REVIEWS = [
    item(1, "v-a", "rejected", reason="false_positive"),
    item(2, "v-b", "corrected", corrected_label="vehicle", corrected_bbox=[10, 20, 700, 90]),
    item(3, "v-not-here", "confirmed"),
    item(4, "v-c", "confirmed"),
]


def test_sync_writes_each_verdict_into_its_case_frames(tmp_path: Path) -> None:
    root, paths = collection(tmp_path, {"v-a": 1, "v-b": 2, "v-c": 1, "v-never": 1})
    fake = FakeReviews(REVIEWS)
    report = sync(client(fake), root, None, API, limit=2)
    assert (report.reviews, report.frames_updated, report.frames_unchanged) == (4, 4, 0)
    assert report.not_collected == ["v-not-here"]
    assert report.pages == 3  # 2 + 2 + the empty page that ends it
    a = read_record(paths["v-a/0"])
    assert a.reasons == ["case", "rejected"] and a.pinned
    assert a.review is not None and (a.review.case_id, a.review.reason, a.review.by) == (
        1,
        "false_positive",
        "reviewer:ana",
    )
    for key in ("v-b/0", "v-b/1"):
        b = read_record(paths[key])
        assert b.review is not None and b.review.verdict == "corrected"
        clipped = (10.0, 20.0, 640.0, 90.0)  # x2 700 clipped to the 640 px frame
        assert (b.review.label, b.review.xyxy) == ("vehicle", clipped)
        # the case's own detection, normalised by the API, in the 640x360 frame's pixels
        assert (b.review.case_label, b.review.case_xyxy) == ("vehicle", (64.0, 72.0, 192.0, 144.0))
    assert read_record(paths["v-c/0"]).reasons == ["case", "confirmed"]
    assert read_record(paths["v-never/0"]).review is None
    assert read_record(paths["uniform"]).review is None
    assert load_state(root, API) == "2026-06-02T08:00:04.000000Z~4"


def test_the_next_sync_goes_on_from_the_saved_cursor(tmp_path: Path) -> None:
    root, paths = collection(tmp_path, {"v-a": 1, "v-c": 1})
    fake = FakeReviews(REVIEWS[:1])
    sync(client(fake), root, None, API)
    fake.items = [*REVIEWS[:1], item(5, "v-c", "confirmed"), item(6, "v-a", "confirmed")]  # v-a judged again
    report = sync(client(fake), root, load_state(root, API), API)
    assert fake.calls[-2]["since"] == "2026-06-02T08:00:01.000000Z~1"
    assert report.reviews == 2
    a = read_record(paths["v-a/0"])
    assert a.reasons == ["case", "confirmed"]  # the new verdict replaces the old one
    assert a.review is not None and a.review.case_id == 6


def test_a_repeated_review_changes_nothing(tmp_path: Path) -> None:
    root, paths = collection(tmp_path, {"v-a": 1})
    sync(client(FakeReviews(REVIEWS[:1])), root, None, API)
    before = paths["v-a/0"].read_bytes()
    report = sync(client(FakeReviews(REVIEWS[:1])), root, None, API)
    assert (report.frames_updated, report.frames_unchanged) == (0, 1)
    assert paths["v-a/0"].read_bytes() == before


def test_a_cursor_of_another_api_is_not_used(tmp_path: Path) -> None:
    root, _ = collection(tmp_path, {})
    sync(client(FakeReviews(REVIEWS)), root, None, API)
    assert load_state(root, API) is not None
    assert load_state(root, "http://other:8000") is None
    assert json.loads((root / STATE_FILE).read_text())["api"] == API


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"detail": "invalid API key"}, "reviewer, dispatcher or admin"),
        (403, {"detail": "role 'citizen' may not read reviews"}, "may not read reviews"),
        (404, {"detail": "Not Found"}, "has no GET /reviews"),
        (500, {"detail": "boom"}, "answered 500"),
        (200, ["not", "a", "page"], "without an items list"),
    ],
)
def test_api_refusals_are_explained(tmp_path: Path, status: int, body: Any, message: str) -> None:
    root, _ = collection(tmp_path, {})
    with pytest.raises(SyncError, match=message):
        sync(client(lambda _r: httpx.Response(status, json=body)), root, None, API)


def test_an_unreachable_api(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    root, _ = collection(tmp_path, {})
    with pytest.raises(SyncError, match="cannot reach the case API"):
        sync(client(refuse), root, None, API)


def test_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, paths = collection(tmp_path, {"v-a": 1})
    fake = FakeReviews(REVIEWS)
    real_client = httpx.Client

    def fake_client(**kwargs: Any) -> httpx.Client:
        return real_client(**kwargs, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(httpx, "Client", fake_client)
    monkeypatch.delenv("CITYWATCH_API_KEY", raising=False)
    assert citywatch(["collect", "sync", "--api", API, "--dir", str(root)]) == 2
    assert "--key KEY or CITYWATCH_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("CITYWATCH_API_KEY", "k-wrong")
    assert citywatch(["collect", "sync", "--api", API, "--dir", str(root)]) == 1
    assert "refused the key" in capsys.readouterr().err
    monkeypatch.setenv("CITYWATCH_API_KEY", "k-reviewer")
    assert (
        citywatch(["collect", "sync", "--api", API + "/", "--dir", str(root), "--since", "2026-01-01"]) == 0
    )
    out = capsys.readouterr().out
    assert "4 reviews" in out and "1 frames updated" in out and "3 reviews of cases with no frame" in out
    assert fake.calls[0]["since"] == "2026-01-01T00:00:00+00:00"
    assert read_record(paths["v-a/0"]).review is not None

    assert citywatch(["collect", "stats", "--dir", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["frames"] == 2
    assert stats["streams"]["cam"]["reasons"] == {"uniform": 1, "case": 1, "rejected": 1}
    assert stats["streams"]["cam"]["reviewed"] == 1
    assert citywatch(["collect", "stats", "--dir", str(root)]) == 0
    assert "cam: 2 frames" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["collect"], 2, "usage: citywatch collect sync|stats|export|import"),
        (["collect", "frobnicate"], 2, "usage: citywatch collect"),
        (["collect", "stats", "--dir", "/nonexistent/collect"], 2, "no such folder"),
        (["collect", "sync", "--api", API, "--since", "yesterday", "--key", "k"], 1, "not an ISO 8601 time"),
    ],
)
def test_command_usage(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert citywatch(argv) == code
    assert message in capsys.readouterr().err


def test_export_and_import_belong_to_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """``collect export|import`` go to training.collect_cli by name, with the subcommand first."""
    seen: list[tuple[str, list[str]]] = []

    def entry(module: str, attr: str = "main") -> Callable[[list[str]], int]:
        def run(argv: list[str]) -> int:
            seen.append((module, argv))
            return 0

        return run

    monkeypatch.setattr("detector.commands.cli._entry", entry)
    monkeypatch.setattr("importlib.util.find_spec", lambda _name: object())
    assert citywatch(["collect", "export", "--format", "yolo"]) == 0
    assert citywatch(["collect", "stats"]) == 0
    assert seen == [
        ("training.collect_cli", ["export", "--format", "yolo"]),
        ("detector.collect.cli", ["stats"]),
    ]


# ------------------------------------------------------------------ against the real case API
def test_sync_against_the_case_api(tmp_path: Path, app: Any, client: Any) -> None:
    """The API test app (tests/unit/conftest.py): three camera cases judged three ways; the collection
    holds the frames of two of them."""
    from api.ingest.sample import sample_event
    from tests.api_support import auth, ingest_sample

    cases = []
    for n in range(3):
        location = {"lat": 21.0 + n * 0.1, "lon": 114.0, "grid": f"G-{n}", "road": "R", "address": "A"}
        cases.append(ingest_sample(app, sample_event(stream=f"cam-s{n}", location=location)))
    vids = [client.get(f"/cases/{cid}", headers=auth("admin")).json()["violation_id"] for cid in cases]
    for cid, action, body in [
        (cases[0], "reject", {"reason": "false_positive"}),
        (cases[1], "correct", {"label": "vendor", "bbox": [1, 2, 6, 7]}),  # the 8x8 sample evidence
        (cases[2], "register", None),
    ]:
        response = client.post(f"/cases/{cid}/{action}", headers=auth("reviewer"), json=body)
        assert response.status_code == 200, response.text
    root, paths = collection(tmp_path, {vids[0]: 1, vids[1]: 1})
    client.headers.update(auth("reviewer"))
    report = sync(client, root, None, str(client.base_url), limit=2)
    assert (report.reviews, report.frames_updated) == (3, 2)
    assert report.not_collected == [vids[2]]
    rejected, corrected = read_record(paths[f"{vids[0]}/0"]), read_record(paths[f"{vids[1]}/0"])
    assert rejected.reasons == ["case", "rejected"]
    assert rejected.review is not None and rejected.review.reason == "false_positive"
    assert rejected.review.case_id == cases[0] and rejected.review.by == "reviewer:t-reviewer"
    assert corrected.reasons == ["case", "corrected"]
    assert corrected.review is not None
    assert (corrected.review.label, corrected.review.xyxy) == ("vendor", (1.0, 2.0, 6.0, 7.0))
    # the saved cursor: nothing new next time
    again = sync(client, root, load_state(root, str(client.base_url)), str(client.base_url))
    assert (again.reviews, again.frames_updated) == (0, 0)

    client.headers.update(auth("unit"))
    with pytest.raises(SyncError, match="refused the key"):
        sync(client, root, None, str(client.base_url))
