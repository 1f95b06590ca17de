"""The fleet driver (detector/fleet/driver.py) against a fake Ray: the paths the end-to-end fleet test
(tests/e2e/test_fleet.py: a local Ray cluster, a node killed, a node joining) does not reach.

``sys.modules["ray"]`` is a :class:`FakeRay`: its nodes are :class:`Machine`s the test makes join, die,
hang or start slowly, and the driver's ``ray.remote(FleetNodeActor)`` makes a :class:`FakeActor` (no
detector: its streams are a dict) on the machine the ``NodeAffinitySchedulingStrategy`` names. Every call
runs at once and returns a :class:`Ref`; ``ray.get`` raises ``GetTimeoutError`` for a call a hung (or still
starting) actor never answers, after moving the driver's clock (``time.monotonic``) by the timeout, and
``RayActorError`` for an actor that died. No sleeping, no threads: the whole module runs in well under 5 s.
"""

from __future__ import annotations

import logging
import sys
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import detector.fleet.driver as fleet_driver
from detector.config import LoadedConfig, StreamConfig, load_config
from detector.fleet.driver import FleetDriver, FleetError
from detector.fleet.node import NODE_PREFIX, worker_name

REPO = Path(__file__).resolve().parents[2]
STREAMS = [f"cam-{i:02d}" for i in range(1, 7)]
CALL_S = 3.0  # the driver's call_timeout_s in these tests


# ---------------------------------------------------------------------------------------------- fake Ray
class RayError(Exception):
    pass


class GetTimeoutError(RayError, TimeoutError):  # as in Ray: a timeout is a RayError too
    pass


class RayActorError(RayError):
    pass


class Clock:
    """The driver's ``time``: only ``monotonic`` is read; the fake Ray moves it when a call waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def never() -> bool:
    return False


def at_once() -> bool:
    return True


@dataclass(eq=False)  # refs are dict keys and compared by identity, as Ray's ObjectRefs
class Ref:
    value: Any = None
    error: BaseException | None = None
    ready: Callable[[], bool] = at_once


@dataclass
class Affinity:
    """``ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy``."""

    node_id: str
    soft: bool


@dataclass(eq=False)
class Machine:
    """A Ray node: ``alive`` in Ray's node table; its actor's detector starts (``boot``): ``ok``, ``slow``
    (answers once ``booted``), ``fail`` (its first ping raises); ``hung``: its actor answers nothing."""

    nid: str
    cpus: float = 4.0
    alive: bool = True
    boot: str = "ok"
    booted: bool = False
    hung: bool = False
    refuse: set[str] = field(default_factory=set)  # streams its detector fails to start, once each
    fail: dict[str, BaseException] = field(default_factory=dict)  # method → what its first call raises
    actors: list[FakeActor] = field(default_factory=list)


class Method:
    def __init__(self, actor: FakeActor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> Ref:
        return self.actor.call(self.name, args)


class FakeActor:
    """What the driver's actor handle reaches: FleetNode's methods, with streams in a dict."""

    def __init__(self, machine: Machine, options: dict[str, Any], args: tuple[Any, ...]) -> None:
        _loaded, node, _threads, _log_setup = args
        self.machine, self.options = machine, options
        self.worker = worker_name(_loaded.config.worker_id, node)
        self.killed = False
        self.running: dict[str, bytes | None] = {}  # stream → the checkpoint it started from
        self.done: set[str] = set()  # streams whose file ended
        self.sent: dict[str, bytes] = {}  # the latest checkpoint of each stream sent to the driver
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail_next = dict(machine.fail)  # method → what its next call raises
        self.seq = 0

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return Method(self, name)

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]

    def call(self, name: str, args: tuple[Any, ...]) -> Ref:
        self.calls.append((name, args))
        m = self.machine
        if self.killed or not m.alive or m.boot == "fail":
            return Ref(error=RayActorError(f"the actor of {m.nid[:8]} died"))
        if m.hung:
            return Ref(ready=never)
        if name in self.fail_next:
            return Ref(error=self.fail_next.pop(name))
        value = self.worker if name == "ping" else getattr(self, f"do_{name}")(*args)
        return Ref(value=value, ready=(lambda: m.booted) if m.boot == "slow" else at_once)

    # FleetNode's methods
    def do_checkpoints(self) -> dict[str, bytes]:
        self.seq += 1
        self.sent.update({sid: f"{sid}|{self.worker}|{self.seq}".encode() for sid in self.running})
        return {sid: self.sent[sid] for sid in self.running}

    def do_finished(self) -> list[str]:
        return sorted(self.done & set(self.running))

    def do_start_streams(self, batch: list[tuple[StreamConfig, bytes | None]]) -> list[str]:
        started = []
        for stream, checkpoint in batch:
            if stream.id in self.machine.refuse:
                self.machine.refuse.discard(stream.id)
                continue
            self.running.setdefault(stream.id, checkpoint)
            started.append(stream.id)
        return started

    def do_stop_streams(self, ids: list[str]) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for sid in ids:
            self.running.pop(sid, None)
            out[sid] = f"{sid}|{self.worker}|stopped".encode() if sid in self.sent else None
        return out

    def do_forget(self, workers: list[str]) -> None:
        return None

    def do_adopt_orphans(self, living: list[str]) -> int:
        return 0

    def do_states(self) -> dict[str, dict[str, Any]]:
        return {sid: {"state": "live", "node": self.worker} for sid in self.running}

    def do_shutdown(self, within_s: float | None) -> None:
        self.running.clear()


class ActorClass:
    def __init__(self, ray: FakeRay) -> None:
        self.ray = ray
        self.kw: dict[str, Any] = {}

    def options(self, **kw: Any) -> ActorClass:
        self.kw = kw
        return self

    def remote(self, *args: Any) -> FakeActor:
        where = self.kw["scheduling_strategy"]
        actor = FakeActor(self.ray.machines[where.node_id], self.kw, args)
        actor.machine.actors.append(actor)
        self.ray.actors.append(actor)
        return actor


class FakeRay(types.ModuleType):
    """What the driver uses of the ``ray`` module."""

    def __init__(self, clock: Clock) -> None:
        super().__init__("ray")
        self.clock = clock
        self.exceptions = types.SimpleNamespace(
            RayError=RayError, GetTimeoutError=GetTimeoutError, RayActorError=RayActorError
        )
        self.machines: dict[str, Machine] = {}
        self.actors: list[FakeActor] = []
        self.initialized = True
        self.init_error: BaseException | None = None
        self.init_calls: list[dict[str, Any]] = []
        self.remote_classes: list[type] = []

    def add(self, letter: str, **kw: Any) -> Machine:
        m = Machine(letter * 56, **kw)  # a Ray node id: 56 hex digits
        self.machines[m.nid] = m
        return m

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {"NodeID": m.nid, "Alive": m.alive, "Resources": {"CPU": m.cpus, "memory": 1e9}}
            for m in self.machines.values()
        ]

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kw: Any) -> None:
        self.init_calls.append(kw)
        if self.init_error is not None:
            raise self.init_error
        self.initialized = True

    def remote(self, cls: type) -> ActorClass:
        self.remote_classes.append(cls)
        return ActorClass(self)

    def get(self, refs: Ref | list[Ref], timeout: float | None = None) -> Any:
        many = isinstance(refs, list)
        items = refs if isinstance(refs, list) else [refs]
        if not all(r.ready() for r in items):
            assert timeout is not None, "a get without a timeout waits for ever on a hung node"
            assert timeout >= 0
            self.clock.now += timeout
            raise GetTimeoutError(f"no answer within {timeout} s")
        for r in items:
            if r.error is not None:
                raise r.error
        return [r.value for r in items] if many else items[0].value

    def wait(self, refs: list[Ref], num_returns: int = 1, timeout: float | None = None) -> Any:
        assert timeout is not None
        done = [r for r in refs if r.ready()]
        if len(done) < num_returns:
            self.clock.now += timeout
        return done[:num_returns], [r for r in refs if r not in done[:num_returns]]

    def kill(self, actor: FakeActor, no_restart: bool = True) -> None:
        assert no_restart
        actor.killed = True


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedConfig:
    """The root streams.yaml with six copies of its first stream, cam-01..cam-06 (equal costs)."""
    tmp = tmp_path_factory.mktemp("fleet")
    cfg = yaml.safe_load((REPO / "streams.yaml").read_text(encoding="utf-8"))
    first = cfg["streams"][0]
    url = str((REPO / first["url"]).resolve())
    cfg["streams"] = [{**first, "id": sid, "url": url} for sid in STREAMS]
    cfg["outbox"]["dir"] = str(tmp / "outbox")
    cfg["evidence"]["dir"] = str(tmp / "evidence")
    path = tmp / "streams.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_config(path)


@pytest.fixture
def mono(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(fleet_driver, "time", clock)
    return clock


@pytest.fixture
def ray(monkeypatch: pytest.MonkeyPatch, mono: Clock) -> FakeRay:
    fake = FakeRay(mono)
    sched = types.ModuleType("ray.util.scheduling_strategies")
    sched.NodeAffinitySchedulingStrategy = Affinity  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray.util", types.ModuleType("ray.util"))
    monkeypatch.setitem(sys.modules, "ray.util.scheduling_strategies", sched)
    return fake


@pytest.fixture
def changes() -> list[dict[str, str]]:
    """The assignments the driver's ``on_change`` was called with."""
    return []


def driver(
    loaded: LoadedConfig,
    dead_after: int = 3,
    address: str = "ray://head:10001",
    changes: list[dict[str, str]] | None = None,
) -> FleetDriver:
    drv = FleetDriver(loaded, address, poll_s=0.0, call_timeout_s=CALL_S, dead_after=dead_after)
    if changes is not None:
        drv.on_change = changes.append
    return drv


def actor_of(drv: FleetDriver, m: Machine) -> FakeActor:
    actor = drv.nodes[m.nid].actor
    assert isinstance(actor, FakeActor)
    return actor


def running(ray: FakeRay) -> Counter[str]:
    """Streams running on the actors still alive (a killed actor's dict is what it held when it died)."""
    return Counter(sid for a in ray.actors if not a.killed and a.machine.alive for sid in a.running)


def check(drv: FleetDriver, ray: FakeRay) -> None:
    """The driver's view is the cluster's: each stream not finished runs once, on a node that started it."""
    for slot in drv.nodes.values():
        actor = slot.actor
        if slot.ready is None and not actor.machine.hung:
            assert set(actor.running) == slot.streams, slot.node_id[:8]
        if slot.ready is not None:
            assert not slot.streams, "streams on a node whose detector has not started"
    assert all(n == 1 for n in running(ray).values()), running(ray)
    if drv._ready():
        assert set(drv.assignment()) >= set(STREAMS) - drv.finished


def counts(drv: FleetDriver) -> dict[str, int]:
    return {nid[0]: len(slot.streams) for nid, slot in drv.nodes.items()}


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
