"""The real-footage suite's judging (regions, counts, must_not_open, still thresholds, allow) and the
validation of EXPECTATIONS.yaml: hand-made cases and detections, no models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detector.commands.evalclips.cli import format_text, report
from detector.commands.evalclips.judge import (
    Case,
    Seen,
    cases_from_events,
    in_region,
    judge_still,
    judge_video,
)
from detector.commands.evalclips.runner import ClipResult
from detector.commands.evalclips.spec import ExpectationsError, StillClip, VideoClip, load_expectations

MIN_SCORE = {"vehicle": 0.35, "vendor": 0.35, "structure": 0.35, "litter": 0.35}


def case(rule: str, bbox: tuple[float, float, float, float], t: float = 30.0) -> Case:
    label = {"illegal_parking": "vehicle", "street_vending": "vendor"}.get(rule, "litter")
    return Case(rule, label, bbox, 0.6, t - 30.0, t, f"{rule}-{bbox}-{t}")


def seen(label: str, score: float, bbox: tuple[float, float, float, float]) -> Seen:
    return Seen(label, label, score, bbox)


def video(**kw: Any) -> VideoClip:
    return VideoClip.model_validate({"video": "v.mp4", **kw})


def still(**kw: Any) -> StillClip:
    return StillClip.model_validate({"image": "i.jpg", **kw})


CAR_A = (0.10, 0.30, 0.20, 0.40)  # centre (0.15, 0.35)
CAR_B = (0.50, 0.60, 0.70, 0.80)  # centre (0.60, 0.70)


@pytest.mark.parametrize(
    ("where", "box", "inside"),
    [
        (None, CAR_A, True),
        ([0.0, 0.3, 0.2, 0.4], CAR_A, True),  # centre inside the box
        ([0.0, 0.0, 0.14, 1.0], CAR_A, False),  # box covers part of the car but not its centre
        ([0.15, 0.35], CAR_A, True),  # the car's box contains the point
        ([0.10, 0.30], CAR_A, True),  # on the edge counts
        ([0.25, 0.35], CAR_A, False),
    ],
)
def test_in_region(where: list[float] | None, box: tuple[float, ...], inside: bool) -> None:
    assert in_region(where, box) is inside


PARK_A = {"rule": "illegal_parking", "where": [0.0, 0.2, 0.3, 0.5]}
PARK_B = {"rule": "illegal_parking", "where": [0.6, 0.7]}


@pytest.mark.parametrize(
    ("spec", "cases", "opened", "false_reasons", "missed_entries"),
    [
        # each expected case opens once: pass
        ({"must_open": [PARK_A, PARK_B]}, [case("illegal_parking", CAR_A), case("illegal_parking", CAR_B)],
         {"illegal_parking": 2}, [], []),
        # nothing opens: both missed
        ({"must_open": [PARK_A, PARK_B]}, [], {}, [], ["must_open[0]", "must_open[1]"]),
        # the same car twice: the second is one more than expected
        ({"must_open": [PARK_A]}, [case("illegal_parking", CAR_A), case("illegal_parking", CAR_A, 60)],
         {"illegal_parking": 2}, ["one case more than expected"], []),
        # a case outside every region is false, and the expected one is missed
        ({"must_open": [PARK_A]}, [case("illegal_parking", CAR_B)], {"illegal_parking": 1},
         ["not expected"], ["must_open[0]"]),
        # count {min: 0, max: 1}: may open once, need not
        ({"must_open": [{**PARK_A, "count": {"max": 1}}]}, [], {}, [], []),
        ({"must_open": [{**PARK_A, "count": {"max": 1}}]}, [case("illegal_parking", CAR_A)],
         {"illegal_parking": 1}, [], []),
        # count {min: 2}: two or more
        ({"must_open": [{**PARK_A, "count": {"min": 2}}]}, [case("illegal_parking", CAR_A)] * 3,
         {"illegal_parking": 3}, [], []),
        ({"must_open": [{**PARK_A, "count": {"min": 2}}]}, [case("illegal_parking", CAR_A)],
         {"illegal_parking": 1}, [], ["must_open[0]"]),
        # exact count 0 in a region: any case there is false
        ({"must_open": [{**PARK_A, "count": 0}]}, [case("illegal_parking", CAR_A)], {"illegal_parking": 1},
         ["one case more than expected"], []),
        # where omitted: anywhere in the frame
        ({"must_open": [{"rule": "illegal_parking"}]}, [case("illegal_parking", CAR_B)],
         {"illegal_parking": 1}, [], []),
        # a rule in must_not_open
        ({"must_not_open": ["street_vending"]}, [case("street_vending", CAR_A)], {"street_vending": 1},
         ["street_vending is in must_not_open"], []),
        # strict: a rule nobody mentions opens a case -> false
        ({}, [case("unclean_road", CAR_A)], {"unclean_road": 1}, ["not expected"], []),
        # the right rule matters: a vending case in a parking region is false, parking missed
        ({"must_open": [PARK_A]}, [case("street_vending", CAR_A)], {"street_vending": 1}, ["not expected"],
         ["must_open[0]"]),
        # overlapping regions: a case goes to the entry still below its min first
        ({"must_open": [{"rule": "illegal_parking", "where": [0.0, 0.0, 1.0, 1.0], "count": {"max": 5}},
                        PARK_A]},
         [case("illegal_parking", CAR_A)], {"illegal_parking": 1}, [], []),
    ],
)  # fmt: skip
def test_judge_video(
    spec: dict[str, Any],
    cases: list[Case],
    opened: dict[str, int],
    false_reasons: list[str],
    missed_entries: list[str],
) -> None:
    verdict = judge_video(video(**spec), cases)
    assert verdict.opened == opened
    assert len(verdict.false) == len(false_reasons)
    for got, want in zip(verdict.false, false_reasons, strict=True):
        assert want in got["reason"]
    assert [m["entry"] for m in verdict.missed] == missed_entries
    assert verdict.passed is (not false_reasons and not missed_entries)


BUS = (0.05, 0.21, 0.99, 0.71)
CART = (0.00, 0.55, 0.12, 0.80)
BUS_05 = {"label": "vehicle", "where": list(BUS), "min_score": 0.5}


@pytest.mark.parametrize(
    ("spec", "dets", "false_labels", "missed_entries", "statuses"),
    [
        # nothing at all: pass
        ({}, [], [], [], []),
        # a stall at the rule's min_score is false (at or above), just below is not
        ({}, [seen("vendor", 0.35, CART)], ["vendor"], [], ["false"]),
        ({}, [seen("vendor", 0.349, CART)], [], [], ["below threshold"]),
        # vehicles are not checked by default (a still cannot show parking)
        ({}, [seen("vehicle", 0.9, BUS)], [], [], ["unchecked"]),
        # ... unless max_score names them
        ({"max_score": {"vehicle": 0.5}}, [seen("vehicle", 0.9, BUS)], ["vehicle"], [], ["false"]),
        # max_score overrides the rule's threshold
        ({"max_score": {"litter": 0.6}}, [seen("litter", 0.5, CART)], [], [], ["below threshold"]),
        # allow: a vendor in the handcart region is fine at any score
        ({"allow": [{"label": "vendor", "where": [0.0, 0.5, 0.2, 0.85]}]}, [seen("vendor", 0.9, CART)],
         [], [], ["allowed"]),
        # ... only for its label
        ({"allow": [{"label": "vendor", "where": [0.0, 0.5, 0.2, 0.85]}]}, [seen("litter", 0.9, CART)],
         ["litter"], [], ["false"]),
        # ... and only in its region
        ({"allow": [{"label": "vendor", "where": [0.5, 0.5, 0.9, 0.9]}]}, [seen("vendor", 0.9, CART)],
         ["vendor"], [], ["false"]),
        # must_detect with its own min_score
        ({"must_detect": [BUS_05]}, [seen("vehicle", 0.82, BUS)], [], [], ["expected (must_detect[0])"]),
        ({"must_detect": [BUS_05]}, [seen("vehicle", 0.45, BUS)], [], ["must_detect[0]"], ["unchecked"]),
        # must_detect without min_score takes the rule's min_score
        ({"must_detect": [{"label": "vehicle", "where": [0.5, 0.5]}]}, [seen("vehicle", 0.36, BUS)],
         [], [], ["expected (must_detect[0])"]),
        # the detection must be where expected
        ({"must_detect": [{"label": "vehicle", "where": [0.5, 0.9]}]}, [seen("vehicle", 0.9, BUS)],
         [], ["must_detect[0]"], ["unchecked"]),
        # one detection serves one entry: two cars expected, one found
        ({"must_detect": [{"label": "vehicle", "where": BUS}, {"label": "vehicle", "where": BUS}]},
         [seen("vehicle", 0.9, BUS)], [], ["must_detect[1]"], ["expected (must_detect[0])"]),
        # a must_detect of a checked label is not also false
        ({"must_detect": [{"label": "vendor", "where": CART}]}, [seen("vendor", 0.7, CART)], [], [],
         ["expected (must_detect[0])"]),
        # litter below the rule's min_area never makes a case: not judged
        ({}, [seen("litter", 0.9, (0.5, 0.5, 0.51, 0.51))], [], [], ["below min_area"]),
    ],
)  # fmt: skip
def test_judge_still(
    spec: dict[str, Any],
    dets: list[Seen],
    false_labels: list[str],
    missed_entries: list[str],
    statuses: list[str],
) -> None:
    verdict = judge_still(still(**spec), dets, MIN_SCORE, litter_min_area=0.0005)
    assert [f["label"] for f in verdict.false] == false_labels
    assert [m["entry"] for m in verdict.missed] == missed_entries
    assert [d["status"] for d in verdict.detections] == statuses
    assert verdict.passed is (not false_labels and not missed_entries)


def test_cases_from_events_counts_opened_only_in_video_seconds() -> None:
    start = 1_780_279_200.0  # 2026-06-01T02:00:00Z
    base = {"rule": "illegal_parking", "label": "vehicle", "bbox": list(CAR_A), "score_median": 0.5}
    events = [
        {**base, "event": "opened", "violation_id": "a", "first_seen": "2026-06-01T02:00:02.000Z",
         "last_seen": "2026-06-01T02:00:33.500+00:00"},
        {**base, "event": "updated", "violation_id": "a", "first_seen": "2026-06-01T02:00:02Z",
         "last_seen": "2026-06-01T02:01:13Z"},
    ]  # fmt: skip
    cases = cases_from_events(events, start)
    assert len(cases) == 1
    assert cases[0].first_seen_s == pytest.approx(2.0)
    assert cases[0].opened_at_s == pytest.approx(33.5)
    assert cases[0].bbox == CAR_A


def test_report_totals_and_text() -> None:
    v = judge_video(video(must_open=[PARK_A]), [case("illegal_parking", CAR_B)])
    s = judge_still(still(), [seen("vendor", 0.9, CART)], MIN_SCORE)
    results = [
        ClipResult("street", "video", "v.mp4", 1800.0, v, {}),
        ClipResult("bus", "image", "i.jpg", None, s, {}),
    ]
    doc = report(Path("E.yaml"), None, results)
    assert doc["passed"] is False
    t = doc["totals"]
    assert (t["false_cases"], t["missed_cases"], t["false_video_cases"]) == (2, 1, 1)
    assert t["video_hours"] == 0.5
    assert t["false_per_hour"] == 2.0
    assert [c["kind"] for c in doc["clips"]] == ["video", "image"]
    assert "detections" in doc["clips"][1] and "detections" not in doc["clips"][0]
    text = format_text(doc)
    assert "[FAIL] street" in text and "missed must_open[0] illegal_parking" in text
    assert "false  vendor vendor 0.90" in text and "FAILED" in text


# ------------------------------------------------------------------------------------------ the file

GOOD = """\
version: 1
defaults:
  start_time: 2026-06-01T10:00:00+08:00
  rules: {illegal_parking: {dwell_s: 30}}
clips:
  - video: v.mp4
    must_open: [{rule: illegal_parking, where: [0.1, 0.2, 0.3, 0.4]}]
    must_not_open: [street_vending]
  - image: i.jpg
    must_detect: [{label: vehicle, where: [0.5, 0.5], min_score: 0.5}]
    allow: [{label: vendor, where: [0, 0.5, 0.2, 0.9]}]
"""


def test_load_good_file(tmp_path: Path) -> None:
    path = tmp_path / "EXPECTATIONS.yaml"
    path.write_text(GOOD)
    exp = load_expectations(path)
    assert exp.defaults.rules == {"illegal_parking": {"dwell_s": 30}}
    v, s = exp.clips
    assert isinstance(v, VideoClip) and isinstance(s, StillClip)
    assert (v.must_open[0].count.min, v.must_open[0].count.max) == (1, 1)  # default: exactly one
    assert s.must_detect[0].min_score == 0.5


PARK = "version: 1\nclips: [{video: v.mp4, must_open: [{rule: illegal_parking, "
IMG = "version: 1\nclips: [{image: i.jpg, "


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("version: 2\nclips: [{image: i.jpg}]\n", ":1:", "version"),
        ("version: 1\n", "", "clips"),
        ("version: 1\nclips: []\n", ":2:", "at least 1"),
        (IMG + "colour: red}]\n", "clips[0] (i.jpg): colour", "unknown key 'colour'"),
        ("version: 1\nclips: [{video: v.mp4, must_opne: []}]\n", "must_opne", "did you mean 'must_open'"),
        ("version: 1\nclips: [{name: x}]\n", "clips[0] (x)", "either `video:` or `image:`"),
        ("version: 1\nclips: [{video: v.mp4, image: i.jpg}]\n", "clips[0]", "either `video:` or `image:`"),
        ("version: 1\nclips: [{video: v.mp4, must_open: [{rule: parking}]}]\n", "must_open[0].rule",
         "'illegal_parking'"),
        (PARK + "where: [0.1]}]}]\n",
         "must_open[0].where", "[x, y] or [x1, y1, x2, y2]"),
        (PARK + "where: [0.1, 1.2]}]}]\n",
         "must_open[0].where", "within 0..1"),
        (PARK + "where: [0.5, 0, 0.4, 1]}]}]\n",
         "must_open[0].where", "x1 < x2"),
        (PARK + "count: {min: 2, max: 1}}]}]\n",
         "must_open[0].count.min", "min 2 is above max 1"),
        (PARK + "count: -1}]}]\n",
         "must_open[0].count.min", "at least 0"),
        ("version: 1\nclips:\n - video: v.mp4\n   must_open: [{rule: street_vending}]\n"
         "   must_not_open: [street_vending]\n", "must_not_open[0]", "also listed in must_open"),
        (IMG + "max_score: {stall: 0.3}}]\n", "max_score.stall", ""),
        (IMG + "max_score: {vendor: 1.5}}]\n", "max_score.vendor", "within 0..1"),
        (IMG + "must_detect: [{label: vehicle}]}]\n", "must_detect[0].where",
         "missing"),
        (IMG + "sample_interval_s: 2}]\n", "sample_interval_s", "unknown key"),
        ("version: 1\ndefaults: {rules: {illegal_parking: {dwel_s: 30}}}\nclips: [{image: i.jpg}]\n",
         "defaults.rules.illegal_parking.dwel_s", "did you mean 'dwell_s'"),
        ("version: 1\nclips: [{video: v.mp4, rules: {parking: {dwell_s: 3}}}]\n", "clips[0] (v.mp4): rules",
         "parking"),
        ("version: 1\ndefaults: {start_time: 2026-06-01T10:00:00}\nclips: [{image: i.jpg}]\n",
         "defaults.start_time", "timezone"),
        ("version: 1\nclips: [{image: a/i.jpg}, {image: b/i.jpg}]\n", "clips[1]", "already used by clips[0]"),
        ("version: 1\nclips: [{image: i.jpg\n", ":", "YAML"),
        ("- just a list\n", "", "not a mapping"),
    ],
)  # fmt: skip
def test_bad_files_name_file_line_clip_and_key(tmp_path: Path, text: str, where: str, message: str) -> None:
    path = tmp_path / "EXPECTATIONS.yaml"
    path.write_text(text)
    with pytest.raises(ExpectationsError) as info:
        load_expectations(path)
    shown = str(info.value)
    assert str(path) in shown
    assert where in shown, shown
    assert message.lower() in shown.lower(), shown


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExpectationsError, match="cannot read: no such file"):
        load_expectations(tmp_path / "nope.yaml")


def test_documented_examples_are_valid(tmp_path: Path) -> None:
    """The examples in the module docstring and in the README's "Real footage" section load."""
    import re

    import detector.commands.evalclips as module

    doc = module.__doc__ or ""
    block = doc[doc.index("    version: 1") : doc.index("Strict by design")]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Real footage") :]
    examples = {
        "docstring": "\n".join(line[4:] for line in block.splitlines()),
        "readme": re.findall(r"```yaml\n(.*?)```", section, re.S)[0],
    }
    for name, text in examples.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        assert load_expectations(path).clips, name
