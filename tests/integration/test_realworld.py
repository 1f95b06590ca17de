"""The real-footage regression suite against the shipped configuration (issue 11, point 4).

`citywatch eval-clips tests/realworld/EXPECTATIONS.yaml` replays the real clip through the real
pipeline with the models `streams.yaml` resolves for each rule, and runs the real stills through
them; every written expectation must hold. A model that invents stalls or litter on real streets,
or stops seeing parked cars, fails here with the clip, the rule, the place and the evidence JPEG.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from detector.commands.cli import main as citywatch
from detector.commands.evalclips import failures, load_expectations

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "tests" / "realworld"
EXPECTATIONS = SUITE / "EXPECTATIONS.yaml"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    """One run of the command, as the data team runs it (JSON), keeping the evidence JPEGs."""
    evidence = tmp_path_factory.mktemp("realworld-evidence")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = citywatch(
            ["eval-clips", str(EXPECTATIONS), "--json", "--quiet", "--evidence-dir", str(evidence)]
        )
    return rc, json.loads(out.getvalue())


def test_every_clip_has_its_licence_notice_and_expectations() -> None:
    notice = (SUITE / "LICENCES.md").read_text(encoding="utf-8")
    media = sorted(p for p in SUITE.rglob("*") if p.suffix.lower() in {".mp4", ".mkv", ".jpg", ".png"})
    assert media, "no real clips or stills in tests/realworld"
    for path in media:
        assert f"`{path.relative_to(SUITE).as_posix()}`" in notice, f"{path.name} has no row in LICENCES.md"
    exp = load_expectations(EXPECTATIONS)
    named = {
        (SUITE / str(getattr(c, "video", None) or getattr(c, "image", None))).resolve() for c in exp.clips
    }
    assert named == {p.resolve() for p in media}, "every clip and still has expectations, and only those"


def test_report_shape_and_exit_code(suite_run: tuple[int, dict[str, Any]]) -> None:
    rc, doc = suite_run
    assert set(doc) >= {"clips", "totals", "passed"}
    assert rc == (0 if doc["passed"] else 1)
    assert {c["kind"] for c in doc["clips"]} == {"video", "image"}
    for clip in doc["clips"]:
        assert set(clip) >= {"name", "kind", "duration_s", "opened", "false", "missed"}
        if clip["kind"] == "image":
            assert "detections" in clip
        else:
            assert clip["duration_s"] > 60  # the whole clip was replayed
    totals = doc["totals"]
    assert set(totals) >= {"false_cases", "missed_cases", "video_hours", "false_per_hour"}
    assert totals["false_cases"] == sum(len(c["false"]) for c in doc["clips"])
    assert totals["missed_cases"] == sum(len(c["missed"]) for c in doc["clips"])


def test_shipped_configuration_invents_nothing_on_real_footage(suite_run: tuple[int, dict[str, Any]]) -> None:
    """No case nobody expects on the real clips, no stall / litter / structure on the stills: the
    guard against a model that invents violations on real streets."""
    _, doc = suite_run
    assert doc["totals"]["false_cases"] == 0, "invented on real footage:\n" + failures(doc)


def test_shipped_configuration_meets_the_real_footage_expectations(
    suite_run: tuple[int, dict[str, Any]],
) -> None:
    """Every expectation, missed cases included: the message lists every false and missed case (with
    the evidence JPEG of each false case opened on a video)."""
    _, doc = suite_run
    assert doc["passed"], "real-footage expectations not met:\n" + failures(doc)
