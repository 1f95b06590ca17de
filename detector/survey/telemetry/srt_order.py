"""Which way round the ``GPS(a, b, ..)`` / ``HOME(a, b)`` tuples of one DJI ``.SRT`` file are, and why.

DJI firmware disagrees: the old, Mavic Pro and Phantom 4 RTK styles write ``GPS(lon, lat, sats)``,
the Matrice 300 style writes ``GPS(lat, lon, altM)``. The order is decided once per file:

1. from the values: a value outside +-90 can only be a longitude. The values tell the order when
   such pairs all (or mostly) point one way and make up at least half of the file's pairs; a few
   out-of-range pairs among pairs that fit both orders are corrupt blocks, not evidence (they are
   not used, with a warning). A stated ``latlon_order`` the values contradict is an error naming
   the file and line and the order to use;
2. else from ``latlon_order`` (``--latlon-order``) when given (if the ``D`` field fits the other
   order better, a warning says so);
3. else from the ``D`` (distance from home) field, when the GPS-to-HOME distances fit one order only;
4. else the default of the block style, with a warning that the order was assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detector.survey.telemetry.model import TelemetryParseError, haversine_m

LON_LAT = "lon,lat"
LAT_LON = "lat,lon"
ORDERS = (LAT_LON, LON_LAT)
_FIRST = {LON_LAT: "longitude first", LAT_LON: "latitude first"}
STYLE_DEFAULT = {  # block style -> (order when the values cannot tell, why)
    "matrice300": (LAT_LON, "the Matrice 300 style writes latitude first"),
    "phantom4-rtk": (LON_LAT, "the Phantom 4 RTK style GPS (lon, lat, sats) writes longitude first"),
    "mavic-pro": (LON_LAT, "the old DJI style GPS(lon,lat,sats) writes longitude first"),
    "old": (LON_LAT, "the old DJI style GPS(lon,lat,sats) writes longitude first"),
}


@dataclass(frozen=True)
class Pair:
    """One ``GPS(a, b, ..)`` or ``HOME(a, b)`` tuple as written, and where."""

    a: float
    b: float
    line: int  # 1-based line in the file
    what: str  # "GPS" or "HOME"

    def fits(self) -> str | None:
        """The only order these values allow, '' when both fit, None when neither does."""
        fa, fb = abs(self.a), abs(self.b)
        if fa <= 90.0 and fb <= 90.0:
            return ""
        if 90.0 < fa <= 180.0 and fb <= 90.0:
            return LON_LAT
        if 90.0 < fb <= 180.0 and fa <= 90.0:
            return LAT_LON
        return None

    def why(self) -> str:
        where = "" if self.what == "GPS" else " of the HOME point"
        if self.fits() == LON_LAT:
            return f"first value {self.a}{where} is outside ±90: longitude first"
        return f"second value {self.b}{where} is outside ±90: latitude first"


@dataclass(frozen=True)
class HomeSample:
    """A block with GPS, HOME and ``D`` (distance from home, metres), for the distance check."""

    gps: tuple[float, float]
    home: tuple[float, float]
    dist_m: float


@dataclass(frozen=True)
class OrderDecision:
    order: str
    reason: str
    warnings: tuple[str, ...] = ()


def _by_values(pairs: Sequence[Pair]) -> tuple[str | None, dict[str, list[Pair]], int]:
    """The order the values tell (or None), the pairs that fit only one order, and how many pairs."""
    only: dict[str, list[Pair]] = {LAT_LON: [], LON_LAT: []}
    usable = 0
    for p in pairs:
        if (p.a, p.b) == (0.0, 0.0):
            continue  # no fix
        fit = p.fits()
        if fit is None:
            continue  # fits neither order: skipped later as out of range
        usable += 1
        if fit:
            only[fit].append(p)
    lat_n, lon_n = len(only[LAT_LON]), len(only[LON_LAT])
    best = LON_LAT if lon_n > lat_n else LAT_LON if lat_n > lon_n else None
    if best is not None and 2 * len(only[best]) < usable:
        best = None  # a few out-of-range values among pairs that fit both orders: corrupt blocks
    return best, only, usable


def order_from_home_distance(samples: Sequence[HomeSample]) -> str | None:
    """The order under which GPS-to-HOME distances match the ``D`` field, if only one does."""
    err = {LON_LAT: 0.0, LAT_LON: 0.0}
    used = 0
    for s in samples:
        if s.dist_m < 50:
            continue
        (a, c), (h1, h2) = s.gps, s.home
        err[LON_LAT] += abs(haversine_m(c, a, h2, h1) - s.dist_m)
        err[LAT_LON] += abs(haversine_m(a, c, h1, h2) - s.dist_m)
        used += 1
    if used < 3:
        return None
    best, other = sorted(err, key=lambda k: err[k])
    return best if err[other] > 2 * err[best] + 5.0 * used else None


def _contradiction(name: str, given: str, told: str, p: Pair) -> TelemetryParseError:
    return TelemetryParseError(
        f"{name}, line {p.line}: {p.what}({p.a}, {p.b}, ..): {p.why()}, but --latlon-order {given} "
        f"(latlon_order={given!r}) says {_FIRST[given]}. Use --latlon-order {told}, or leave the option "
        "out to decide from the data"
    )


def decide_order(
    pairs: Sequence[Pair],
    samples: Sequence[HomeSample],
    given: str | None,
    style: str,
    name: str,
) -> OrderDecision:
    """Decide the tuple order of one file; see the module docstring."""
    if given is not None and given not in ORDERS:
        raise TelemetryParseError(f"latlon_order must be 'lat,lon' or 'lon,lat', got {given!r}")
    told, only, usable = _by_values(pairs)
    warnings: list[str] = []
    if given is not None and told is not None and given != told:
        raise _contradiction(name, given, told, only[told][0])
    if told is not None:
        order = told
        reason = only[told][0].why()
    else:
        by_distance = order_from_home_distance(samples)
        default, default_why = STYLE_DEFAULT.get(style, (LON_LAT, "DJI writes longitude first"))
        if given is not None:
            order, reason = given, f"--latlon-order {given}"
            if by_distance is not None and by_distance != given:
                warnings.append(
                    f"{name}: the D (distance from home) field fits {by_distance} better than "
                    f"--latlon-order {given}; if positions look wrong, leave the option out"
                )
        elif by_distance is not None:
            order = by_distance
            reason = f"GPS-to-HOME distances match the D field only with {_FIRST[order]}"
        else:
            order, reason = default, f"both orders plausible; {default_why} (default)"
            if usable:
                other = LAT_LON if order == LON_LAT else LON_LAT
                warnings.append(
                    f"{name}: GPS(a, b) values are all within ±90, so the order cannot be told from the "
                    f"values; assumed {_FIRST[order]} ({default_why}). If positions look wrong, pass "
                    f"--latlon-order {other} (latlon_order={other!r})"
                )
    if given is not None and told == given:
        reason = f"--latlon-order {given}; the data agree: {reason}"
    for other, odd in only.items():
        if other != order and odd:
            warnings.append(
                f"{name}: {len(odd)} of {usable} GPS/HOME value pairs fit only {_FIRST[other]} "
                f"(e.g. line {odd[0].line}: {odd[0].why()}); read {_FIRST[order]} they are out of "
                "range and not used (a block whose GPS is out of range is skipped)"
            )
    return OrderDecision(order, reason, tuple(warnings))
