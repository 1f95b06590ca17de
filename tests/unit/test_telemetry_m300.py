"""Matrice 300 RTK SRT blocks (``GPS(lat,lon,altM) BAROMETER:hM``) and the per-file lat/lon order decision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.survey.cli import build_parser
from detector.survey.geo import MetricCRS
from detector.survey.report import flight_geojson, write_html
from detector.survey.telemetry import TelemetryParseError, parse_srt, parse_srt_text

FIXTURES = Path(__file__).parents[1] / "fixtures" / "dji-srt"
M300 = FIXTURES / "m300_style.SRT"  # written by us in the M300 shape (NOTES.md there)
DEFAULT_M300 = "both orders plausible; the Matrice 300 style writes latitude first (default)"


def _m300(gps: str, baro: str = "0.3M", blocks: int = 3) -> str:
    """M300-shaped blocks; the GPS line of block i is line 4 * i - 1."""
    return "\n".join(
        f"{i}\n00:00:00,{(i - 1) * 33:03d} --> 00:00:00,{i * 33:03d}\n"
        f"F/2.8, SS 1000.0, ISO 100, EV 0, GPS({gps}) BAROMETER:{baro}\n"
        for i in range(1, blocks + 1)
    )


@pytest.mark.parametrize(
    ("text", "given", "expected", "order", "reason", "warns"),
    [
        # the exact block from the issue: both orders plausible -> the M300 default, said in a warning
        (
            _m300("36.6146,-6.1120,0.0M", blocks=1),
            None,
            (36.6146, -6.1120, 0.3),
            "lat,lon",
            DEFAULT_M300,
            True,
        ),
        # lowercase unit, a real altitude in the GPS tuple
        (
            _m300("36.6146,-6.1120,58.4m", "12.5m"),
            None,
            (36.6146, -6.1120, 12.5),
            "lat,lon",
            DEFAULT_M300,
            True,
        ),
        # the values tell: a first value outside +-90 is a longitude (Beijing, longitude first)
        (
            _m300("116.4074,39.9042,43.2M", "12.0M"),
            None,
            (39.9042, 116.4074, 12.0),
            "lon,lat",
            "first value 116.4074 is outside ±90: longitude first",
            False,
        ),
        # ... and a second value outside +-90 is one too (latitude first, as the style's default)
        (
            _m300("39.9042,116.4074,43.2M", "12.0M"),
            None,
            (39.9042, 116.4074, 12.0),
            "lat,lon",
            "second value 116.4074 is outside ±90: latitude first",
            False,
        ),
        # stated both ways where the values cannot tell: the option decides, no warning
        (
            _m300("36.6146,-6.1120,0.0M"),
            "lat,lon",
            (36.6146, -6.1120, 0.3),
            "lat,lon",
            "--latlon-order lat,lon",
            False,
        ),
        (
            _m300("36.6146,-6.1120,0.0M"),
            "lon,lat",
            (-6.1120, 36.6146, 0.3),
            "lon,lat",
            "--latlon-order lon,lat",
            False,
        ),
        # stated and agreeing with the values
        (
            _m300("116.4074,39.9042,43.2M", "12.0M"),
            "lon,lat",
            (39.9042, 116.4074, 12.0),
            "lon,lat",
            "--latlon-order lon,lat; the data agree: first value 116.4074 is outside ±90: longitude first",
            False,
        ),
    ],
)
def test_m300_blocks_and_their_order(text, given, expected, order, reason, warns):
    tel = parse_srt_text(text, "m300.SRT", latlon_order=given)
    r = tel.records[0]
    assert tel.variant == "matrice300" and not tel.skipped
    assert (r.lat, r.lon, r.rel_alt_m) == pytest.approx(expected)
    assert r.altitude == (pytest.approx(expected[2]), "takeoff")  # BAROMETER: above the take-off point
    assert r.satellites is None  # the third GPS value is an altitude, never a satellite count
    assert tel.latlon_info() == {"order": order, "reason": reason}
    assert any("cannot be told" in w for w in tel.warnings) is warns


def test_m300_fixture_file_parses_into_a_climbing_track_near_jerez():
    tel = parse_srt(M300)
    assert tel.variant == "matrice300" and len(tel.records) == 12 and not tel.skipped
    assert tel.latlon_info() == {"order": "lat,lon", "reason": DEFAULT_M300}
    first = tel.records[0]
    assert (first.lat, first.lon, first.rel_alt_m, first.alt_m) == pytest.approx((36.6146, -6.1120, 0.3, 0.0))
    for r in tel.records:
        assert 36.614 <= r.lat <= 36.615 and -6.113 <= r.lon <= -6.111, (r.index, r.lat, r.lon)
    heights = [r.rel_alt_m for r in tel.records]
    assert heights == sorted(heights) and heights[-1] == pytest.approx(4.7)
    assert [r.start_s for r in tel.records[:3]] == pytest.approx([0.0, 0.033, 0.066])
    rec, why = tel.at(0.2)
    assert rec is not None, why


@pytest.mark.parametrize(
    ("path", "text", "given", "match"),
    [
        # Beijing written longitude first; lat,lon stated: block 1's GPS is on line 3
        (
            "beijing.SRT",
            _m300("116.4074,39.9042,43.2M"),
            "lat,lon",
            r"beijing\.SRT, line 3: GPS\(116\.4074, 39\.9042, \.\.\): first value 116\.4074 is outside ±90.*"
            r"Use --latlon-order lon,lat",
        ),
        # an old lon-first file (Queensland) with lat,lon stated: block 1's GPS is on line 4
        (
            "old_format.SRT",
            (FIXTURES / "old_format.SRT").read_text(),
            "lat,lon",
            r"old_format\.SRT, line 4: GPS\(149\.0251, -20\.2533, \.\.\).*Use --latlon-order lon,lat",
        ),
        # latitude first by the values (second value 116.4), lon,lat stated
        (
            "lat-first.SRT",
            _m300("39.9042,116.4074,43.2M"),
            "lon,lat",
            r"lat-first\.SRT, line 3: .*second value 116\.4074 is outside ±90.*Use --latlon-order lat,lon",
        ),
    ],
)
def test_a_stated_order_the_values_contradict_is_an_error_naming_file_and_line(
    tmp_path, path, text, given, match
):
    f = tmp_path / path
    f.write_text(text)
    with pytest.raises(TelemetryParseError, match=match):
        parse_srt(f, latlon_order=given)


@pytest.mark.parametrize("given", [None, "lon,lat"])
@pytest.mark.parametrize("name", ["old_format.SRT", "mavic_pro.SRT"])
def test_old_lon_first_files_parse_as_before(name, given):
    tel = parse_srt(FIXTURES / name, latlon_order=given)
    assert tel.latlon_order == "lon,lat" and len(tel.records) == 468 and not tel.warnings
    assert (tel.records[0].lat, tel.records[0].lon) == pytest.approx((-20.2533, 149.0251))
    assert tel.records[0].satellites == 16
    assert tel.latlon_reason.endswith("first value 149.0251 is outside ±90: longitude first")


def test_old_style_ambiguous_default_stays_longitude_first():
    text = "".join(
        f"{i}\n00:00:0{i},000 --> 00:00:0{i + 1},000\nGPS(2.1950,41.3983,12) BAROMETER:20.0\n\n"
        for i in range(1, 4)
    )
    tel = parse_srt_text(text, "old.SRT")
    assert (tel.records[0].lat, tel.records[0].lon) == pytest.approx((41.3983, 2.1950))
    assert tel.latlon_order == "lon,lat" and "longitude first (default)" in tel.latlon_reason
    assert any("cannot be told" in w and "--latlon-order lat,lon" in w for w in tel.warnings)


def test_one_corrupt_out_of_range_block_does_not_decide_the_order_of_a_file():
    text = M300.read_text().replace(
        "GPS(36.6147,-6.1120,0.0M) BAROMETER:1.9M", "GPS(116.4074,-6.1120,0.0M) BAROMETER:1.9M"
    )
    assert text != M300.read_text()
    tel = parse_srt_text(text, "m300.SRT")
    assert tel.latlon_order == "lat,lon" and tel.latlon_reason == DEFAULT_M300
    assert dict(tel.skipped) == {5: "position (116.4074, -6.112) is out of range"}
    assert any(
        "1 of 12 GPS/HOME value pairs fit only longitude first (e.g. line 19" in w for w in tel.warnings
    )


def test_survey_cli_takes_latlon_order_in_exactly_two_spellings(capsys):
    assert (
        build_parser().parse_args(["v.mp4", "--out", "o", "--latlon-order", "lat,lon"]).latlon_order
        == "lat,lon"
    )
    assert (
        build_parser().parse_args(["v.mp4", "--out", "o", "--latlon-order", "lon,lat"]).latlon_order
        == "lon,lat"
    )
    assert build_parser().parse_args(["v.mp4", "--out", "o"]).latlon_order is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["v.mp4", "--out", "o", "--latlon-order", "latlon"])
    assert "invalid choice" in capsys.readouterr().err


def test_flight_outputs_say_which_order_was_used_and_why(tmp_path):
    latlon = parse_srt(M300).latlon_info()
    crs = MetricCRS(36.6146, -6.1120)
    track = [(36.6146, -6.1120), (36.6148, -6.1119)]
    flight_geojson(tmp_path / "flight.geojson", track, [], crs, {"latlon_order": latlon})
    doc = json.loads((tmp_path / "flight.geojson").read_text())
    assert doc["features"][0]["properties"] == {"kind": "flight_path", "latlon_order": latlon}
    tx, ty = crs.to_xy([p[0] for p in track], [p[1] for p in track])
    write_html(
        tmp_path / "report.html", "t", [], np.stack([tx, ty], axis=1), [], crs, {"latlon_order": latlon}
    )
    page = (tmp_path / "report.html").read_text()
    assert (
        "read as <b>lat,lon</b>: both orders plausible; the Matrice 300 style writes latitude first" in page
    )


def test_a_stated_order_the_home_distance_contradicts_is_used_with_a_warning():
    tel = parse_srt(FIXTURES / "p4_rtk.SRT", latlon_order="lat,lon")
    assert tel.latlon_info() == {"order": "lat,lon", "reason": "--latlon-order lat,lon"}
    assert (tel.records[0].lat, tel.records[0].lon) == pytest.approx((-58.851745, -34.237922))
    assert any("D (distance from home) field fits lon,lat better" in w for w in tel.warnings)
