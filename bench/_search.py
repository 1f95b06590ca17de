"""The count search of ``bench/capacity.py``: the largest count a mode sustains, in few probes."""

from __future__ import annotations

from collections.abc import Callable, Generator


def counts(start: int, step: float, max_probes: int) -> Generator[int, bool, int]:
    """The counts to probe, each sent whether it was sustained; returns the largest sustained one.
    Grows by ``step`` from ``start`` while sustained, else shrinks (a count that failed is not probed
    again)."""
    best, n, tried, failed = 0, start, 0, float("inf")
    while tried < max_probes and 1 <= n < failed:
        ok = yield n
        tried += 1
        if ok:
            best = max(best, n)
            n = max(n + 1, round(n * step))
        else:
            if best:
                break
            failed = n
            n = max(1, round(n / step)) if n > 1 else 0
    return best


def take_turns(
    starts: dict[str, int], step: float, max_probes: int, probe: Callable[[str, int], bool]
) -> dict[str, int]:
    """Search several modes with their probes taking turns, so a busy spell of a shared box hits every
    mode alike; the largest sustained count of each. ``probe(mode, count)`` says whether it held."""
    gens = {mode: counts(start, step, max_probes) for mode, start in starts.items()}
    best: dict[str, int] = {}
    pending: dict[str, int] = {}
    for mode, gen in gens.items():
        try:
            pending[mode] = next(gen)
        except StopIteration as stop:
            best[mode] = stop.value
    while pending:
        for mode in list(pending):
            try:
                pending[mode] = gens[mode].send(probe(mode, pending[mode]))
            except StopIteration as stop:
                best[mode] = stop.value
                del pending[mode]
    return best
