"""The fleet driver (detector/fleet/driver.py) against a fake Ray: the paths the end-to-end fleet test
(tests/e2e/test_fleet.py: a local Ray cluster, a node killed, a node joining) does not reach.

The fake Ray, its fixtures and the helpers are in tests/fleet_fakes.py: nodes the test makes join, die,
hang or start slowly, calls that run at once, and a clock (``time.monotonic`` of the driver) that a call
a hung node never answers moves by the timeout. No sleeping, no threads: the whole module runs in well
under 5 s.
"""

from __future__ import annotations

import logging
import sys

import pytest

import detector.fleet.driver as fleet_driver
from detector.config import LoadedConfig
from detector.fleet.driver import FleetError
from detector.fleet.node import NODE_PREFIX, worker_name
from tests.fleet_fakes import (
    CALL_S,
    STREAMS,
    Affinity,
    Clock,
    FakeRay,
    RayError,
    actor_of,
    changes,
    check,
    counts,
    driver,
    loaded,
    mono,
    ray,
)

__all__ = ["changes", "loaded", "mono", "ray"]  # fixtures


# ---------------------------------------------------------------------------------------------- start
def test_start_places_every_stream_once_on_ready_nodes(
    loaded: LoadedConfig, ray: FakeRay, changes: list[dict[str, str]]
) -> None:
    a, b = ray.add("a"), ray.add("b")
    ray.add("c", cpus=0)  # a head without CPUs gets no actor
    ray.add("d", alive=False)
    drv = driver(loaded, changes=changes).start()
    check(drv, ray)
    assert set(drv.nodes) == {a.nid, b.nid}
    assert counts(drv) == {"a": 3, "b": 3}
    assert ray.remote_classes == [fleet_driver.FleetNodeActor] * 2
    assert ray.init_calls == []  # Ray was initialised already
    for m in (a, b):
        actor = actor_of(drv, m)
        assert actor.options["scheduling_strategy"] == Affinity(m.nid, soft=False)  # dies with its node
        assert actor.options["max_restarts"] == 0 and actor.options["num_cpus"] == 0
        assert actor.worker == worker_name(loaded.config.worker_id, f"{NODE_PREFIX}{m.nid[:8]}")
        assert drv.nodes[m.nid].name == actor.worker
        # outboxes an earlier fleet left: every node looks on its disk, knowing who lives
        assert actor.called("adopt_orphans") == [([actor_of(drv, a).worker, actor_of(drv, b).worker],)]
        assert actor.called("forget") == []
        assert all(ckpt is None for ckpt in actor.running.values())
    assert drv.moves == 0 and drv.finished == set()
    assert changes == [drv.assignment()]


def test_start_initialises_ray_when_not_yet(loaded: LoadedConfig, ray: FakeRay) -> None:
    ray.initialized = False
    ray.add("a")
    driver(loaded, address="local").start()
    assert ray.init_calls == [
        {"address": None, "namespace": "citywatch", "log_to_driver": True, "include_dashboard": False}
    ]


@pytest.mark.parametrize(
    "setup, message",
    [
        ("no ray", "--ray needs Ray"),
        ("no cluster", "no Ray cluster at ray://head:10001"),
        ("no cpu", "no living node with a CPU"),
        ("every detector fails", "no living node with a CPU whose detector started"),
    ],
)
def test_start_fails_with_a_reason(
    loaded: LoadedConfig, ray: FakeRay, monkeypatch: pytest.MonkeyPatch, setup: str, message: str
) -> None:
    if setup == "no ray":
        monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    elif setup == "no cluster":
        ray.initialized = False
        ray.init_error = ConnectionError("connection refused")
    elif setup == "no cpu":
        ray.add("a", cpus=0)
        ray.add("b", alive=False)
    else:
        ray.add("a", boot="fail")
        ray.add("b", boot="fail")
    with pytest.raises(FleetError, match=message):
        driver(loaded).start()
    assert all(actor.killed for actor in ray.actors)


# ---------------------------------------------------------------------------------------------- nodes leaving
@pytest.mark.parametrize(
    "how, dead_after, polls",
    [
        ("left", 3, 1),  # Ray's node table says dead
        ("actor died", 3, 1),  # the actor's calls raise RayActorError
        ("hung", 1, 1),  # no answer: dropped after dead_after polls in a row
        ("hung", 3, 3),
    ],
)
def test_a_node_that_leaves_hands_its_streams_on_with_their_checkpoints(
    loaded: LoadedConfig,
    ray: FakeRay,
    mono: Clock,
    changes: list[dict[str, str]],
    how: str,
    dead_after: int,
    polls: int,
) -> None:
    a, b = ray.add("a"), ray.add("b")
    drv = driver(loaded, dead_after=dead_after, changes=changes).start()
    drv.poll()  # the driver now holds a checkpoint of every stream
    old, other = actor_of(drv, a), actor_of(drv, b)
    moving = set(old.running)
    assert len(moving) == 3
    held = dict(old.sent)
    if how == "left":
        a.alive = False
    elif how == "actor died":
        old.killed = True  # as Ray would: every call raises from now on
    else:
        a.hung = True
    for i in range(polls - 1):
        t0 = mono.now
        drv.poll()
        assert drv.nodes[a.nid].misses == i + 1
        assert mono.now - t0 <= CALL_S  # one poll waits call_timeout_s at most
        assert drv.assignment().keys() >= moving  # not moved yet: it may answer again
        assert len(other.called("start_streams")) == 1
    drv.poll()
    assert a.nid not in drv.nodes and a.nid in drv._gone
    assert old.killed
    check(drv, ray)
    assert counts(drv) == {"b": 6}
    assert {sid: other.running[sid] for sid in moving} == held  # each from the checkpoint the driver held
    assert drv.moves == 3
    assert changes[-1] == drv.assignment() == dict.fromkeys(STREAMS, b.nid)
    # its retained status is cleared by a living node; a living node adopts its outbox
    assert other.called("forget") == [([old.worker],)]
    assert other.called("adopt_orphans")[-1] == ([other.worker],)
    # never used again, even when Ray still lists it (a hung node) or it answers again
    a.hung = False
    drv.poll()
    drv.poll()
    assert a.nid not in drv.nodes and len(a.actors) == 1
    assert other.called("forget") == [([old.worker],)]  # once
    check(drv, ray)


def test_a_hung_node_that_answers_again_is_kept(loaded: LoadedConfig, ray: FakeRay) -> None:
    a, _ = ray.add("a"), ray.add("b")
    drv = driver(loaded, dead_after=3).start()
    a.hung = True
    drv.poll()
    drv.poll()
    assert drv.nodes[a.nid].misses == 2
    a.hung = False
    drv.poll()
    assert drv.nodes[a.nid].misses == 0  # misses count in a row
    a.hung = True
    drv.poll()
    drv.poll()
    assert a.nid in drv.nodes and counts(drv) == {"a": 3, "b": 3}
    assert drv.moves == 0


def test_several_hung_nodes_are_waited_for_together(loaded: LoadedConfig, ray: FakeRay, mono: Clock) -> None:
    """Every node's poll goes out at once: one look waits call_timeout_s, not call_timeout_s per hung node
    (else three hung nodes are declared dead after 3 x 3 x call_timeout_s)."""
    machines = [ray.add(x) for x in "abcd"]
    drv = driver(loaded, dead_after=2).start()
    for m in machines[:3]:
        m.hung = True
    for _ in range(2):
        t0 = mono.now
        drv.poll()
        assert mono.now - t0 <= CALL_S
    assert set(drv.nodes) == {machines[3].nid}
    check(drv, ray)


def test_finished_streams_stay_where_they_finished(loaded: LoadedConfig, ray: FakeRay) -> None:
    a, b = ray.add("a"), ray.add("b")
    drv = driver(loaded).start()
    old, other = actor_of(drv, a), actor_of(drv, b)
    done = sorted(old.running)[:2]
    old.done |= set(done)
    drv.poll()
    assert drv.finished == set(done)
    assert not drv.all_finished()
    a.alive = False
    drv.poll()
    assert set(other.running) == set(STREAMS) - set(done)  # the finished ones are not started again
    assert drv.moves == 1
    check(drv, ray)
    other.done |= set(other.running)
    drv.poll()
    assert drv.all_finished()
    drv.run(exit_when_done=True)  # returns at once: every stream finished


def test_all_finished_needs_streams(loaded: LoadedConfig, ray: FakeRay) -> None:
    ray.add("a")
    drv = driver(loaded)
    assert not drv.all_finished()
    drv.streams = {}
    drv.finished = set(STREAMS)
    assert not drv.all_finished()  # a fleet without streams is never "done"


def test_no_node_left_the_streams_wait_and_the_next_node_clears_the_dead(
    loaded: LoadedConfig, ray: FakeRay, caplog: pytest.LogCaptureFixture
) -> None:
    """The only node dies: the streams wait for a node; the one that joins later runs them from their
    checkpoints, clears the dead node's retained status and adopts the outboxes on its disk (it may be the
    dead node's machine, come back)."""
    a = ray.add("a")
    drv = driver(loaded).start()
    drv.poll()
    old = actor_of(drv, a)
    held = dict(old.sent)
    a.alive = False
    with caplog.at_level(logging.ERROR, "citywatch.fleet"):
        drv.poll()
        drv.poll()
    assert "the streams wait for a node" in caplog.text
    assert drv.nodes == {} and drv.assignment() == {}
    b = ray.add("b")
    drv.poll()  # b's actor starts (answers its ping at once here)
    new = actor_of(drv, b)
    assert new.running == held
    assert new.called("forget") == [([old.worker],)]
    assert new.called("adopt_orphans") == [([new.worker],)]
    assert drv.moves == 6
    check(drv, ray)


def test_a_joining_node_adopts_the_outboxes_on_its_disk(loaded: LoadedConfig, ray: FakeRay) -> None:
    ray.add("a")
    drv = driver(loaded).start()
    c = ray.add("c")
    drv.poll()
    new = actor_of(drv, c)
    assert new.called("adopt_orphans") == [([actor_of(drv, ray.machines["a" * 56]).worker, new.worker],)]
    assert new.called("forget") == []


# ---------------------------------------------------------------------------------------------- nodes joining
@pytest.mark.parametrize("when", ["at start", "joining"])
def test_a_node_whose_detector_fails_is_dropped_and_never_used(
    loaded: LoadedConfig, ray: FakeRay, when: str
) -> None:
    a = ray.add("a")
    bad = ray.add("c", boot="fail") if when == "at start" else None
    drv = driver(loaded).start()
    if bad is None:
        bad = ray.add("c", boot="fail")
        drv.poll()
    assert bad.nid not in drv.nodes and bad.nid in drv._gone
    (actor,) = bad.actors
    assert actor.killed
    assert [n for n, _ in actor.calls] == ["ping"]  # no stream, no poll, no adoption
    for _ in range(3):
        drv.poll()
    assert len(bad.actors) == 1  # Ray lists it alive: no second actor
    assert counts(drv) == {"a": 6}
    assert all(not args[0] for args in actor_of(drv, a).called("forget"))  # no name to forget
    check(drv, ray)


@pytest.mark.parametrize("when", ["at start", "joining"])
def test_a_slow_node_gets_streams_once_its_detector_answers(
    loaded: LoadedConfig, ray: FakeRay, mono: Clock, changes: list[dict[str, str]], when: str
) -> None:
    a = ray.add("a")
    slow = ray.add("c", boot="slow") if when == "at start" else None
    t0 = mono.now
    drv = driver(loaded, changes=changes).start()
    if slow is None:
        slow = ray.add("c", boot="slow")
        drv.poll()
    else:  # start waits for it up to JOIN_TIMEOUT_S, then goes on without it
        assert mono.now - t0 >= fleet_driver.JOIN_TIMEOUT_S
    slot = drv.nodes[slow.nid]
    assert slot.ready is not None and slot.name == f"detector-1-node-{slow.nid[:8]}"  # known before its ping
    for _ in range(3):
        drv.poll()
        check(drv, ray)
    assert counts(drv) == {"a": 6, "c": 0}
    (actor,) = slow.actors
    assert {n for n, _ in actor.calls} == {"ping"}  # not polled, placed on, nor asked for states
    assert drv.states().keys() == set(STREAMS)
    assert [n for n, _ in actor.calls] == ["ping"]
    slow.booted = True
    old = actor_of(drv, a)
    before = dict(old.sent)
    drv.poll()
    check(drv, ray)
    assert drv.nodes[slow.nid].ready is None and drv.nodes[slow.nid].name == actor.worker
    assert counts(drv) == {"a": 3, "c": 3}
    moved = set(actor.running)
    # only the moved streams stopped, each handed over with the checkpoint it stopped with
    ((stopped,),) = old.called("stop_streams")
    assert sorted(stopped) == sorted(moved)
    assert actor.running == {sid: f"{sid}|{old.worker}|stopped".encode() for sid in moved}
    assert set(before) >= moved
    assert drv.moves == 3
    assert changes[-1] == drv.assignment()


def test_a_node_that_never_answers_is_dropped_after_the_join_timeout(
    loaded: LoadedConfig, ray: FakeRay, mono: Clock
) -> None:
    ray.add("a")
    drv = driver(loaded).start()
    slow = ray.add("c", boot="slow")
    drv.poll()
    mono.now += fleet_driver.JOIN_TIMEOUT_S / 2
    drv.poll()
    assert slow.nid in drv.nodes
    mono.now += fleet_driver.JOIN_TIMEOUT_S / 2 + 1
    drv.poll()
    assert slow.nid not in drv.nodes and slow.nid in drv._gone
    assert slow.actors[0].killed
    slow.booted = True
    drv.poll()
    assert len(slow.actors) == 1 and counts(drv) == {"a": 6}


# ---------------------------------------------------------------------------------------------- streams
@pytest.mark.parametrize("how", ["refused", "call failed"])
def test_a_stream_a_node_fails_to_start_is_placed_again(loaded: LoadedConfig, ray: FakeRay, how: str) -> None:
    if how == "refused":  # start_streams returns the ids it started: one fewer
        a, missing = ray.add("a", refuse={"cam-03"}), {"cam-03"}
    else:  # the call raises: none of its streams run
        a, missing = ray.add("a", fail={"start_streams": RuntimeError("detector busy")}), set(STREAMS)
    drv = driver(loaded).start()
    actor = actor_of(drv, a)
    assert set(drv.assignment()) == set(STREAMS) - missing
    assert set(actor.running) == set(STREAMS) - missing
    drv.poll()  # placed again at the next look
    check(drv, ray)
    assert set(actor.running) == set(STREAMS)
    assert drv.moves == 0  # a stream that runs for the first time did not move


def test_a_stream_whose_stop_fails_stays_where_it_runs(loaded: LoadedConfig, ray: FakeRay) -> None:
    """A rebalance whose stop call fails leaves those streams on their node (they may still run there: never
    twice); they move at a later rebalance, or from their checkpoints if that node turns out dead."""
    a = ray.add("a")
    drv = driver(loaded).start()
    drv.poll()
    old = actor_of(drv, a)
    old.fail_next["stop_streams"] = RayError("stop timed out")
    c = ray.add("c")
    drv.poll()  # c joins; the three streams meant for it fail to stop on a
    new = actor_of(drv, c)
    assert new.running == {} and drv.nodes[a.nid].streams == set(STREAMS) == set(old.running)
    a.alive = False
    drv.poll()  # a dies: every stream goes on on c from the checkpoints a sent
    assert set(new.running) == set(STREAMS)
    assert new.running == {sid: old.sent[sid] for sid in STREAMS}


# ---------------------------------------------------------------------------------------------- the rest
def test_states_come_from_the_nodes(loaded: LoadedConfig, ray: FakeRay, mono: Clock) -> None:
    a, b = ray.add("a"), ray.add("b")
    drv = driver(loaded).start()
    states = drv.states()
    assert set(states) == set(STREAMS)
    assert {s["node"] for s in states.values()} == {actor_of(drv, a).worker, actor_of(drv, b).worker}
    b.hung = True
    t0 = mono.now
    assert set(drv.states()) == set(actor_of(drv, a).running)  # a hung node says nothing
    assert mono.now - t0 == CALL_S


@pytest.mark.parametrize("within_s, wait_s", [(None, 35.0), (10.0, 15.0)])
def test_stop_shuts_every_node_down_and_lets_go(
    loaded: LoadedConfig, ray: FakeRay, mono: Clock, within_s: float | None, wait_s: float
) -> None:
    machines = [ray.add(x) for x in "abc"]
    drv = driver(loaded).start()
    slow = ray.add("d", boot="slow")
    drv.poll()
    actors = [actor_of(drv, m) for m in [*machines, slow]]
    machines[1].hung = machines[2].hung = True
    t0 = mono.now
    drv.stop(within_s=within_s)
    assert mono.now - t0 <= wait_s  # the nodes stop together: hung ones do not add up
    assert drv.nodes == {}
    for actor in actors:
        assert actor.called("shutdown") == [(within_s,)]
        assert actor.killed
    assert actors[0].running == {}


def test_actor_names_are_unique_per_driver(loaded: LoadedConfig, ray: FakeRay) -> None:
    """Two drivers on one cluster (a bench beside a fleet, or a driver restarted while the old actors are
    being torn down) never ask for the same actor name; nor does one driver twice."""
    a, b = ray.add("a"), ray.add("b")
    one = driver(loaded).start()
    two = driver(loaded).start()
    c = ray.add("c")
    one.poll()
    two.poll()
    names = [actor.options["name"] for actor in ray.actors]
    assert len(names) == 6 and len(set(names)) == 6
    for drv in (one, two):
        for m in (a, b, c):
            name = drv.nodes[m.nid].actor.options["name"]
            assert name.startswith(f"citywatch-node-{m.nid}-{drv._token}-")
