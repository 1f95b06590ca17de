"""DJI ``.SRT`` subtitle telemetry, every variant in ``shared/fixtures/dji-srt``.

- new (Mini 3, Mavic 3): ``FrameCnt``, ``[latitude: ..] [longitude: ..] [rel_alt: x abs_alt: y]``,
  ``[focal_len: 24.00]`` (35 mm equivalent), sometimes ``[gb_yaw: .. gb_pitch: .. gb_roll: ..]``
- Air 2S: ``[latitude: ..] [longitude: ..] [altitude: ..]``, ``focal_len: 240`` and ``fnum: 280`` scaled
- Mavic 2 style: no time codes, ``[latitude : ..] [longtitude : ..]`` (sic)
- Phantom 4 RTK: ``GPS (lon, lat, sats)``, ``HOME (lon, lat, alt)``, ``H 85.80m``, ``F.PRY``/``G.PRY``
- old / Mavic Pro: ``HOME(lon,lat)``, ``GPS(lon,lat,sats)``, ``BAROMETER:h`` or ``Hb:h``

``GPS(a, b, ...)`` tuples are longitude first on DJI firmware, but some firmware writes latitude
first: a value outside +-90 settles the order, otherwise longitude first is assumed and said in a
warning (pass ``latlon_order`` to state it). A block that cannot be read, has no GPS fix, or jumps
away from its neighbours is skipped with the reason; a file with no usable block raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from detector.telemetry.model import (
    Telemetry,
    TelemetryParseError,
    TelemetryRecord,
    haversine_m,
)

_TIMECODE = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{1,3})\s*-->\s*(\d+):(\d{2}):(\d{2})[,.](\d{1,3})")
_TAG = re.compile(r"<[^>]*>")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*:\s*([-+]?\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|[A-Za-z_]\w*)")
_NUM = r"[-+]?\d+(?:\.\d+)?"
_GPS = re.compile(rf"GPS\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*(?:,\s*({_NUM})\s*)?\)", re.I)
_HOME = re.compile(rf"HOME\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*(?:,\s*({_NUM})\s*m?\s*)?\)", re.I)
_PRY = re.compile(rf"\b([FG])\.PRY\s*\(\s*({_NUM})°?\s*,\s*({_NUM})°?\s*,\s*({_NUM})°?\s*\)", re.I)
_HEIGHT = [
    (re.compile(rf"BAROMETER\s*:\s*({_NUM})", re.I), "takeoff"),
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


def _blocks(text: str) -> Iterable[list[str]]:
    block: list[str] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if not line:
            if block:
                yield block
            block = []
            continue
        block.append(line)
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

    def __init__(self, number: int, lines: list[str]) -> None:
        self.number = number
        self.start_s: float | None = None
        self.end_s: float | None = None
        body: list[str] = []
        for line in lines:
            m = _TIMECODE.search(line)
            if m and self.start_s is None:
                g = m.groups()
                self.start_s, self.end_s = _seconds(*g[:4]), _seconds(*g[4:])
            else:
                body.append(_TAG.sub(" ", line))
        self.text = " ".join(body)
        self.fields = _fields(self.text)
        self.time = _date(self.text)
        gps = _GPS.search(self.text)
        self.gps = None if gps is None else (float(gps[1]), float(gps[2]), None if gps[3] is None else gps[3])
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


def _tuple_order(blocks: list[_Block], given: str | None, warnings: list[str], name: str) -> str:
    """Which way round ``GPS(a, b)`` / ``HOME(a, b)`` are: 'lon,lat' or 'lat,lon'."""
    if given is not None:
        return given
    pairs = [b.gps[:2] for b in blocks if b.gps] + [b.home for b in blocks if b.home]
    pairs = [p for p in pairs if p is not None and (p[0], p[1]) != (0.0, 0.0)]
    if any(abs(a) > 90 for a, _ in pairs):
        return "lon,lat"
    if any(abs(b) > 90 for _, b in pairs):
        return "lat,lon"
    by_distance = _order_from_home_distance(blocks)
    if by_distance is not None:
        return by_distance
    if pairs:
        warnings.append(
            f"{name}: GPS(a, b) values are all within +-90, so the order cannot be told from the values; "
            "assumed longitude first (the DJI convention). If positions look wrong, "
            "pass latlon_order='lat,lon'"
        )
    return "lon,lat"


def _order_from_home_distance(blocks: list[_Block]) -> str | None:
    """The order under which GPS-to-HOME distances match the ``D`` (distance from home) field."""
    err = {"lon,lat": 0.0, "lat,lon": 0.0}
    used = 0
    for b in blocks:
        if b.gps is None or b.home is None or b.home_dist is None or b.home_dist < 50:
            continue
        a, c, _ = b.gps
        h1, h2 = b.home
        err["lon,lat"] += abs(haversine_m(c, a, h2, h1) - b.home_dist)
        err["lat,lon"] += abs(haversine_m(a, c, h1, h2) - b.home_dist)
        used += 1
    if used < 3:
        return None
    best, other = sorted(err, key=lambda k: err[k])
    return best if err[other] > 2 * err[best] + 5.0 * used else None


def _record(b: _Block, order: str, scaled: bool) -> tuple[TelemetryRecord | None, str]:
    f = b.fields
    sats: int | None = None
    lat, lon = _float(f, "lat"), _float(f, "lon")
    if lat is None or lon is None:
        if b.gps is None:
            return None, "no position in the block"
        a, c, s = b.gps
        lon, lat = (a, c) if order == "lon,lat" else (c, a)
        sats = int(float(s)) if s is not None else None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None, f"position ({lat}, {lon}) is out of range"
    if lat == 0.0 and lon == 0.0:
        return None, "no GPS fix (0, 0)"
    if sats is not None and sats == 0:
        return None, "no GPS fix (0 satellites)"
    home = None
    if b.home is not None:
        home = (b.home[1], b.home[0]) if order == "lon,lat" else b.home
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
        alt_m=_float(f, "alt"),
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
    if latlon_order not in (None, "lat,lon", "lon,lat"):
        raise TelemetryParseError(f"latlon_order must be 'lat,lon' or 'lon,lat', got {latlon_order!r}")
    blocks: list[_Block] = []
    skipped: list[tuple[int, str]] = []
    for n, lines in enumerate(_blocks(text), start=1):
        number = int(lines[0]) if lines[0].isdigit() else -n
        if lines[0].isdigit():
            lines = lines[1:]
        if number < 0:
            skipped.append((n, f"block {n} does not start with a block number: {lines[0][:60]!r}"))
            continue
        blocks.append(_Block(number, lines))
    if not blocks:
        raise TelemetryParseError(
            f"{name}: no SRT blocks found; is this a DJI .SRT telemetry file (numbered blocks of text)?"
        )
    warnings: list[str] = []
    variant = _variant(blocks)
    order = _tuple_order(blocks, latlon_order, warnings, name)
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
    return Telemetry(
        Path(name),
        variant,
        records,
        skipped,
        warnings,
        "lat,lon" if variant in ("new", "air2s", "mavic2-style") else order,
    )


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
