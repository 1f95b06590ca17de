"""A fake Ray for the fleet driver's tests (tests/unit/test_fleet_driver.py), with its fixtures and helpers.

``sys.modules["ray"]`` is a :class:`FakeRay` (the ``ray`` fixture): its nodes are :class:`Machine`s the test
makes join, die, hang or start slowly, and the driver's ``ray.remote(FleetNodeActor)`` makes a
:class:`FakeActor` (no detector: its streams are a dict) on the machine the ``NodeAffinitySchedulingStrategy``
names. Every call runs at once and returns a :class:`Ref`; ``ray.get`` raises ``GetTimeoutError`` for a call
a hung (or still starting) actor never answers, after moving the driver's clock (``time.monotonic``, the
``mono`` fixture) by the timeout, and ``RayActorError`` for an actor that died.

The fixtures ``loaded``, ``mono``, ``ray`` and ``changes`` are imported into the test module to be used
there (and named in its ``__all__``).
"""

from __future__ import annotations

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
from detector.fleet.driver import FleetDriver
from detector.fleet.node import worker_name

REPO = Path(__file__).resolve().parents[1]
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
