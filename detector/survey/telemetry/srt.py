"""DJI ``.SRT`` subtitle telemetry, every variant in ``shared/fixtures/dji-srt``.

- new (Mini 3, Mavic 3): ``FrameCnt``, ``[latitude: ..] [longitude: ..] [rel_alt: x abs_alt: y]``,
  ``[focal_len: 24.00]`` (35 mm equivalent), sometimes ``[gb_yaw: .. gb_pitch: .. gb_roll: ..]``
- Air 2S: ``[latitude: ..] [longitude: ..] [altitude: ..]``, ``focal_len: 240`` and ``fnum: 280`` scaled
- Mavic 2 style: no time codes, ``[latitude : ..] [longtitude : ..]`` (sic)
- Phantom 4 RTK: ``GPS (lon, lat, sats)``, ``HOME (lon, lat, alt)``, ``H 85.80m``, ``F.PRY``/``G.PRY``
- old / Mavic Pro: ``HOME(lon,lat)``, ``GPS(lon,lat,sats)``, ``BAROMETER:h`` or ``Hb:h``
- Matrice 300 RTK: ``GPS(lat,lon,altM) BAROMETER:hM``, units glued to the numbers; the third GPS
  value is an altitude (kept as ``alt_m``, reference unknown), not a satellite count

The order of ``GPS(a, b, ..)`` / ``HOME(a, b)`` tuples is decided per file (:mod:`srt_order`): from
the values when they tell it, else ``latlon_order`` if given, else the ``D`` (distance from home)
field, else the default of the block style (Matrice 300: latitude first; older styles: longitude
first) with a warning; a stated order the values contradict raises. The order used and why are kept
in ``Telemetry.latlon_order`` / ``latlon_reason``. A block that cannot be read, has no GPS fix, or
jumps away from its neighbours is skipped with the reason; a file with no usable block raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from detector.survey.telemetry.model import (
    Telemetry,
    TelemetryParseError,
    TelemetryRecord,
    haversine_m,
)
from detector.survey.telemetry.srt_order import ORDERS, HomeSample, Pair, decide_order

_TIMECODE = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{1,3})\s*-->\s*(\d+):(\d{2}):(\d{2})[,.](\d{1,3})")
_TAG = re.compile(r"<[^>]*>")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*:\s*([-+]?\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|[A-Za-z_]\w*)")
_NUM = r"[-+]?\d+(?:\.\d+)?"
# the third GPS value: a satellite count, or with a glued unit (Matrice 300: ``0.0M``) an altitude
_GPS = re.compile(rf"GPS\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*(?:,\s*({_NUM})\s*(m)?\s*)?\)", re.I)
_HOME = re.compile(rf"HOME\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*(?:,\s*({_NUM})\s*m?\s*)?\)", re.I)
_PRY = re.compile(rf"\b([FG])\.PRY\s*\(\s*({_NUM})°?\s*,\s*({_NUM})°?\s*,\s*({_NUM})°?\s*\)", re.I)
_HEIGHT = [
    (re.compile(rf"BAROMETER\s*:\s*({_NUM})\s*m?\b", re.I), "takeoff"),
    (re.compile(rf"\bHb\s*:\s*({_NUM})"), "takeoff"),
    (re.compile(rf"(?:^|[\s,])H\s+({_NUM})\s*m\b"), "takeoff"),
]
_DIST = re.compile(rf"(?:^|[\s,])D\s+({_NUM})\s*m\b")
_DATE = re.compile(r"(\d{4})[-.](\d{1,2})[-.](\d{1,2})\s+(\d{1,2}):(\d{2}):(\d{2})(?:[,.](\d{1,3}))?")

_ALIASES = {
    "latitude": "lat",
    "lat": "lat",
    "longitude": "lon",
    "longtitude": "lon",  # DJI firmware misspelling
    "lon": "lon",
    "lng": "lon",
    "rel_alt": "rel_alt",
    "abs_alt": "abs_alt",
    "altitude": "alt",
    "focal_len": "focal",
    "fnum": "fnum",
    "gb_yaw": "gb_yaw",
    "gb_pitch": "gb_pitch",
    "gb_roll": "gb_roll",
    "framecnt": "frame",
    "srtcnt": "frame",
}
MAX_SPEED_MS = 40.0  # faster than any DJI drone: a jump beyond this (plus slack) is corrupt data


def _blocks(text: str) -> Iterable[list[tuple[int, str]]]:
    """Blank-line separated blocks of (1-based line number, stripped line)."""
    block: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            if block:
                yield block
            block = []
            continue
        block.append((number, line))
    if block:
        yield block


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0


def _date(text: str) -> datetime | None:
    m = _DATE.search(text)
    if m is None:
        return None
    y, mo, d, hh, mm, ss, ms = m.groups()
    try:
        return datetime(
            int(y), int(mo), int(d), int(hh), int(mm), int(ss), int((ms or "0").ljust(3, "0")) * 1000
        )
    except ValueError:
        return None


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for inner in _BRACKET.findall(text):
        for key, value in _PAIR.findall(inner):
            name = _ALIASES.get(key.lower())
            if name is not None:
                out.setdefault(name, value)
    for key, value in _PAIR.findall(_BRACKET.sub(" ", text)):
        name = _ALIASES.get(key.lower())
        if name == "frame":
            out.setdefault(name, value)
    return out


def _float(fields: dict[str, str], key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class _Block:
    """The raw values of one SRT block, before the file-level decisions (axis order, scaling)."""

    def __init__(self, number: int, lines: list[tuple[int, str]]) -> None:
        self.number = number
        self.start_s: float | None = None
        self.end_s: float | None = None
        first_line = lines[0][0] if lines else 0
        gps_line: int | None = None
        home_line: int | None = None
        body: list[str] = []
        for line_no, line in lines:
            m = _TIMECODE.search(line)
            if m and self.start_s is None:
                g = m.groups()
                self.start_s, self.end_s = _seconds(*g[:4]), _seconds(*g[4:])
                continue
            body.append(_TAG.sub(" ", line))
            if gps_line is None and _GPS.search(body[-1]):
                gps_line = line_no
            if home_line is None and _HOME.search(body[-1]):
                home_line = line_no
        self.gps_line = first_line if gps_line is None else gps_line  # for messages
        self.home_line = first_line if home_line is None else home_line
        self.text = " ".join(body)
        self.fields = _fields(self.text)
        self.time = _date(self.text)
        gps = _GPS.search(self.text)
        self.gps = None if gps is None else (float(gps[1]), float(gps[2]))
        self.gps_third = None if gps is None or gps[3] is None else float(gps[3])
        self.gps_alt_unit = gps is not None and gps[4] is not None  # Matrice 300: GPS(lat,lon,altM)
        home = _HOME.search(self.text)
        self.home = None if home is None else (float(home[1]), float(home[2]))
        self.pry = {m[1].upper(): (float(m[2]), float(m[3]), float(m[4])) for m in _PRY.finditer(self.text)}
        dist = _DIST.search(self.text)
        self.home_dist = None if dist is None else float(dist[1])
        self.height: float | None = None
        for pattern, _ref in _HEIGHT:
            hm = pattern.search(self.text)
            if hm:
                self.height = float(hm[1])
                break


def _variant(blocks: list[_Block]) -> str:
    sample = " ".join(b.text for b in blocks[:5])
    if "G.PRY" in sample or "F.PRY" in sample:
        return "phantom4-rtk"
    if any(b.gps_alt_unit for b in blocks):
        return "matrice300"
    if "GPS" in sample and "BAROMETER" in sample:
        return "mavic-pro"
    if "GPS" in sample:
        return "old"
    fields = blocks[0].fields if blocks else {}
    if "rel_alt" in fields or "abs_alt" in fields:
        return "new"
    if "alt" in fields:
        return "air2s"
    if "lat" in fields:
        return "mavic2-style"
    return "unknown"


def _order(blocks: list[_Block], given: str | None, variant: str, name: str) -> tuple[str, str, list[str]]:
    """Which way round ``GPS(a, b)`` / ``HOME(a, b)`` are ('lon,lat' or 'lat,lon'), why, and warnings."""
    pairs = [Pair(*b.gps, b.gps_line, "GPS") for b in blocks if b.gps is not None]
    pairs += [Pair(*b.home, b.home_line, "HOME") for b in blocks if b.home is not None]
    samples = [
        HomeSample(b.gps, b.home, b.home_dist)
        for b in blocks
        if b.gps is not None and b.home is not None and b.home_dist is not None
    ]
    decision = decide_order(pairs, samples, given, variant, name)
    return decision.order, decision.reason, list(decision.warnings)


def _record(b: _Block, order: str, scaled: bool) -> tuple[TelemetryRecord | None, str]:
    f = b.fields
    sats: int | None = None
    lat, lon = _float(f, "lat"), _float(f, "lon")
    if lat is None or lon is None:
        if b.gps is None:
            return None, "no position in the block"
        a, c = b.gps
        lon, lat = (a, c) if order == "lon,lat" else (c, a)
        if b.gps_third is not None and not b.gps_alt_unit:
            sats = int(b.gps_third)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None, f"position ({lat}, {lon}) is out of range"
    if lat == 0.0 and lon == 0.0:
        return None, "no GPS fix (0, 0)"
    if sats is not None and sats == 0:
        return None, "no GPS fix (0 satellites)"
    home = None
    if b.home is not None:
        home = (b.home[1], b.home[0]) if order == "lon,lat" else b.home
        if not (-90.0 <= home[0] <= 90.0 and -180.0 <= home[1] <= 180.0):
            home = None
    focal = _float(f, "focal")
    if focal is not None and scaled:
        focal /= 10.0
    gimbal = b.pry.get("G")
    flight = b.pry.get("F")
    rel = _float(f, "rel_alt")
    if rel is None and b.height is not None:
        rel = b.height
    return TelemetryRecord(
        index=b.number,
        lat=lat,
        lon=lon,
        start_s=b.start_s,
        end_s=b.end_s,
        time=b.time,
        rel_alt_m=rel,
        abs_alt_m=_float(f, "abs_alt"),
        alt_m=_float(f, "alt") if not b.gps_alt_unit else b.gps_third,
        focal=focal if focal and focal > 0 else None,
        focal_kind="35mm",
        gimbal_yaw=_float(f, "gb_yaw") if gimbal is None else gimbal[2] % 360.0,
        gimbal_pitch=_float(f, "gb_pitch") if gimbal is None else gimbal[0],
        gimbal_roll=_float(f, "gb_roll") if gimbal is None else gimbal[1],
        flight_yaw=None if flight is None else flight[2] % 360.0,
        home=home,
        satellites=sats,
        source=f"block {b.number}",
    ), ""


def _drop_jumps(records: list[TelemetryRecord], skipped: list[tuple[int, str]]) -> list[TelemetryRecord]:
    """Drop a record that lies far from both neighbours: a corrupt value, not a flight."""
    if len(records) < 3:
        return records
    keep: list[TelemetryRecord] = []
    for i, r in enumerate(records):
        ok = True
        neighbours = [records[j] for j in (i - 1, i + 1) if 0 <= j < len(records)]
        far = 0
        for n in neighbours:
            dt = abs((n.start_s or 0.0) - (r.start_s or 0.0)) if r.start_s is not None else 1.0
            limit = MAX_SPEED_MS * max(dt, 1.0) + 20.0
            if haversine_m(r.lat, r.lon, n.lat, n.lon) > limit:
                far += 1
        if far == len(neighbours):
            ok = False
            skipped.append((r.index, f"position ({r.lat:.6f}, {r.lon:.6f}) jumps away from its neighbours"))
        if ok:
            keep.append(r)
    return keep


def _fill_times(records: list[TelemetryRecord], warnings: list[str], name: str) -> list[TelemetryRecord]:
    """Blocks without time codes (Mavic 2 style): video time from the capture clock."""
    if not records or all(r.start_s is not None for r in records):
        return records
    if any(r.start_s is not None for r in records):
        warnings.append(f"{name}: some blocks have no time code; those blocks are not used")
        return [r for r in records if r.start_s is not None]
    t0 = records[0].time
    if t0 is None or any(r.time is None for r in records):
        warnings.append(f"{name}: no time codes and no capture clock; frames are matched by block number")
        return records
    out = []
    for r in records:
        start = (r.time - t0).total_seconds() if r.time is not None else 0.0
        out.append(_with_times(r, start))
    warnings.append(f"{name}: no time codes; video time taken from the capture clock of each block")
    return out


def _with_times(r: TelemetryRecord, start: float) -> TelemetryRecord:
    return replace(r, start_s=start, end_s=start + 1.0)


def parse_srt_text(text: str, name: str = "<srt>", latlon_order: str | None = None) -> Telemetry:
    """Parse SRT text; see the module docstring. Raises :class:`TelemetryParseError` if nothing is usable."""
    if latlon_order not in (None, *ORDERS):
        raise TelemetryParseError(f"latlon_order must be 'lat,lon' or 'lon,lat', got {latlon_order!r}")
    blocks: list[_Block] = []
    skipped: list[tuple[int, str]] = []
    for n, lines in enumerate(_blocks(text), start=1):
        head = lines[0][1]
        if not head.isdigit():
            skipped.append(
                (n, f"block {n} (line {lines[0][0]}) does not start with a block number: {head[:60]!r}")
            )
            continue
        blocks.append(_Block(int(head), lines[1:]))
    if not blocks:
        raise TelemetryParseError(
            f"{name}: no SRT blocks found; is this a DJI .SRT telemetry file (numbered blocks of text)?"
        )
    variant = _variant(blocks)
    warnings: list[str]
    if variant in ("new", "air2s", "mavic2-style"):  # latitude / longitude by name, no tuples
        order, reason, warnings = "lat,lon", "the file names latitude and longitude", []
    else:
        order, reason, warnings = _order(blocks, latlon_order, variant, name)
    scaled = any((_float(b.fields, "fnum") or 0.0) >= 100.0 for b in blocks[:5])
    records: list[TelemetryRecord] = []
    for b in blocks:
        rec, why = _record(b, order, scaled)
        if rec is None:
            skipped.append((b.number, why))
        else:
            records.append(rec)
    records = _drop_jumps(_fill_times(records, warnings, name), skipped)
    if not records:
        reasons = "; ".join(f"block {i}: {why}" for i, why in skipped[:3])
        raise TelemetryParseError(
            f"{name}: no block with a usable position ({len(skipped)} skipped: {reasons})"
        )
    if skipped:
        warnings.append(
            f"{name}: {len(skipped)} block(s) skipped, e.g. block {skipped[0][0]}: {skipped[0][1]}"
        )
    has_alt = any(r.altitude is not None for r in records)
    if not has_alt:
        warnings.append(
            f"{name}: no altitude in the telemetry; give the height above ground to geo-reference"
        )
    return Telemetry(Path(name), variant, records, skipped, warnings, order, latlon_reason=reason)


def parse_srt(path: str | Path, latlon_order: str | None = None) -> Telemetry:
    """Read and parse a DJI ``.SRT`` file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TelemetryParseError(f"cannot read telemetry file {p}: {exc}") from exc
    text = raw.decode("utf-8", errors="replace")
    if "\x00" in text:
        text = raw.decode("utf-16", errors="replace") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else text
    tel = parse_srt_text(text, p.name, latlon_order)
    tel.path = p
    return tel
