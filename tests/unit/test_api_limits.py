"""The pure parts of the ingress limits, as tables: quota strings, token buckets (a clock the test
moves), the address a quota counts, loopback, the evidence store's floors, the settings' checks
and the start-up checks of ``python -m api``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from api.__main__ import check_startup
from api.core.config import Settings
from api.core.evidence import EvidenceStore
from api.core.ingress import is_loopback
from api.core.ratelimit import Charge, Quota, RateLimiter, client_subject, parse_quota
from api.errors import ConfigError, EvidenceFullError
from api.ingest.sample import sample_jpeg
from tests.api_support import make_settings

MiB = 1024**2


@pytest.mark.parametrize(
    ("text", "quota"),
    [
        ("20/h", Quota(20, 3600)),
        ("600/min", Quota(600, 60)),
        ("5/s", Quota(5, 1)),
        ("2/d", Quota(2, 86400)),
        ("3600/86400", Quota(3600, 86400)),
        ("10/2h", Quota(10, 7200)),
        ("50MiB/h", Quota(50 * MiB, 3600)),
        ("2GiB/h", Quota(2 * 1024**3, 3600)),
        ("64KiB/min", Quota(64 * 1024, 60)),
        (" 7 / min ", Quota(7, 60)),
        ("0", None),
        ("off", None),
    ],
)
def test_quota_strings(text: str, quota: Quota | None) -> None:
    assert parse_quota(text) == quota


@pytest.mark.parametrize("text", ["20", "20/", "/h", "20/week", "20TB/h", "-1/h", "0/h", "twenty/h", "20/0"])
def test_bad_quota_strings_name_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="quota"):
        parse_quota(text)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("steps", "answers"),
    [
        # (seconds to move the clock, amount asked) -> 0 taken, else Retry-After
        ([(0, 1)] * 4, [0, 0, 0, 2]),  # 3 per 6 s: a burst of 3, then wait 2 s for one more
        ([(0, 1)] * 3 + [(2, 1)], [0, 0, 0, 0]),  # 2 s later one token is back
        (
            [(0, 3), (1, 1), (1, 1)],
            [0, 1, 0],
        ),  # after 1 s a third of a token is missing... 1 s later it's there
        ([(0, 4)], [6]),  # more than the bucket holds: wait until it is full (then still refused)
        ([(0, 2), (100, 3)], [0, 0]),  # a bucket never holds more than its amount
    ],
)
def test_token_bucket(steps: list[tuple[float, float]], answers: list[int]) -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    got = []
    for moved, amount in steps:
        clock.now += moved
        got.append(limiter.take([Charge("reports:key", "public", Quota(3, 6), amount)]))
    assert got == answers


def test_charges_are_taken_together_or_not_at_all() -> None:
    limiter = RateLimiter(clock=Clock())
    requests, size = Quota(10, 60), Quota(100, 60)
    assert limiter.take([Charge("r", "a", requests), Charge("b", "a", size, 90)]) == 0
    assert limiter.take([Charge("r", "a", requests), Charge("b", "a", size, 20)]) > 0  # bytes refuse
    # the refused request took no request token: 9 remain
    assert [limiter.take([Charge("r", "a", requests)]) for _ in range(10)] == [0] * 9 + [6]
    assert (
        limiter.take([Charge("r", "other", requests), Charge("x", "a", None, 10**9)]) == 0
    )  # None: no limit


def test_buckets_are_bounded() -> None:
    limiter = RateLimiter(clock=Clock(), max_tracked=100)
    for i in range(1000):
        limiter.take([Charge("reports:address", f"10.0.{i // 256}.{i % 256}", Quota(1, 60))])
    assert limiter.tracked() == 100


@pytest.mark.parametrize(
    ("host", "subject"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),  # the same subscriber's /64
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("testclient", "testclient"),
    ],
)
def test_the_address_a_quota_counts(host: str, subject: str) -> None:
    assert client_subject(host) == subject


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("free", "upload", "stored"),
    [
        # free space given the photo's size n; floors: uploads 100 MiB, camera evidence 10 MiB
        (lambda n: 1000 * MiB, True, True),
        (lambda n: 100 * MiB + n, True, True),  # just fits above the upload floor
        (lambda n: 100 * MiB + n - 1, True, False),  # would cross it: refused
        (lambda n: 100 * MiB, True, False),  # a disk filled to the upload floor
        (lambda n: 100 * MiB, False, True),  # camera evidence still goes in
        (lambda n: 10 * MiB + n, False, True),
        (lambda n: 10 * MiB + n - 1, False, False),  # below the ingest floor it waits too
    ],
)
def test_the_evidence_store_floors(
    tmp_path: Path, free: Callable[[int], int], upload: bool, stored: bool
) -> None:
    photo = sample_jpeg("floor")
    store = EvidenceStore(
        tmp_path,
        upload_floor_bytes=100 * MiB,
        ingest_floor_bytes=10 * MiB,
        free_space=lambda _root: free(len(photo)),
    )
    if stored:
        assert store.exists(store.put(photo, upload=upload))
    else:
        with pytest.raises(EvidenceFullError, match="floor") as caught:
            store.put(photo, upload=upload)
        assert isinstance(caught.value, OSError)  # the ingest retries it like a full disk
        assert list(tmp_path.rglob("*")) == []


def test_a_photo_already_stored_needs_no_room(tmp_path: Path) -> None:
    free = {"bytes": 1000 * MiB}
    store = EvidenceStore(tmp_path, upload_floor_bytes=100 * MiB, free_space=lambda _root: free["bytes"])
    digest = store.put(sample_jpeg("again"), upload=True)
    free["bytes"] = 0
    assert store.put(sample_jpeg("again"), upload=True) == digest


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"evidence_upload_floor_bytes": MiB, "evidence_ingest_floor_bytes": 2 * MiB}, "at most"),
        ({"rate_report_bytes_per_address": "1MiB/h"}, "at least one upload"),
        ({"rate_reports_per_key": "lots"}, "AMOUNT/PERIOD"),
    ],
)
def test_settings_refuse_limits_that_cannot_work(
    tmp_path: Path, overrides: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValidationError, match=words):
        make_settings("sqlite://", tmp_path, **overrides)


@pytest.mark.parametrize(
    ("overrides", "host", "words"),
    [
        ({}, "0.0.0.0", None),  # keys configured: any address
        ({"api_keys": None}, "127.0.0.1", "CITYWATCH_API_KEYS"),
        ({"api_keys": None, "dev_mode": True}, "127.0.0.1", None),
        ({"api_keys": None, "dev_mode": True}, "::1", None),
        ({"api_keys": None, "dev_mode": True}, "0.0.0.0", "loopback only"),
        ({"api_keys": None, "dev_mode": True}, "192.0.2.10", "loopback only"),
    ],
)
def test_start_up_checks(tmp_path: Path, overrides: dict[str, Any], host: str, words: str | None) -> None:
    settings: Settings = make_settings("sqlite://", tmp_path, **overrides)
    if words is None:
        check_startup(settings, host)
    else:
        with pytest.raises(ConfigError, match=words):
            check_startup(settings, host)
