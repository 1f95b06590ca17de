"""Real Mosquitto -> API ingest -> REST, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import api.ingest.mqtt as api_mqtt
from api.core.config import Settings
from api.errors import IngestUnavailableError
from api.ingest.sample import encode, new_violation_id, sample_event, sample_jpeg
from api.models import DeadLetter

pytestmark = pytest.mark.mqtt

Wait = Callable[..., Any]


def new_stream() -> str:
    return f"cam-{uuid.uuid4().hex[:8]}"


def topic_for(settings: Settings, stream: str) -> str:
    return f"{settings.mqtt_topic_prefix}/violations/{stream}"


def cases_of(api: TestClient, stream: str) -> list[dict[str, Any]]:
    body = api.get("/cases", params={"stream": stream, "page_size": 500}).json()
    rows: list[dict[str, Any]] = body["data"]
    return rows


def dead_letters_under(api: TestClient, prefix: str) -> int:
    with api.app.state.session_factory() as session:  # type: ignore[attr-defined]
        count = session.scalar(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.topic.startswith(prefix))
        )
    return int(count or 0)


def flush(api: TestClient, settings: Settings, publisher: Any, wait_until: Wait) -> None:
    """Publish a sentinel and wait for its case: the single worker handles messages in order,
    so everything published before it has been handled too."""
    stream = new_stream()
    publisher.publish(topic_for(settings, stream), encode(sample_event(stream=stream)))
    wait_until(lambda: cases_of(api, stream), what="the sentinel case")


def test_published_event_becomes_a_case_with_its_evidence(
    api: TestClient, api_settings: Settings, publisher: Any, wait_until: Wait
) -> None:
    stream = new_stream()
    jpeg = sample_jpeg(stream)
    body = sample_event(stream=stream, jpeg=jpeg)
    publisher.publish(topic_for(api_settings, stream), encode(body))

    rows = wait_until(lambda: cases_of(api, stream), what="the case")
    assert [r["violation_id"] for r in rows] == [body["violation_id"]]
    case = api.get(f"/cases/{rows[0]['id']}").json()
    assert case["status"] == "candidate" and case["violation_state"] == "open"
    evidence = api.get(case["evidence_url"])
    assert evidence.status_code == 200
    assert evidence.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(evidence.content).hexdigest() == body["evidence"]["sha256"]


def test_duplicates_and_replays_make_one_case(
    api: TestClient, api_settings: Settings, publisher: Any, wait_until: Wait
) -> None:
    stream = new_stream()
    body = sample_event(stream=stream)
    topic = topic_for(api_settings, stream)
    for _ in range(3):
        publisher.publish(topic, encode(body))
    publisher.publish(topic, encode({**body, "sent_at": "2027-01-01T00:00:00Z"}))  # a replay
    flush(api, api_settings, publisher, wait_until)

    rows = cases_of(api, stream)
    assert len(rows) == 1
    assert rows[0]["event_count"] == 1
    counts = api.get("/health").json()["ingest"]["counts"]
    assert counts["duplicate"] >= 3


def test_lifecycle_in_any_order(
    api: TestClient, api_settings: Settings, publisher: Any, wait_until: Wait
) -> None:
    stream = new_stream()
    vid = new_violation_id()
    topic = topic_for(api_settings, stream)
    for event, seq in [("updated", 1), ("opened", 0), ("cleared", 3), ("updated", 2)]:
        publisher.publish(topic, encode(sample_event(violation_id=vid, stream=stream, event=event, seq=seq)))
    flush(api, api_settings, publisher, wait_until)

    (case,) = cases_of(api, stream)
    assert (case["violation_state"], case["last_seq"], case["event_count"]) == ("cleared", 3, 4)
    assert case["cleared_at"] is not None


def _malformed(i: int, stream: str) -> tuple[str, bytes]:
    """200 kinds of broken: cycle through the classes of damage (stream suffix picks the topic)."""
    good = sample_event(stream=stream)
    kind = i % 10
    if kind == 0:
        return stream, b"{not json " + str(i).encode()
    if kind == 1:
        return stream, encode({**good, "seq": "seven"})
    if kind == 2:
        return stream, encode({k: v for k, v in good.items() if k != "violation_id"})
    if kind == 3:
        return stream, encode({**good, "zone": "z" * 70_000})
    if kind == 4:
        return stream, encode({**good, "schema": "citywatch.violation/2"})
    if kind == 5:
        return stream, json.dumps([good]).encode()
    if kind == 6:
        return stream, encode({**good, "evidence": {**good["evidence"], "sha256": "0" * 64}})
    if kind == 7:
        return f"{stream}-elsewhere", encode(good)  # topic stream != payload stream
    if kind == 8:
        return stream, b"\xff\xfe\x00\x00" + bytes(range(256))
    return stream, b""


def test_malformed_messages_interleaved_with_valid_ones(
    api: TestClient, api_settings: Settings, publisher: Any, wait_until: Wait
) -> None:
    stream = new_stream()
    valid_ids = []
    for i in range(200):
        topic_stream, payload = _malformed(i, stream)
        publisher.publish(topic_for(api_settings, topic_stream), payload)
        if i % 4 == 0:
            body = sample_event(stream=stream)
            valid_ids.append(body["violation_id"])
            publisher.publish(topic_for(api_settings, stream), encode(body))
    flush(api, api_settings, publisher, wait_until)

    assert sorted(r["violation_id"] for r in cases_of(api, stream)) == sorted(valid_ids)
    assert len(valid_ids) == 50
    assert dead_letters_under(api, api_settings.mqtt_topic_prefix) == 200
    ingest = api.get("/health").json()["ingest"]
    assert ingest["dead_letters"] == 200
    assert ingest["events_ingested"] == 51  # the valid ones and the sentinel


def test_messages_sent_while_the_api_is_down_arrive_on_restart(
    api_settings: Settings, runner: Any, publisher: Any, wait_until: Wait
) -> None:
    runner.stop(runner.start(api_settings))  # the broker keeps the session: clean_session=False

    stream = new_stream()
    sent = [sample_event(stream=stream) for _ in range(3)]
    for body in sent:
        publisher.publish(topic_for(api_settings, stream), encode(body))

    again = runner.start(api_settings)
    rows = wait_until(
        lambda: len(cases_of(again, stream)) == 3 and cases_of(again, stream), what="queued cases"
    )
    assert sorted(r["violation_id"] for r in rows) == sorted(b["violation_id"] for b in sent)


def test_shared_subscription_splits_messages_between_workers(
    api_settings: Settings,
    runner: Any,
    make_client_id: Callable[[], str],
    publisher: Any,
    wait_until: Wait,
) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    workers = [
        runner.start(api_settings.model_copy(update={"mqtt_shared_group": group, "mqtt_client_id": cid}))
        for cid in (make_client_id(), make_client_id())
    ]
    stream = new_stream()
    sent = [sample_event(stream=stream) for _ in range(20)]
    for body in sent:
        publisher.publish(topic_for(api_settings, stream), encode(body))

    wait_until(lambda: len(cases_of(workers[0], stream)) == 20, what="20 cases from two workers")
    created = [w.get("/health").json()["ingest"]["counts"]["created"] for w in workers]
    assert sum(created) == 20  # each message went to one member of the group only
    assert all(n > 0 for n in created), created


def test_health_reports_the_connection(api: TestClient) -> None:
    body = api.get("/health").json()
    assert body["status"] == "ok"
    assert body["ingest"]["enabled"] is True and body["ingest"]["connected"] is True


def test_a_message_not_committed_is_not_acked_and_comes_back(
    api_settings: Settings, runner: Any, publisher: Any, wait_until: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is down while a message is in hand: the worker retries and never acks it;
    after a restart the broker delivers it again and it becomes a case."""

    def database_down(*_args: Any, **_kwargs: Any) -> Any:
        raise IngestUnavailableError("database unavailable (test)")

    monkeypatch.setattr(api_mqtt, "ingest_event", database_down)
    first = runner.start(api_settings)
    stream = new_stream()
    body = sample_event(stream=stream)
    publisher.publish(topic_for(api_settings, stream), encode(body))
    wait_until(lambda: first.get("/health").json()["ingest"]["counts"]["retries"] >= 2, what="retries")
    health = first.get("/health").json()["ingest"]
    assert health["counts"]["acked"] == 0 and "database unavailable" in health["last_error"]
    runner.stop(first)

    monkeypatch.undo()
    again = runner.start(api_settings)
    rows = wait_until(lambda: cases_of(again, stream), what="the redelivered message's case")
    assert [r["violation_id"] for r in rows] == [body["violation_id"]]


def test_no_broker_means_degraded_health_not_a_failed_start(
    api_settings: Settings, runner: Any, unused_port: int
) -> None:
    api = runner.start(api_settings.model_copy(update={"mqtt_port": unused_port}), wait_connected=False)
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["ingest"]["connected"] is False
    assert api.get("/cases").status_code == 200
