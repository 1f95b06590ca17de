"""Which node runs which stream: cost of a stream, capacity of a node, and a spread that moves little.

Pure functions (no Ray here): :mod:`detector.fleet.driver` feeds them what Ray says about the nodes.

A stream's **cost** is an estimate, in CPU cores, of what it keeps busy: decoding what it samples
(megapixels decoded per second) and one inference per sample and model. What it decodes is the
declared ``resolution`` of the stream it decodes (``detect_url``'s substream when set), by default
1920x1080 for a main stream and 640x360 for a substream. A stream sampled every few seconds decodes
key frames only (the detector's ``keyframes`` decode mode), a fast one every frame. Each sample adds
the tracker, rules and evidence (``SAMPLE_CORE_S``). A node's
**capacity** is its CPU count, plus ``GPU_CORES`` per GPU (inference there costs a core little).

:func:`spread` keeps every stream where it runs while its node lives, gives the streams of a node
that left (and new streams) to the least loaded nodes, heaviest first, and then moves streams from
the most to the least loaded node only while that lowers the highest load: a node joining takes over
a share, and no other stream moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from detector.config import StreamConfig

#: core-seconds to decode one megapixel of H.264 and convert it (a 1080p key frame: ~16 ms decoding + 5 ms
#: converting on one core, README "Streams"); bench/fleet.py compares the whole cost with what nodes use
DECODE_CORE_S_PER_MP = 0.010
#: core-seconds of one inference of one model (YOLOv8n-class at 640 px, OpenVINO / ONNX Runtime on CPU)
INFER_CORE_S = 0.025
#: core-seconds of the rest of a sample: tracker, rules, evidence and events
SAMPLE_CORE_S = 0.005
#: frames per second a camera sends when nothing says otherwise
CAMERA_FPS = 25.0
#: at or above this sample interval the detector decodes key frames only (a GOP is 1-2 s on cameras)
KEYFRAMES_FROM_S = 2.0
#: what a GPU adds to a node's capacity, in cores: inference leaves the CPU
GPU_CORES = 8.0
MAIN_DEFAULT = (1920, 1080)
SUB_DEFAULT = (640, 360)
EPS = 1e-9  # loads are sums of floats: a move must lower the highest load by more than this


class PlanError(ValueError):
    """The streams cannot be placed (no node)."""


def decoded_size(stream: StreamConfig) -> tuple[int, int]:
    """The declared resolution of what the detector decodes for ``stream``."""
    if stream.resolution is not None:
        w, h = stream.resolution.split("x")
        return int(w), int(h)
    return SUB_DEFAULT if stream.detect_url else MAIN_DEFAULT


def stream_cost(stream: StreamConfig, models: int = 1) -> float:
    """Cores ``stream`` keeps busy (an estimate from what the config declares)."""
    w, h = decoded_size(stream)
    rate = 1.0 / stream.sample_interval_s
    decoded_fps = rate if stream.sample_interval_s >= KEYFRAMES_FROM_S else max(rate, CAMERA_FPS)
    decode = decoded_fps * (w * h / 1e6) * DECODE_CORE_S_PER_MP
    return decode + rate * (SAMPLE_CORE_S + INFER_CORE_S * max(1, models))


def node_capacity(resources: Mapping[str, float]) -> float:
    """Cores a node offers, from Ray's resources of that node (``CPU``, ``GPU``)."""
    return float(resources.get("CPU", 0.0)) + GPU_CORES * float(resources.get("GPU", 0.0))


@dataclass(frozen=True)
class Spread:
    """The placement: stream → node, and which streams moved (from → to; from None: newly placed)."""

    assignment: dict[str, str]
    moves: dict[str, tuple[str | None, str]]

    def load(self, costs: Mapping[str, float], node: str) -> float:
        return sum(costs[s] for s, n in self.assignment.items() if n == node)


def spread(
    costs: Mapping[str, float],
    capacity: Mapping[str, float],
    current: Mapping[str, str] | None = None,
    *,
    rebalance: bool = True,
) -> Spread:
    """Place every stream of ``costs`` on a node of ``capacity`` (node → cores), moving as few as it can.

    ``current`` (stream → node) is kept for streams whose node is still in ``capacity``. ``rebalance``
    (a node joined): then move streams from the most to the least loaded node while that lowers the
    highest load; without it only the streams without a living node move."""
    nodes = {n: c for n, c in capacity.items() if c > 0}
    if costs and not nodes:
        raise PlanError("no node to run streams on: every node left, or none offers a CPU")
    current = dict(current or {})
    assignment = {s: n for s, n in current.items() if s in costs and n in nodes}
    load = {n: 0.0 for n in nodes}
    for s, n in assignment.items():
        load[n] += costs[s]

    def ratio(n: str, extra: float = 0.0) -> float:
        return (load[n] + extra) / nodes[n]

    moves: dict[str, tuple[str | None, str]] = {}
    for s in sorted(set(costs) - set(assignment), key=lambda s: (-costs[s], s)):
        n = min(nodes, key=lambda n: (ratio(n, costs[s]), n))
        assignment[s] = n
        load[n] += costs[s]
        moves[s] = (current.get(s), n)

    def move(s: str, src: str, dst: str) -> None:
        assignment[s] = dst
        load[src] -= costs[s]
        load[dst] += costs[s]

    # Rebalance: move one stream at a time from the most to the least loaded node while that lowers the most
    # loaded node's load. Then undo the moves made after the last one that lowered the highest load of all:
    # with several nodes tied at the top, moving off some of them only moves streams for nothing.
    history: list[tuple[str, str, str]] = []  # (stream, from, to)
    top, useful = max((ratio(n) for n in nodes), default=0.0), 0
    for _ in range(len(costs) * len(nodes) if rebalance else 0):  # each move lowers the loads, highest first
        hi = max(nodes, key=lambda n: (ratio(n), n))
        lo = min(nodes, key=lambda n: (ratio(n), n))
        best: tuple[float, str] | None = None
        for s in (s for s, n in assignment.items() if n == hi):
            after = max((load[hi] - costs[s]) / nodes[hi], ratio(lo, costs[s]))
            if after < ratio(hi) - EPS and (best is None or (after, s) < best):
                best = (after, s)
        if best is None:
            break
        move(best[1], hi, lo)
        history.append((best[1], hi, lo))
        if (now := max(ratio(n) for n in nodes)) < top - EPS:
            top, useful = now, len(history)
    for s, src, dst in reversed(history[useful:]):
        move(s, dst, src)
    for s, src, dst in history[:useful]:
        moves[s] = (moves[s][0] if s in moves else src, dst)
    moves = {s: m for s, m in moves.items() if m[0] != m[1]}
    return Spread(assignment, moves)
