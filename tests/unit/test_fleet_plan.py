"""Which node runs which stream (detector/fleet/plan.py): a stream's declared cost, a node's capacity, and
the spread that keeps streams where they run and moves as few as it can. Pure functions; no Ray. Also the
``resolution`` field the cost reads (detector/config/schema.py)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from detector.config import StreamConfig, load_config_text
from detector.config.errors import ConfigError
from detector.fleet.plan import (
    CAMERA_FPS,
    DECODE_CORE_S_PER_MP,
    GPU_CORES,
    INFER_CORE_S,
    SAMPLE_CORE_S,
    PlanError,
    Spread,
    decoded_size,
    node_capacity,
    spread,
    stream_cost,
)

MAIN = "rtsp://cam.example/main"
SUB = "rtsp://cam.example/sub"


def stream(**fields: Any) -> StreamConfig:
    return StreamConfig.model_validate({"id": "cam", "url": MAIN, **fields})


def equal(n: int, cost: float = 1.0, prefix: str = "s") -> dict[str, float]:
    return {f"{prefix}{i:02d}": cost for i in range(n)}


def on(nodes: Mapping[str, int], streams: list[str]) -> dict[str, str]:
    """``streams`` dealt out in order: the first ``nodes[first]`` to the first node, and so on."""
    out, it = {}, iter(streams)
    for node, count in nodes.items():
        for _ in range(count):
            out[next(it)] = node
    return out


def loads(plan: Spread, costs: Mapping[str, float], capacity: Mapping[str, float]) -> dict[str, float]:
    return {n: plan.load(costs, n) for n in capacity}


def max_ratio(
    assignment: Mapping[str, str], costs: Mapping[str, float], capacity: Mapping[str, float]
) -> float:
    load = dict.fromkeys(capacity, 0.0)
    for s, n in assignment.items():
        load[n] += costs[s]
    return max((load[n] / capacity[n] for n in capacity if capacity[n] > 0), default=0.0)


# ---------------------------------------- cost


@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({}, (1920, 1080)),  # a main stream by default
        ({"detect_url": SUB}, (640, 360)),  # a substream by default
        ({"resolution": "1280x720"}, (1280, 720)),  # declared: of the main stream
        ({"detect_url": SUB, "resolution": "1280x720"}, (1280, 720)),  # declared: of the substream
        ({"detect_url": SUB, "resolution": "3840x2160"}, (3840, 2160)),
    ],
)
def test_the_decoded_size_is_the_declared_one_else_the_default_of_what_is_decoded(
    fields: dict[str, Any], size: tuple[int, int]
) -> None:
    assert decoded_size(stream(**fields)) == size


@pytest.mark.parametrize(
    ("fields", "models", "decoded_fps", "megapixels"),
    [
        # slow sampling decodes key frames only: one decode per sample
        ({"sample_interval_s": 2.0}, 1, 0.5, 1920 * 1080 / 1e6),
        ({"sample_interval_s": 10.0}, 1, 0.1, 1920 * 1080 / 1e6),
        # below the key-frame threshold every frame of the camera is decoded
        ({"sample_interval_s": 1.999}, 1, CAMERA_FPS, 1920 * 1080 / 1e6),
        ({"sample_interval_s": 1.0}, 1, CAMERA_FPS, 1920 * 1080 / 1e6),
        ({"sample_interval_s": 0.5}, 1, CAMERA_FPS, 1920 * 1080 / 1e6),
        # sampling faster than the camera sends: the samples themselves are decoded
        ({"sample_interval_s": 0.02}, 1, 50.0, 1920 * 1080 / 1e6),
        # the substream is what is decoded (smaller by default)
        ({"sample_interval_s": 1.0, "detect_url": SUB}, 1, CAMERA_FPS, 640 * 360 / 1e6),
        ({"sample_interval_s": 2.0, "detect_url": SUB}, 1, 0.5, 640 * 360 / 1e6),
        # a declared resolution
        ({"sample_interval_s": 1.0, "resolution": "1280x720"}, 1, CAMERA_FPS, 1280 * 720 / 1e6),
        (
            {"sample_interval_s": 1.0, "detect_url": SUB, "resolution": "704x576"},
            1,
            CAMERA_FPS,
            704 * 576 / 1e6,
        ),
        # each model serving the stream costs an inference per sample (none counts as one)
        ({"sample_interval_s": 2.0}, 3, 0.5, 1920 * 1080 / 1e6),
        ({"sample_interval_s": 2.0}, 0, 0.5, 1920 * 1080 / 1e6),
    ],
)
def test_stream_cost_is_decoding_plus_one_inference_per_sample_and_model(
    fields: dict[str, Any], models: int, decoded_fps: float, megapixels: float
) -> None:
    s = stream(**fields)
    expected = decoded_fps * megapixels * DECODE_CORE_S_PER_MP
    expected += (SAMPLE_CORE_S + INFER_CORE_S * max(1, models)) / s.sample_interval_s
    assert stream_cost(s, models) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("cheaper", "dearer"),
    [
        ({"sample_interval_s": 2.0}, {"sample_interval_s": 1.0}),  # key frames only vs every frame
        ({"sample_interval_s": 1.0, "detect_url": SUB}, {"sample_interval_s": 1.0}),  # substream vs main
        ({"resolution": "640x360"}, {"resolution": "2560x1440"}),
        ({"sample_interval_s": 10.0}, {"sample_interval_s": 2.0}),
    ],
)
def test_cost_orders_streams_as_the_work_they_make(cheaper: dict[str, Any], dearer: dict[str, Any]) -> None:
    assert 0 < stream_cost(stream(**cheaper)) < stream_cost(stream(**dearer))


def test_a_second_model_costs_exactly_one_inference_per_sample() -> None:
    s = stream(sample_interval_s=0.5)
    assert stream_cost(s, 2) - stream_cost(s, 1) == pytest.approx(INFER_CORE_S * 2)


@pytest.mark.parametrize(
    ("resources", "cores"),
    [
        ({"CPU": 8.0}, 8.0),
        ({"CPU": 2.0, "memory": 8e9, "node:10.0.0.2": 1.0}, 2.0),  # other resources count for nothing
        ({"CPU": 4.0, "GPU": 1.0}, 4.0 + GPU_CORES),
        ({"CPU": 16.0, "GPU": 2.0}, 16.0 + 2 * GPU_CORES),
        ({"GPU": 1.0}, GPU_CORES),
        ({"CPU": 0.5, "GPU": 0.5}, 0.5 + 0.5 * GPU_CORES),
        ({}, 0.0),  # a node without a CPU (a head node started with --num-cpus=0)
    ],
)
def test_node_capacity_is_cpus_plus_gpu_cores(resources: dict[str, float], cores: float) -> None:
    assert node_capacity(resources) == pytest.approx(cores)


# ---------------------------------------- spread: first placement


@pytest.mark.parametrize(
    ("costs", "capacity", "expected_loads"),
    [
        (equal(6), {"a": 4, "b": 4}, {"a": 3, "b": 3}),
        (equal(7), {"a": 4, "b": 4}, {"a": 4, "b": 3}),  # ties go to the first name
        (equal(12), {"a": 4, "b": 4, "c": 4}, {"a": 4, "b": 4, "c": 4}),
        (equal(8), {"a": 2, "b": 6}, {"a": 2, "b": 6}),  # by load over capacity, not by count
        (equal(10), {"a": 1, "b": 4}, {"a": 2, "b": 8}),
        (equal(5), {"a": 16}, {"a": 5}),
        # heaviest first, each on the least loaded node after adding it
        ({"big": 5, "mid": 3, "x": 2, "y": 2, "p": 1, "q": 1}, {"a": 1, "b": 1}, {"a": 7, "b": 7}),
        ({"big": 6, "s1": 1, "s2": 1, "s3": 1}, {"a": 1, "b": 1}, {"a": 6, "b": 3}),
        ({"big": 6, "s1": 1, "s2": 1, "s3": 1}, {"a": 2, "b": 1}, {"a": 6, "b": 3}),  # 3 vs 3 per core
        ({}, {"a": 1}, {"a": 0}),
    ],
)
def test_first_placement_balances_load_over_capacity(
    costs: dict[str, float], capacity: dict[str, float], expected_loads: dict[str, float]
) -> None:
    plan = spread(costs, capacity)
    assert set(plan.assignment) == set(costs)
    assert loads(plan, costs, capacity) == pytest.approx(expected_loads)
    assert plan.moves == {s: (None, n) for s, n in plan.assignment.items()}  # every stream newly placed


def test_nodes_without_capacity_get_nothing() -> None:
    plan = spread(equal(4), {"a": 2, "head": 0, "b": 2})
    assert set(plan.assignment.values()) == {"a", "b"}


@pytest.mark.parametrize(
    ("costs", "capacity", "current"),
    [
        (equal(3), {}, None),
        (equal(3), {"head": 0}, None),  # none offers a CPU
        (equal(3), {}, {"s00": "a", "s01": "a", "s02": "b"}),  # every node left
    ],
)
def test_no_node_to_run_on_is_a_plan_error(
    costs: dict[str, float], capacity: dict[str, float], current: dict[str, str] | None
) -> None:
    with pytest.raises(PlanError, match="no node"):
        spread(costs, capacity, current)


def test_no_stream_and_no_node_is_an_empty_plan() -> None:
    assert spread({}, {}, {"gone": "a"}) == Spread({}, {})


# ---------------------------------------- spread: nodes leaving


@pytest.mark.parametrize(
    ("before", "leaving", "capacity_after"),
    [
        ({"a": 4, "b": 4, "c": 4}, "c", {"a": 4, "b": 4}),
        ({"a": 6, "b": 6}, "b", {"a": 4}),
        ({"a": 2, "b": 6, "c": 1}, "b", {"a": 2, "c": 1}),
        ({"a": 5, "b": 1, "c": 5}, "a", {"b": 8, "c": 2}),  # unbalanced before: still only a's streams move
    ],
)
def test_a_node_leaving_moves_only_its_streams(
    before: dict[str, int], leaving: str, capacity_after: dict[str, float]
) -> None:
    costs = equal(sum(before.values()))
    current = on(before, sorted(costs))
    plan = spread(costs, capacity_after, current, rebalance=False)  # what the driver does after a loss
    theirs = {s for s, n in current.items() if n == leaving}
    assert plan.moves.keys() == theirs
    assert all(src == leaving for src, _ in plan.moves.values())
    assert all(plan.assignment[s] == n for s, n in current.items() if s not in theirs)
    assert set(plan.assignment.values()) <= set(capacity_after)
    # with a rebalance it may move more, never raising the highest load
    balanced = spread(costs, capacity_after, current, rebalance=True)
    assert (
        max_ratio(balanced.assignment, costs, capacity_after)
        <= max_ratio(plan.assignment, costs, capacity_after) + 1e-9
    )


def test_a_leaving_nodes_streams_go_to_the_least_loaded_heaviest_first() -> None:
    costs = {"heavy": 3.0, "light": 1.0, "a1": 1.0, "a2": 1.0, "b1": 1.0}
    current = {"heavy": "gone", "light": "gone", "a1": "a", "a2": "a", "b1": "b"}
    plan = spread(costs, {"a": 1, "b": 1}, current, rebalance=False)
    assert plan.assignment == {"heavy": "b", "light": "a", "a1": "a", "a2": "a", "b1": "b"}
    assert plan.moves == {"heavy": ("gone", "b"), "light": ("gone", "a")}


# ---------------------------------------- spread: nodes joining


@pytest.mark.parametrize(
    ("before", "capacity", "moves", "expected_loads"),
    [
        ({"a": 6, "b": 6}, {"a": 4, "b": 4, "c": 4}, 4, {"a": 4, "b": 4, "c": 4}),
        ({"a": 12}, {"a": 4, "b": 4}, 6, {"a": 6, "b": 6}),
        ({"a": 3, "b": 3, "c": 3}, {"a": 4, "b": 4, "c": 4, "d": 4}, 0, None),  # 3 = ceil(9/4) already
        ({"a": 4, "b": 4}, {"a": 4, "b": 4, "c": 8}, 4, {"a": 2, "b": 2, "c": 4}),  # a bigger node takes more
        ({"a": 8}, {"a": 2, "b": 6}, 6, {"a": 2, "b": 6}),
        # 2/2/0: no move lowers the highest load, so none is made
        ({"a": 2, "b": 2}, {"a": 4, "b": 4, "c": 4}, 0, {"a": 2, "b": 2, "c": 0}),
    ],
)
def test_a_node_joining_takes_a_share_with_the_fewest_moves(
    before: dict[str, int], capacity: dict[str, float], moves: int, expected_loads: dict[str, float] | None
) -> None:
    costs = equal(sum(before.values()))
    current = on(before, sorted(costs))
    plan = spread(costs, capacity, current, rebalance=True)
    joined = set(capacity) - set(before)
    assert len(plan.moves) == moves
    # streams go from the old nodes to the new one only, never between old nodes
    assert all(src in before and dst in joined for src, dst in plan.moves.values())
    if expected_loads is not None:
        assert loads(plan, costs, capacity) == pytest.approx(expected_loads)
    ceiling = -(-len(costs) // len(capacity)) if len(set(capacity.values())) == 1 else None
    if ceiling is not None:  # equal nodes, equal streams: as balanced as whole streams allow
        assert max(loads(plan, costs, capacity).values()) == ceiling


def test_twelve_equal_streams_six_and_six_then_a_third_node() -> None:
    """Exactly 4 moves, 4/4/4: two from each old node, none between them."""
    costs = equal(12)
    current = on({"a": 6, "b": 6}, sorted(costs))
    plan = spread(costs, {"a": 8, "b": 8, "c": 8}, current)
    assert len(plan.moves) == 4
    assert sorted(str(src) for src, _ in plan.moves.values()) == ["a", "a", "b", "b"]
    assert {dst for _, dst in plan.moves.values()} == {"c"}
    assert loads(plan, costs, {"a": 8, "b": 8, "c": 8}) == {"a": 4, "b": 4, "c": 4}


def test_without_rebalance_a_joined_node_waits_for_new_streams() -> None:
    costs = equal(12)
    current = on({"a": 6, "b": 6}, sorted(costs))
    plan = spread({**costs, "new": 1.0}, {"a": 8, "b": 8, "c": 8}, current, rebalance=False)
    assert plan.moves == {"new": (None, "c")}


def test_finished_and_unknown_streams_in_current_are_dropped() -> None:
    costs = equal(4)
    current = {**on({"a": 2, "b": 2}, sorted(costs)), "finished-file": "a", "removed": "gone-node"}
    plan = spread(costs, {"a": 1, "b": 1}, current)
    assert set(plan.assignment) == set(costs)
    assert "finished-file" not in plan.moves and "removed" not in plan.moves
    assert plan.moves == {}


def test_spread_is_deterministic_whatever_the_order_of_its_inputs() -> None:
    rng = random.Random(7)
    costs = {f"s{i:02d}": round(rng.uniform(0.05, 2.0), 3) for i in range(25)}
    capacity = {"n1": 4.0, "n2": 8.0, "n3": 2.0, "n4": 8.0}
    current = {s: rng.choice(["n1", "n2", "gone"]) for s in list(costs)[:18]}
    first = spread(costs, capacity, current)
    for _ in range(5):
        shuffled = list(costs.items())
        rng.shuffle(shuffled)
        caps = list(capacity.items())
        rng.shuffle(caps)
        cur = list(current.items())
        rng.shuffle(cur)
        again = spread(dict(shuffled), dict(caps), dict(cur))
        assert again.assignment == first.assignment
        assert again.moves == first.moves


# ---------------------------------------- spread: properties


def random_case(seed: int) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Streams of random cost, nodes of random capacity (some without), and a current placement that names
    living nodes, dead ones and streams that no longer run."""
    rng = random.Random(seed)
    n = rng.randint(0, 40)
    if seed % 2:  # alike streams on alike nodes: loads tie
        costs = {f"s{i:02d}": float(rng.choice([1, 1, 2])) for i in range(n)}
        capacity = {f"n{i}": rng.choice([0.0, 4.0, 4.0, 8.0]) for i in range(rng.randint(1, 6))}
    else:
        costs = {f"s{i:02d}": rng.choice([rng.uniform(0.01, 0.2), rng.uniform(0.2, 3.0)]) for i in range(n)}
        capacity = {
            f"n{i}": rng.choice([0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 24.0]) for i in range(rng.randint(1, 7))
        }
    if not any(capacity.values()):
        capacity["n0"] = 2.0
    known = [*capacity, "dead-1", "dead-2"]
    current = {s: rng.choice(known) for s in costs if rng.random() < 0.8}
    current.update({f"old{i}": rng.choice(known) for i in range(rng.randint(0, 3))})
    return costs, capacity, current


@pytest.mark.parametrize("seed", range(60))
def test_every_stream_lands_on_a_living_node_and_rebalance_never_raises_the_highest_load(seed: int) -> None:
    costs, capacity, current = random_case(seed)
    living = {n for n, c in capacity.items() if c > 0}
    kept = spread(costs, capacity, current, rebalance=False)
    balanced = spread(costs, capacity, current, rebalance=True)
    for plan in (kept, balanced):
        assert set(plan.assignment) == set(costs)
        assert set(plan.assignment.values()) <= living
        # moves are exactly the streams not where they ran, from where they ran (None: never placed)
        assert plan.moves == {
            s: (current.get(s), n) for s, n in plan.assignment.items() if current.get(s) != n
        }
    # without rebalance a stream whose node lives stays there
    assert all(kept.assignment[s] == n for s, n in current.items() if s in costs and n in living)
    # rebalancing starts from that placement and only ever lowers the highest load
    highest_kept = max_ratio(kept.assignment, costs, capacity)
    highest = max_ratio(balanced.assignment, costs, capacity)
    assert highest <= highest_kept + 1e-9
    if balanced.assignment != kept.assignment:  # no stream moves for nothing
        assert highest < highest_kept - 1e-9
    assert spread(costs, capacity, current) == balanced  # deterministic


@pytest.mark.parametrize("seed", range(40))
def test_rebalancing_a_placed_fleet_never_raises_its_highest_load(seed: int) -> None:
    """Every stream already on a living node (a node joined, or nothing changed): the highest load over
    capacity after the spread is at most what it was."""
    costs, capacity, _ = random_case(seed)
    rng = random.Random(1000 + seed)
    living = sorted(n for n, c in capacity.items() if c > 0)
    current = {s: rng.choice(living) for s in costs}
    plan = spread(costs, capacity, current)
    before, after = max_ratio(current, costs, capacity), max_ratio(plan.assignment, costs, capacity)
    assert after <= before + 1e-9
    assert not plan.moves or after < before - 1e-9  # a move is made only when the highest load drops
    again = spread(costs, capacity, plan.assignment)
    assert again.moves == {}  # a balanced fleet is left alone


@pytest.mark.parametrize("seed", range(40))
def test_alike_streams_on_alike_nodes_move_no_more_than_the_excess_over_the_fair_share(seed: int) -> None:
    """Equal streams, equal nodes (some just joined, empty): the fleet ends at ceil(streams / nodes) per node,
    and exactly the streams above that share on each node move; none moves between nodes at the share."""
    rng = random.Random(seed)
    old, new = rng.randint(1, 5), rng.randint(0, 3)
    capacity = {f"n{i}": 4.0 for i in range(old + new)}
    costs = equal(rng.randint(0, 30))
    current = {s: f"n{rng.randrange(old)}" for s in costs}
    before = {n: sum(1 for m in current.values() if m == n) for n in capacity}
    share = -(-len(costs) // len(capacity))
    plan = spread(costs, capacity, current)
    after = loads(plan, costs, capacity)
    assert max(after.values()) == share
    assert len(plan.moves) == sum(max(0, count - share) for count in before.values())
    sources = {src for src, _ in plan.moves.values()}
    assert not sources & {dst for _, dst in plan.moves.values()}


# ---------------------------------------- resolution in streams.yaml


def config(resolution: str) -> str:
    return f'version: 1\nstreams:\n  - id: cam\n    url: a.mp4\n    resolution: "{resolution}"\n'


@pytest.mark.parametrize("value", ["1280x720", "640x360", "3840x2160", "10x10", "99999x99999"])
def test_a_declared_resolution_is_width_x_height(value: str) -> None:
    [s] = load_config_text(config(value), environ={}).config.streams
    assert s.resolution == value


@pytest.mark.parametrize(
    "value",
    ["1280*720", "1280X720", "1280 x 720", "1280x", "x720", "0x720", "1280x0720", "1x1", "123456x720", ""],
)
def test_a_malformed_resolution_is_refused_with_its_place_and_a_hint(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(config(value), environ={})
    [issue] = caught.value.issues
    assert (issue.path, issue.line) == ("streams[0].resolution", 5)
    text = issue.format()
    assert repr(value).strip("'") in text and "WIDTHxHEIGHT" in text, text
