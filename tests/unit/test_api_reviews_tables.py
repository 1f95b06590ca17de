"""The pure parts of the data team's loop on the case API (issue 14), as tables: the ``GET /reviews``
cursor, the correction body, the verdict and the JPEG frame size. Over HTTP: test_api_reviews.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from api.core.evidence import jpeg_size
from api.ingest.sample import SAMPLE_JPEG, sample_jpeg
from api.models import RULE_LABELS, CaseStatus
from api.schemas_reviews import CorrectIn, DetectionLabel, format_cursor, parse_since
from api.services.reviews import verdict_of
from tests.unit.test_api_reviews import BOX, T0, H, W, frame_jpeg


def test_the_correction_labels_are_the_rule_labels() -> None:
    assert set(get_args(DetectionLabel)) == set(RULE_LABELS.values())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T01:00:00Z", (T0, 0)),
        ("2026-03-02T09:00:00+08:00", (T0, 0)),
        ("2026-03-02T01:00:00", (T0, 0)),  # no zone: UTC
        ("2026-03-02", (T0 - timedelta(hours=1), 0)),
        ("2026-03-02T01:00:00.000000Z~17", (T0, 17)),
        ("2026-03-02T01:00:00.000250Z~0", (T0 + timedelta(microseconds=250), 0)),
        (f"2026-03-02T01:00:00Z~{2**31 - 1}", (T0, 2**31 - 1)),
    ],
)
def test_since_forms(text: str, expected: tuple[datetime, int]) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "",
        "~5",
        "2026-13-01T00:00:00Z",
        "2026-03-02T01:00:00Z~",
        "2026-03-02T01:00:00Z~x",
        "2026-03-02T01:00:00Z~-1",
        "2026-03-02T01:00:00Z~１７",  # full-width digits
        f"2026-03-02T01:00:00Z~{2**31}",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    ],
)
def test_bad_since_names_both_forms(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_since(text)


@pytest.mark.parametrize(
    "at", [T0, T0 + timedelta(microseconds=1), datetime(2026, 3, 2, 9, 0, tzinfo=UTC).astimezone()]
)
def test_a_cursor_parses_back_to_itself(at: datetime) -> None:
    text = format_cursor(at, 42)
    assert text.endswith("Z~42") and parse_since(text) == (at, 42)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"label": "vehicle", "bbox": [0, 0, 1, 1]}, None),
        ({"label": "structure", "bbox": [10.5, 20, 1279.5, 720]}, None),
        ({"label": "car", "bbox": BOX}, "Input should be 'vehicle', 'vendor', 'litter' or 'structure'"),
        ({"label": "Vehicle", "bbox": BOX}, "Input should be 'vehicle'"),
        ({"label": "vehicle", "bbox": [300, 200, 100, 400]}, "x1 < x2"),
        ({"label": "vehicle", "bbox": [100, 200, 100, 400]}, "x1 < x2"),
        ({"label": "vehicle", "bbox": [100, 400, 300, 200]}, "y1 < y2"),
        ({"label": "vehicle", "bbox": [-1, 200, 300, 400]}, "greater than or equal to 0"),
        ({"label": "vehicle", "bbox": [100, 200, 300, float("nan")]}, "finite number"),
        ({"label": "vehicle", "bbox": [100, 200, float("inf"), 400]}, "finite number"),
        ({"label": "vehicle", "bbox": [100, 200, 300, 1e9]}, "less than or equal to 100000"),
        ({"label": "vehicle", "bbox": [100, 200, 300]}, "at least 4 items"),
        ({"label": "vehicle", "bbox": [1, 2, 3, 4, 5]}, "at most 4 items"),
        ({"label": "vehicle", "bbox": ["1", 2, 3, 4]}, "valid number"),
        ({"label": "vehicle", "bbox": [True, 2, 3, 4]}, "valid number"),
        ({"label": "vehicle"}, "Field required"),
        ({"bbox": BOX}, "Field required"),
        ({"label": "vehicle", "bbox": BOX, "score": 1}, "Extra inputs are not permitted"),
    ],
)
def test_correction_bodies(body: dict[str, Any], error: str | None) -> None:
    if error is None:
        assert CorrectIn.model_validate(body).bbox == [float(v) for v in body["bbox"]]
        return
    with pytest.raises(ValidationError, match=error):
        CorrectIn.model_validate(body)


@pytest.mark.parametrize(
    ("status", "corrected", "verdict"),
    [
        (CaseStatus.candidate, False, None),
        (CaseStatus.candidate, True, "corrected"),
        *[(s, False, "confirmed") for s in CaseStatus if s not in {"candidate", "rejected", "merged"}],
        *[(s, True, "corrected") for s in CaseStatus if s not in {"candidate", "rejected", "merged"}],
        (CaseStatus.rejected, False, "rejected"),
        (CaseStatus.rejected, True, "rejected"),  # the verdict; the correction still comes with it
        (CaseStatus.merged, False, None),
        (CaseStatus.merged, True, None),
    ],
)
def test_verdict(status: CaseStatus, corrected: bool, verdict: str | None) -> None:
    assert verdict_of(status.value, corrected) == verdict


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (SAMPLE_JPEG, (8, 8)),
        (sample_jpeg("a comment segment first"), (8, 8)),
        (frame_jpeg(), (W, H)),
        (frame_jpeg(640, 480), (640, 480)),
        (SAMPLE_JPEG[:20], None),  # cut before the frame header
        (b"\xff\xd8\xff\xd9", None),
        (b"GIF89a", None),
        (b"", None),
    ],
)
def test_jpeg_size(data: bytes, size: tuple[int, int] | None) -> None:
    assert jpeg_size(data) == size
