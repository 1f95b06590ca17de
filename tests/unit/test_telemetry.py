"""DJI SRT variants and photo EXIF/XMP: the right position per frame, or a clear error / warning."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from detector.survey.telemetry import (
    TelemetryError,
    TelemetryParseError,
    haversine_m,
    parse_srt,
    parse_srt_text,
    read_photo,
    read_photo_folder,
)

# DJI SRT samples from the DJI_SRT_Parser project (MIT licence, tests/fixtures/dji-srt/LICENSE)
FIXTURES = Path(__file__).parents[1] / "fixtures" / "dji-srt"
# Where each fixture was flown (known locations): Badalona (Spain), the Whitsunday region (Queensland,
# Australia) and the Buenos Aires province (Argentina). (lat range, lon range)
BADALONA = ((41.42, 41.43), (2.23, 2.24))
QUEENSLAND = ((-20.26, -20.25), (149.02, 149.03))
BUENOS_AIRES = ((-34.24, -34.23), (-58.86, -58.84))


@pytest.mark.parametrize(
    ("name", "variant", "count", "area", "first"),
    [
        ("air2s.srt", "air2s", 17, BADALONA, (41.424724, 2.234156)),
        ("mavic_2_style.SRT", "mavic2-style", 468, QUEENSLAND, (-20.2533, 149.0251)),
        ("mavic_pro.SRT", "mavic-pro", 468, QUEENSLAND, (-20.2533, 149.0251)),
        ("old_format.SRT", "old", 468, QUEENSLAND, (-20.2533, 149.0251)),
        ("p4_rtk.SRT", "phantom4-rtk", 55, BUENOS_AIRES, (-34.237922, -58.851745)),
    ],
)
def test_every_fixture_parses_into_per_frame_positions_at_its_known_location(
    name, variant, count, area, first
):
    tel = parse_srt(FIXTURES / name)
    assert tel.variant == variant
    assert len(tel.records) == count and not tel.skipped
    (lat0, lat1), (lon0, lon1) = area
    for r in tel.records:
        assert lat0 <= r.lat <= lat1 and lon0 <= r.lon <= lon1, (r.index, r.lat, r.lon)
    assert (tel.records[0].lat, tel.records[0].lon) == pytest.approx(first)
    # every record has a video time, so every video frame inside the flight can be placed
    assert all(r.start_s is not None for r in tel.records)
    rec, why = tel.at(tel.records[len(tel.records) // 2].start_s or 0.0)
    assert rec is not None, why


def test_fields_are_scaled_and_referenced_per_variant():
    air = parse_srt(FIXTURES / "air2s.srt").records[0]
    assert air.focal == pytest.approx(24.0)  # focal_len: 240 with fnum: 280 means 24 mm
    assert air.altitude == (117.0, "unknown")
    pro = parse_srt(FIXTURES / "mavic_pro.SRT").records[0]
    assert pro.altitude == (1.9, "takeoff") and pro.home == pytest.approx((-20.2532, 149.0251))
    assert pro.satellites == 16
    rtk = parse_srt(FIXTURES / "p4_rtk.SRT")
    r = rtk.records[0]
    assert r.altitude == (85.8, "takeoff")
    assert (r.gimbal_pitch, r.gimbal_roll, r.gimbal_yaw) == pytest.approx((-24.4, 0.0, 110.4))
    assert r.flight_yaw == pytest.approx(110.1)
    # the GPS tuple order was settled by the D (distance from home) field, not assumed
    assert rtk.latlon_order == "lon,lat" and not rtk.warnings
    assert haversine_m(r.lat, r.lon, *(r.home or (0, 0))) == pytest.approx(698.7, abs=5)


NEW = """1
00:00:00,000 --> 00:00:00,033
<font size="28">FrameCnt: 1, DiffTime: 33ms
2022-06-08 14:07:21.286
[iso: 100] [shutter: 1/640.0] [fnum: 1.7] [ev: 0] [color_md : default] [focal_len: 24.00] \
[latitude: 41.398367] [longitude: 2.195040] [rel_alt: 81.200 abs_alt: 139.467] \
[gb_yaw: -91.5 gb_pitch: -89.9 gb_roll: 0.0] [ct: 5467] </font>

2
00:00:00,033 --> 00:00:00,066
<font size="28">FrameCnt: 2, DiffTime: 33ms
2022-06-08 14:07:21.319
[iso: 100] [shutter: 1/640.0] [fnum: 1.7] [ev: 0] [color_md : default] [focal_len: 24.00] \
[latitude: 41.398369] [longitude: 2.195050] [rel_alt: 81.300 abs_alt: 139.567] \
[gb_yaw: -91.4 gb_pitch: -89.9 gb_roll: 0.0] [ct: 5467] </font>
"""


def test_new_format_with_gimbal_angles():
    tel = parse_srt_text(NEW, "new.SRT")
    assert tel.variant == "new" and len(tel.records) == 2
    r = tel.records[0]
    assert (r.lat, r.lon, r.rel_alt_m, r.abs_alt_m, r.focal) == pytest.approx(
        (41.398367, 2.195040, 81.2, 139.467, 24.0)
    )
    assert r.gimbal_pitch == pytest.approx(-89.9)
    mid, _ = tel.at(0.0165)  # half-way between the two blocks
    assert mid is not None and mid.lat == pytest.approx(41.398368) and mid.rel_alt_m == pytest.approx(81.25)
    assert mid.gimbal_yaw == pytest.approx(268.55)  # -91.5 and -91.4 averaged on the circle


def _old(gps: str, home: str) -> str:
    return "".join(
        f"{i}\n00:00:0{i},000 --> 00:00:0{i + 1},000\nHOME({home}) 2017.8.5 14:11:5{i}\n{gps} Hb:20.0\n\n"
        for i in range(1, 4)
    )


@pytest.mark.parametrize(
    ("gps", "home", "order", "expected", "warns"),
    [
        ("GPS(149.0251,-20.2533,16)", "149.0251,-20.2532", "lon,lat", (-20.2533, 149.0251), False),
        ("GPS(-20.2533,149.0251,16)", "-20.2532,149.0251", "lat,lon", (-20.2533, 149.0251), False),
        ("GPS(2.1950,41.3983,12)", "2.1951,41.3983", "lon,lat", (41.3983, 2.1950), True),  # ambiguous
    ],
)
def test_gps_tuple_order_is_told_from_ranges_or_said_to_be_assumed(gps, home, order, expected, warns):
    tel = parse_srt_text(_old(gps, home), "old.SRT")
    assert tel.latlon_order == order
    assert (tel.records[0].lat, tel.records[0].lon) == pytest.approx(expected)
    assert any("cannot be told" in w for w in tel.warnings) is warns
    assert (tel.records[0].lat, tel.records[0].lon) == pytest.approx(expected)


def test_stated_order_wins():
    tel = parse_srt_text(_old("GPS(41.3983,2.1950,12)", "41.3983,2.1951"), "old.SRT", latlon_order="lat,lon")
    assert (tel.records[0].lat, tel.records[0].lon) == pytest.approx((41.3983, 2.1950)) and not tel.warnings


@pytest.mark.parametrize("text", ["", "\n\n", "this is not a subtitle file\nat all\n"])
def test_empty_or_foreign_file_raises(text):
    with pytest.raises(TelemetryParseError):
        parse_srt_text(text, "bad.SRT")


def test_partial_and_corrupt_blocks_are_skipped_with_reasons_never_guessed():
    good = (FIXTURES / "mavic_pro.SRT").read_text().split("\n\n")
    blocks = good[:20]
    blocks[5] = blocks[5].replace("GPS(149.0251,-20.2533,16)", "GPS(0.0,0.0,0)")  # no fix
    blocks[9] = blocks[9].replace("GPS(149.0251,-20.2533,16)", "GPS(149.1251,-20.2533,16)")  # 10 km jump
    text = (
        "\n\n".join(blocks) + "\n\n21\n00:00:21,000 --> 00:00:22,000\nHOME(149.0251,-20.25"
    )  # cut by a kill
    tel = parse_srt_text(text, "cut.SRT")
    reasons = dict(tel.skipped)
    assert "no GPS fix" in reasons[6]
    assert "jumps away" in reasons[10]
    assert "no position" in reasons[21]
    assert len(tel.records) == 18
    assert any("skipped" in w for w in tel.warnings)
    rec, why = tel.at(60.0)
    assert rec is None and "shorter than the video" in why


def test_a_long_gap_in_the_telemetry_leaves_frames_unplaced():
    blocks = (FIXTURES / "mavic_pro.SRT").read_text().split("\n\n")
    tel = parse_srt_text("\n\n".join(blocks[:10] + blocks[40:50]), "gap.SRT")
    rec, why = tel.at(25.0)
    assert rec is None and "gap" in why
    assert tel.at(5.0)[0] is not None


# ------------------------------------------------------------------------------------------ photos
def _photo(path: Path, xmp: dict[str, str] | None, gps: tuple[float, float] | None) -> Path:
    from PIL import Image

    img = Image.new("RGB", (64, 48), (90, 120, 80))
    exif = Image.Exif()
    if gps is not None:

        def dms(v: float) -> tuple[float, float, float]:
            v = abs(v)
            d = int(v)
            m = int((v - d) * 60)
            return (float(d), float(m), (v - d - m / 60) * 3600)

        exif.get_ifd(0x8825).update(
            {1: "N" if gps[0] >= 0 else "S", 2: dms(gps[0]), 3: "E" if gps[1] >= 0 else "W", 4: dms(gps[1])}
        )
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 10:00:00"
    kwargs = {}
    if xmp is not None:
        attrs = " ".join(f'drone-dji:{k}="{v}"' for k, v in xmp.items())
        kwargs["xmp"] = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" '
            f"{attrs}/></rdf:RDF></x:xmpmeta>"
        ).encode()
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, **kwargs)
    path.write_bytes(buf.getvalue())
    return path


def test_photo_xmp_and_exif(tmp_path):
    xmp = {
        "GpsLatitude": "30.612",
        "GpsLongitude": "114.414",
        "RelativeAltitude": "+80.20",
        "AbsoluteAltitude": "+102.5",
        "GimbalPitchDegree": "-90.0",
        "GimbalYawDegree": "+45.3",
        "CalibratedFocalLength": "3666.67",
    }
    r = read_photo(_photo(tmp_path / "a.jpg", xmp, (30.0, 114.0)))
    assert (r.lat, r.lon) == pytest.approx((30.612, 114.414))  # XMP wins over EXIF
    assert (r.rel_alt_m, r.abs_alt_m, r.gimbal_yaw, r.gimbal_pitch) == pytest.approx(
        (80.2, 102.5, 45.3, -90.0)
    )
    assert r.focal_kind == "px" and r.focal == pytest.approx(3666.67) and r.focal_width_px == 64
    e = read_photo(_photo(tmp_path / "b.jpg", None, (-30.5, -60.25)))
    assert (e.lat, e.lon) == pytest.approx((-30.5, -60.25), abs=1e-6)
    assert e.rel_alt_m is None and e.time is not None


def test_photo_folder_lists_photos_that_cannot_be_placed(tmp_path):
    _photo(tmp_path / "DJI_0001.JPG", None, (30.5, 114.25))
    _photo(tmp_path / "DJI_0002.JPG", None, None)
    files, tel = read_photo_folder(tmp_path)
    assert len(files) == 2 and len(tel.records) == 1
    assert tel.skipped and "no GPS position" in tel.skipped[0][1]
    with pytest.raises(TelemetryError, match="no GPS position"):
        read_photo(tmp_path / "DJI_0002.JPG")
    (tmp_path / "DJI_0001.JPG").unlink()
    with pytest.raises(TelemetryParseError, match="none of the 1 photos"):
        read_photo_folder(tmp_path)
