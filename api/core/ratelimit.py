"""Token buckets for the public routes' quotas (requests and bytes, per key and per address).

A quota is written ``AMOUNT/PERIOD``: ``20/h`` (20 requests an hour), ``50MiB/h`` (bytes),
``600/min``; ``0`` or ``off`` turns it off. A bucket holds ``AMOUNT`` and refills at
``AMOUNT / PERIOD`` per second, so a quota allows a burst of its whole amount and then its
average rate. Buckets live in the memory of one API process: with several API workers each
keeps its own, and a caller gets up to ``workers x AMOUNT`` (see SECURITY.md). At most
``max_tracked`` buckets are kept; the least recently used (a full one, in practice) go first.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_PERIODS = {"S": 1.0, "MIN": 60.0, "H": 3600.0, "D": 86400.0}
_QUOTA_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*/\s*(\d+(?:\.\d+)?)?\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True, slots=True)
class Quota:
    amount: int
    period_s: float

    @property
    def rate(self) -> float:
        return self.amount / self.period_s

    def __str__(self) -> str:
        return f"{self.amount}/{self.period_s:g}s"


def parse_quota(text: str) -> Quota | None:
    """``"20/h"`` -> Quota(20, 3600); ``"50MiB/h"`` -> bytes; ``"0"`` / ``"off"`` -> None (no limit).
    Raises ``ValueError`` naming the accepted forms."""
    if text.strip().lower() in ("0", "off", "none"):
        return None
    match = _QUOTA_RE.match(text)
    unit = match.group(2).upper() if match else ""
    period_unit = match.group(4).upper() if match else ""
    if match is None or unit not in _UNITS or (period_unit and period_unit not in _PERIODS):
        raise ValueError(
            f"quota {text!r} is not AMOUNT/PERIOD, e.g. 20/h, 600/min, 50MiB/h, 3600/86400 (or 0 / off)"
        )
    count, digits = int(match.group(1)), match.group(3)
    if not digits and not period_unit:
        raise ValueError(f"quota {text!r} needs a period after the slash: s, min, h, d or seconds")
    period = float(digits or 1) * _PERIODS.get(period_unit, 1.0)
    if count <= 0 or period <= 0:
        raise ValueError(f"quota {text!r}: amount and period must be positive (0 / off: no limit)")
    return Quota(count * _UNITS[unit], period)


def client_subject(host: str) -> str:
    """The address a per-address quota counts: IPv4 as is, IPv6 by its /64 (one subscriber's
    prefix), anything else (a Unix socket, a test client) as given."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class Charge:
    """Take ``amount`` from the bucket ``(name, subject)`` of ``quota``."""

    name: str
    subject: str
    quota: Quota | None
    amount: float = 1.0


class RateLimiter:
    """Token buckets keyed by ``(name, subject)``; thread-safe (routes run in a thread pool)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_tracked: int = 100_000) -> None:
        self.clock = clock
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def _level(self, key: tuple[str, str], quota: Quota, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(quota.amount), now))
        return min(float(quota.amount), tokens + (now - at) * quota.rate)

    def take(self, charges: Sequence[Charge]) -> int:
        """Take every charge, or none of them. Returns 0 when taken, else the seconds to wait
        (``Retry-After``) until the emptiest bucket could pay."""
        now = self.clock()
        with self._lock:
            wait = 0.0
            levels: list[tuple[tuple[str, str], float]] = []
            for c in charges:
                if c.quota is None or c.amount <= 0:
                    continue
                key = (c.name, c.subject)
                level = self._level(key, c.quota, now)
                if c.amount > c.quota.amount:  # more than the bucket ever holds
                    wait = max(wait, c.quota.period_s)
                elif level < c.amount:
                    wait = max(wait, (c.amount - level) / c.quota.rate)
                levels.append((key, level - c.amount))
            if wait > 0:
                return max(1, math.ceil(wait))
            for key, level in levels:
                self._buckets[key] = (level, now)
                self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
            return 0

    def tracked(self) -> int:
        return len(self._buckets)
