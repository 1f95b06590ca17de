"""Free text in and out of the case API.

In (``clean_text``, ``clean_line``): every free-text field of a request or a camera message is
cleaned before it is checked against its length limit and stored. Removed: C0 control characters
other than tab and the line breaks (LF, CR, VT, FF, NEL), DEL, C1 controls, lone surrogates, Unicode
noncharacters (U+FDD0..U+FDEF and the last two code points of every plane, U+FFFE / U+FFFF
among them), U+FEFF and the bidirectional embedding / override / isolate controls (U+202A..U+202E,
U+2066..U+2069: "Trojan Source", CVE-2021-42574, lets a note read differently from what it says).
Then the text is put in Unicode NFC and trimmed. A multi-line field (descriptions, notes) keeps
tabs and line breaks, each line break made ``\\n``; a single-line field (names, addresses, grid,
road, unit) turns every run of tabs and line breaks into one space. Emoji (ZWJ sequences too),
right-to-left scripts and the LRM / RLM marks pass unchanged.

Out: ``xml_text`` drops what XML 1.0 cannot carry (its ``Char`` production), so text stored
before these rules, or written to the database by hand, still gives a document a parser reads;
``csv_cell`` defuses a spreadsheet formula (OWASP "CSV injection"); ``json_safe`` replaces lone
surrogates, which a 422 answer would otherwise echo and fail to encode.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
_DROP = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f"  # C0 and C1 but the line breaks and tab; DEL
    "\ud800-\udfff"  # surrogates: in a Python str only ever lone ones
    "\u202a-\u202e\u2066-\u2069\ufeff" + _NONCHARACTERS + "]"
)
_LINE_BREAK = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
_LINE_SPACE = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet reads a cell that starts with one of these as a formula (OWASP)."""


def clean_text(text: str) -> str:
    """A multi-line free-text field (a description, a note): see the module's docstring."""
    text = unicodedata.normalize("NFC", _DROP.sub("", text))
    return _LINE_BREAK.sub("\n", text).strip()


def clean_line(text: str) -> str:
    """A single-line free-text field (a name, an address, a grid): line breaks and tabs become
    one space."""
    text = unicodedata.normalize("NFC", _DROP.sub("", text))
    return _LINE_SPACE.sub(" ", text).strip()


def clean_optional_line(text: str | None) -> str | None:
    return None if text is None else clean_line(text)


def text_input(value: Any) -> Any:
    """``clean_text`` as a pydantic "before" validator: anything but a string is left to the type."""
    return clean_text(value) if isinstance(value, str) else value


def line_input(value: Any) -> Any:
    """``clean_line`` as a pydantic "before" validator."""
    return clean_line(value) if isinstance(value, str) else value


def xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (controls, lone surrogates, U+FFFE,
    U+FFFF); escaping ``<``, ``&`` and ``>`` is the XML writer's business."""
    return _NOT_XML.sub("", text)


def json_safe(value: Any) -> Any:
    """``value`` (JSON-shaped) with each lone surrogate in its strings, keys too, made U+FFFD: UTF-8
    cannot encode one, so an answer that echoes one (``json.loads`` lets ``"\\ud800"`` through)
    would fail with a 500. Likewise a NaN or an infinity (``json.loads`` takes ``NaN``, ``Infinity``)
    becomes the string ``"nan"`` / ``"inf"`` / ``"-inf"``: strict JSON has no such number."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading ``'`` (OWASP CSV
    injection); numbers and other values are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
