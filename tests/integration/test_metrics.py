"""Metrics and health on real services: the detector replays the demo clip (``cam-demo-01`` of the root
streams.yaml, sped up) into a real broker and the case API (its own process, MQTT ingest on), and both
are scraped over HTTP the way a Prometheus would while the clip runs: the samples counter rises scrape
after scrape, every event the detector published reaches the API, which counts the cases it opened
(ingest counter and the cases gauge agree), and the outbox is empty at the end. ``/healthz`` and
``/readyz`` answer 200 on both."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from detector.commands.run import Detector, load
from tests.e2e.helpers import make_test_config
from tests.live_api import free_port, ingest_connected, live_api
from tests.mosquitto import account

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]

STREAM = "cam-demo-01"
FILE_SPEED = 30.0  # the 210 s clip in about 7 s, or as fast as inference goes on this machine


@pytest.fixture
def api(tmp_path: Path, mqtt_broker: tuple[str, int], topic_prefix: str) -> Iterator[str]:
    """The case API as its own process, dev mode (loopback only: /metrics needs no credential here)."""
    env = {
        "CITYWATCH_DEV_MODE": "true",
        "CITYWATCH_EVIDENCE_DIR": str(tmp_path / "api-evidence"),
        "CITYWATCH_MQTT_HOST": mqtt_broker[0],
        "CITYWATCH_MQTT_PORT": str(mqtt_broker[1]),
        "CITYWATCH_MQTT_TOPIC_PREFIX": topic_prefix,
        "CITYWATCH_MQTT_CLIENT_ID": f"metrics-api-{uuid.uuid4().hex[:8]}",
    }
    login = account("api")  # CITYWATCH_TEST_BROKER=acl
    if login is not None:
        env.update(CITYWATCH_MQTT_USERNAME=login[0], CITYWATCH_MQTT_PASSWORD=login[1])
    with live_api(tmp_path, env, ready=ingest_connected) as url:
        yield url


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def pick(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def total(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (n, _), v in metrics.items() if n == name)


def health(url: str) -> tuple[int, int, dict[str, object]]:
    alive = httpx.get(f"{url}/healthz", timeout=5).status_code
    ready = httpx.get(f"{url}/readyz", timeout=5)
    return alive, ready.status_code, ready.json()


def test_metrics_and_health_of_a_running_detector_and_the_api(
    api: str, mqtt_broker: tuple[str, int], topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    cfg = make_test_config(
        tmp_path,
        [STREAM],
        host=mqtt_broker[0],
        port=mqtt_broker[1],
        prefix=topic_prefix,
        worker=f"metrics-{uuid.uuid4().hex[:8]}",
        file_speed=FILE_SPEED,
        metrics_port=port,
    )
    before = scrape(api)
    assert total(before, "citywatch_api_cases") == 0
    assert pick(before, "citywatch_api_mqtt_connected", client="ingest") == 1
    assert health(api) == (200, 200, {"ready": True, "reasons": []})

    det = Detector(load(cfg)).start(threads=1)
    try:
        assert det.metrics is not None and det.metrics.port == port
        url = det.metrics.url
        samples: list[float] = []
        ready_seen = False
        deadline = time.monotonic() + 300
        while not (det.all_finished() and det.service is not None and det.service.idle()):
            assert time.monotonic() < deadline, f"the clip did not finish; samples so far {samples}"
            samples.append(pick(scrape(url), "citywatch_stream_samples_total", stream=STREAM))
            if not ready_seen:
                alive, ready, body = health(url)
                assert alive == 200
                ready_seen = ready == 200 and body == {"ready": True, "reasons": []}
            time.sleep(0.5)
        assert ready_seen, "the running detector never answered /readyz with 200"
        assert samples == sorted(samples), "a counter never goes down"
        assert len(set(samples)) >= 3, f"scraped while it ran, the samples rose: {samples}"

        # every event acknowledged: the outbox drains to 0 (polled, no fixed wait)
        while True:
            got = scrape(url)
            if pick(got, "citywatch_outbox_depth") == 0 and pick(got, "citywatch_events_acked_total") >= pick(
                got, "citywatch_events_published_total"
            ):
                break
            assert time.monotonic() < deadline, "the outbox did not drain"
            time.sleep(0.3)
        published = pick(got, "citywatch_events_published_total")
        read = pick(got, "citywatch_stream_samples_total", stream=STREAM)
        assert published >= 1 and pick(got, "citywatch_stream_events_total", stream=STREAM) == published
        assert pick(got, "citywatch_outbox_oldest_age_seconds") == 0
        assert pick(got, "citywatch_stream_state", stream=STREAM, state="finished") == 1
        assert pick(got, "citywatch_stream_state", stream=STREAM, state="live") == 0
        assert (
            read > 0 and pick(got, "citywatch_stream_dropped_samples_total", stream=STREAM) == 0
        )  # a file waits
        assert (
            pick(got, "citywatch_stream_inference_seconds_count", stream=STREAM) == read
        )  # each sample inferred
        assert pick(got, "citywatch_stream_inference_seconds_sum", stream=STREAM) > 0
        assert pick(got, "citywatch_stream_decode_seconds_count", stream=STREAM) >= read
        assert pick(got, "citywatch_stream_decode_seconds_sum", stream=STREAM) > 0
        assert ("citywatch_stream_lag_seconds", frozenset({("stream", STREAM)})) in got
        assert total(got, "citywatch_model_batches_total") >= 1
        assert (
            total(got, "citywatch_model_batch_size_sum") >= read
        )  # each sample went to a model at least once
        assert pick(got, "citywatch_mqtt_connected") == 1 and pick(got, "citywatch_models_loaded") >= 1
        assert health(url) == (200, 200, {"ready": True, "reasons": []})  # a finished file is not a failure

        # the API ingested every event the detector published and counts the cases they opened
        while True:
            after = scrape(api)
            ingested = total(after, "citywatch_api_ingest_events_total")
            if ingested + pick(after, "citywatch_api_ingest_dead_letters_total") >= published:
                break
            assert time.monotonic() < deadline, f"the API ingested {ingested} of {published} events"
            time.sleep(0.3)
    finally:
        det.stop()
    created = pick(after, "citywatch_api_ingest_events_total", outcome="created")
    print(f"samples scraped {samples}; events {published}; cases {created}")  # shown with -s
    assert created >= 1
    assert pick(after, "citywatch_api_ingest_dead_letters_total") == 0
    assert total(after, "citywatch_api_cases") == created  # the GROUP BY sees the cases the ingest opened
    assert pick(after, "citywatch_api_database_up") == 1
    cases = httpx.get(
        f"{api}/cases", params={"page_size": 100}, headers={"X-API-Key": "citywatch-dev-reviewer-key"}
    )
    by_rule: dict[str, int] = {}
    for case in cases.json()["data"]:
        by_rule[case["rule"]] = by_rule.get(case["rule"], 0) + 1
    for rule, n in by_rule.items():
        assert (
            sum(
                v
                for (name, labels), v in after.items()
                if name == "citywatch_api_cases" and ("rule", rule) in labels
            )
            == n
        )
    # a scrape is counted once its headers are out: the earlier ones are in this one
    assert (
        pick(after, "citywatch_api_request_seconds_count", method="GET", route="/metrics", status="200") >= 1
    )
    assert health(api) == (200, 200, {"ready": True, "reasons": []})
    # stopped: the detector's server is closed with it
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_readyz_refuses_while_every_stream_has_failed(
    mqtt_broker: tuple[str, int], topic_prefix: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    zone = {"id": "road", "polygon": [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]], "rules": ["unclean_road"]}
    cfg = make_test_config(
        tmp_path,
        [],
        host=mqtt_broker[0],
        port=mqtt_broker[1],
        prefix=topic_prefix,
        worker=f"metrics-{uuid.uuid4().hex[:8]}",
        extra_streams=({"id": "cam-bad", "url": str(broken), "zones": [zone]},),
        metrics_port=free_port(),
    )
    det = Detector(load(cfg)).start(threads=1)
    try:
        assert det.metrics is not None
        url = det.metrics.url
        deadline = time.monotonic() + 60
        while (answer := health(url))[1] != 503:
            assert time.monotonic() < deadline, f"/readyz still says {answer}"
            time.sleep(0.2)
        alive, _, body = answer
        assert alive == 200 and body["ready"] is False
        assert body["reasons"] == [f"every stream failed: cam-bad ({det.workers[0].state.reason})"]
        assert pick(scrape(url), "citywatch_stream_state", stream="cam-bad", state="failed") == 1
    finally:
        det.stop()
