"""In-memory test doubles: a fake clock and a fake network of pure cores.

:class:`FakeNet` joins one :class:`~zdse.cage.core.CageCore` (or several side by
side, ``cages=N``: every node lists them all) and any number of
:class:`~zdse.node.core.NodeCore` through in-memory queues, with the same frames
the real sockets carry (ROUTER identities, PUB topics and prefix filters).
Time moves only when a test says so, and a seeded ``drop`` hook loses PUB
frames the way a full high-water mark does. No sockets, no sleeps.

Example:
    >>> net = FakeNet()
    >>> pub = net.add("pub")
    >>> sub = net.add("sub")
    >>> pub.publish("t", [[1]])
    >>> sid = sub.subscribe("pub", "t", net.clock.now)
    >>> net.run()
    >>> sub.subscriptions.view(sid)
    {'pub': [[1]]}
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zdse.cage.control import ControlDesk, ControlHandler, Later
from zdse.cage.core import CageCore
from zdse.cage.effects import Effects as CageEffects
from zdse.node.core import NodeCore
from zdse.node.effects import Effects, Frame
from zdse.node.events import Event, IncomingRequest
from zdse.node.publications import Prepared
from zdse.wire import codec
from zdse.wire.limits import NODE_QUEUE_BYTES

__all__ = ["FakeClock", "FakeNet", "FakeProxy", "WiredCore", "routed"]


def routed(frames: list[bytes]) -> tuple[codec.Kind, bytes]:
    """The kind and body of a message the cage's ROUTER sends (what ``drop_routed`` sees):
    ``[identity, header, sender, key, body]`` or ``[identity, sender, packed]``."""
    if len(frames) == 3:
        head, _, body = codec.unpack(frames[2])
        return codec.parse_header(head)[0], body
    return codec.parse_header(frames[1])[0], frames[4]


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move time forward; return the new time."""
        self.now += seconds
        return self.now


class WiredCore(NodeCore):
    """A :class:`NodeCore` whose local calls the fake network carries out, as a Bus does.

    Each call returns what the core's does; the frames, filter changes and
    events it called for also wait in :attr:`pending`, for the network's
    next round. So a test calls ``core.publish(...)`` and runs the network.
    """

    def __init__(self, register: codec.Register, epoch: str, refresh: float,
                 now: float, cages: int = 1) -> None:
        super().__init__(register, epoch, refresh, now, cages)
        #: Steps and frames its local calls returned, not yet carried out.
        self.pending: list[Effects | Frame] = []
        #: The cages of each frame in ``pending``, asked of the core (route) at once.
        self.routes: dict[int, list[int]] = {}

    def _keep(self, out: Effects | Frame | None) -> None:
        if out is not None:
            if isinstance(out, tuple):
                self.routes[id(out)] = self.route(out)
            self.pending.append(out)

    def start(self, now: float) -> Effects:
        """As NodeCore's; carried out by the network."""
        out = super().start(now)
        self._keep(out)
        return out

    def bye(self) -> Effects:
        """As NodeCore's; carried out by the network."""
        out = super().bye()
        self._keep(out)
        return out

    def publish(self, dataindex: str, data: Any,
                prepared: Prepared | None = None) -> Frame | None:
        """As NodeCore's; carried out by the network."""
        out = super().publish(dataindex, data, prepared)
        self._keep(out)
        return out

    def replace(self, dataindex: str, value: Any) -> Frame | None:
        """As NodeCore's; carried out by the network."""
        out = super().replace(dataindex, value)
        self._keep(out)
        return out

    def change_keys(self, dataindex: str, put: Mapping[Any, Any],
                    delete: Iterable[Any] = ()) -> Frame | None:
        """As NodeCore's; carried out by the network."""
        out = super().change_keys(dataindex, put, delete)
        self._keep(out)
        return out

    def change_rows(self, dataindex: str, add: Iterable[Any] = (),
                    remove: Iterable[Any] = ()) -> Frame | None:
        """As NodeCore's; carried out by the network."""
        out = super().change_rows(dataindex, add, remove)
        self._keep(out)
        return out

    # Tests want the id alone, as from Bus.subscribe: what else the core's
    # call returns is the network's to carry out.
    def subscribe(  # type: ignore[override]
        self, key: str, dataindex: str, now: float, sid: str | None = None,
        refresh: float | None = None,
    ) -> str:
        """As NodeCore's, carried out by the network; return the subscription id."""
        sid, out = super().subscribe(key, dataindex, now, sid, refresh)
        self._keep(out)
        return sid

    def set_addresses(self, addresses: list[str]) -> Effects:
        """As NodeCore's; carried out by the network."""
        out = super().set_addresses(addresses)
        self._keep(out)
        return out

    def unsubscribe(self, sid: str) -> Effects:
        """As NodeCore's; carried out by the network."""
        out = super().unsubscribe(sid)
        self._keep(out)
        return out

    def request(  # type: ignore[override]  # the id alone, as subscribe above
        self, key: str, dataindex: str, args: Any, gather: bool, timeout: float = 0.0,
    ) -> int:
        """As NodeCore's, carried out by the network; return the correlation id."""
        cid, out = super().request(key, dataindex, args, gather, timeout)
        self._keep(out)
        return cid

    def send(self, key: str, dataindex: str, data: Any) -> Frame:
        """As NodeCore's; carried out by the network."""
        out = super().send(key, dataindex, data)
        self._keep(out)
        return out

    def reply(self, sender: str, cid: int, ok: bool, value: Any) -> Frame:
        """As NodeCore's; carried out by the network."""
        out = super().reply(sender, cid, ok, value)
        self._keep(out)
        return out

    @property
    def outbox(self) -> list[Frame]:
        """The frames its local calls called for, not yet sent."""
        return [f for out in self.pending
                for f in ([out] if isinstance(out, tuple) else out.frames)]

    def take_pending(self) -> list[tuple[Effects | Frame, list[int]]]:
        """What the local calls called for since the last take (a frame with its cages)."""
        out, self.pending = self.pending, []
        routes, self.routes = self.routes, {}
        return [(o, routes.get(id(o), [0]) if isinstance(o, tuple) else []) for o in out]


@dataclass
class _Member:
    core: WiredCore
    identity: bytes
    filters: set[bytes] = field(default_factory=set)
    #: Frames to send in the next round, in order, and each one's cage.
    outbox: list[Frame] = field(default_factory=list)
    to: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    alive: bool = True
    #: While paused: what the cage sent it, unread (its DEALER's queue).
    held: list[list[bytes]] | None = None


class FakeNet:
    """A cage and its nodes, wired in memory.

    Args:
        heartbeat: the cage's heartbeat interval.
        refresh: the nodes' subscription refresh interval.
        drop: called with each PUB frame list; True loses that frame.
        queue_bytes: the cage's byte budget per node.
        drop_routed: called with each frame list the cage's ROUTER sends
            (``[identity, header, sender, key, body]``); True loses it.
        cages: how many cages run side by side (docs/redundancy.md).
        drop_at: as ``drop``, called with the cage's index too.
    """

    def __init__(
        self,
        heartbeat: float = 1.0,
        refresh: float = 5.0,
        drop: Callable[[list[bytes]], bool] | None = None,
        queue_bytes: int = NODE_QUEUE_BYTES,
        drop_routed: Callable[[list[bytes]], bool] | None = None,
        cages: int = 1,
        drop_at: Callable[[int, list[bytes]], bool] | None = None,
    ) -> None:
        self.clock = FakeClock()
        #: The cages, by index; None while one is down (kill_cage).
        self.cages: list[CageCore | None] = [
            CageCore(f"cage-{i + 1}", heartbeat, started_at=self.clock.now,
                     queue_bytes=queue_bytes) for i in range(cages)]
        self.refresh = refresh
        self.drop = drop
        self.drop_routed = drop_routed
        self.drop_at = drop_at
        self.members: dict[bytes, _Member] = {}
        self._ids = itertools.count(1)
        #: What each cage's core returned and the network has not carried yet.
        self._cage_outs = [CageEffects() for _ in range(cages)]
        self._down: dict[int, CageCore] = {}

    def add(self, name: str, addresses: list[str] | None = None) -> WiredCore:
        """Start a node and run the network until it is registered."""
        core = WiredCore(
            codec.Register(name, list(addresses or []), {}),
            f"{name}-epoch-{next(self._ids)}",
            self.refresh,
            self.clock.now,
            cages=len(self.cages),
        )
        member = _Member(core, f"id-{next(self._ids)}".encode())
        member.filters.add(codec.EVENT_TOPIC)
        self.members[member.identity] = member
        core.start(self.clock.now)
        self.run()
        return core

    def member(self, core: NodeCore) -> _Member:
        """The network's record of a node."""
        return next(m for m in self.members.values() if m.core is core)

    def events(self, core: NodeCore) -> list[Event]:
        """Take the events a node produced since the last call."""
        member = self.member(core)
        out, member.events = member.events, []
        return out

    def kill(self, core: NodeCore) -> None:
        """The node's process dies: it sends and receives nothing more."""
        self.member(core).alive = False

    def pause(self, core: NodeCore) -> None:
        """The node stops reading from the cage's ROUTER: what comes for it waits."""
        self.member(core).held = []

    def held(self, core: NodeCore) -> list[list[bytes]]:
        """What waits unread for a paused node: ``[header, sender, key, body]`` each."""
        return list(self.member(core).held or [])

    def resume(self, core: NodeCore) -> None:
        """The node reads again, what waited first (run the network after)."""
        member = self.member(core)
        held, member.held = member.held or [], None
        for frames in held:
            self._carry_out(member, core.receive(frames, self.clock.now))

    @property
    def cage(self) -> CageCore:
        """The first cage (the only one, unless ``cages`` said more)."""
        cage = self.cages[0]
        assert cage is not None, "cage 0 is down"
        return cage

    def restart_cage(self, index: int = 0) -> None:
        """A new cage process: empty tables, a new epoch."""
        old = self.cages[index] or self._down.pop(index)
        self.cages[index] = CageCore(old.epoch + "+", old.heartbeat, started_at=self.clock.now,
                                     queue_bytes=old.queue_bytes)
        self._cage_outs[index] = CageEffects()

    def kill_cage(self, index: int) -> None:
        """Cage ``index`` dies: what it held is lost, frames to it vanish, until restarted."""
        cage = self.cages[index]
        assert cage is not None
        self._down[index] = cage
        self.cages[index] = None
        self._cage_outs[index] = CageEffects()

    def to_cage(self, frames: list[bytes], index: int = 0) -> None:
        """Hand cage ``index`` one message as its ROUTER would (identity first); run() takes it."""
        cage = self.cages[index]
        assert cage is not None
        self._cage_outs[index].extend(cage.receive([frames], self.clock.now))

    def carry_out(self, core: NodeCore, out: Effects | Frame) -> None:
        """Do what ``core`` called for when a test fed it an input by hand."""
        self._carry_out(self.member(core), out)

    def run(self, rounds: int = 1000) -> None:
        """Move frames until nothing moves (or ``rounds`` passes)."""
        for _ in range(rounds):
            if not self.step():
                return
        raise AssertionError(f"network still busy after {rounds} rounds")

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Let ``seconds`` pass in steps, ticking every core and running the network."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.advance(min(step, end - self.clock.now))
            now = self.clock.now
            for index, cage in enumerate(self.cages):
                if cage is not None:
                    self._cage_outs[index].extend(cage.tick(now))
            for member in self._alive():
                self._carry_out(member, member.core.tick(now))
            self.run()

    def _alive(self) -> list[_Member]:
        return [m for m in self.members.values() if m.alive]

    def step(self) -> bool:
        """Move one round of frames (the cores' pending ones, then the cages'); whether any did."""
        now = self.clock.now
        moved = False
        batches: list[list[list[bytes]]] = [[] for _ in self.cages]
        for member in self._alive():
            if member.core.slicing:
                # A slice of a big delta a round, as a Bus applies one a loop
                # turn: what comes meanwhile waits behind it.
                self._carry_out(member, member.core.advance(now))
                moved = True
            for out, route in member.core.take_pending():
                self._carry_out(member, out, route)
            queue, member.outbox = member.outbox, []
            to, member.to = member.to, []
            for index, batch in enumerate(batches):
                mine = [f for f, t in zip(queue, to, strict=True) if t == index]
                for frames in codec.coalesce(mine, packed=True):
                    batch.append([member.identity, *frames])
                    moved = True
        for index, cage in enumerate(self.cages):
            if cage is not None:
                if batches[index]:
                    # One batch per round, as the proxy reads one per loop iteration.
                    self._cage_outs[index].extend(cage.receive(batches[index], now))
                moved = self._from_cage(index, cage, now) or moved
        return moved

    def _from_cage(self, index: int, cage: CageCore, now: float) -> bool:
        moved = False
        sent, self._cage_outs[index] = self._cage_outs[index], CageEffects()
        for frames in sent.router:
            moved = True
            if self.drop_routed is not None and self.drop_routed(frames):
                continue
            target = self.members.get(frames[0])
            if target is None or not target.alive:
                # What ROUTER_MANDATORY reports for a closed connection.
                self._cage_outs[index].extend(cage.unreachable(frames[0], now))
                continue
            if target.held is not None:
                target.held.append(frames[1:])
                continue
            self._carry_out(target, target.core.receive(frames[1:], now, index))
        for frames in sent.pub:
            moved = True
            if frames[0] != codec.EVENT_TOPIC and (
                    (self.drop is not None and self.drop(frames))
                    or (self.drop_at is not None and self.drop_at(index, frames))):
                continue
            for member in self._alive():
                if any(frames[0].startswith(f) for f in member.filters):
                    self._carry_out(member, member.core.receive_published(frames, now, index))
        return moved

    def _carry_out(self, member: _Member, out: Effects | Frame,
                   route: list[int] | None = None) -> None:
        """Do what a core called for, as the Bus does: queue, filter, dispatch."""
        if isinstance(out, tuple):
            for cage in route if route is not None else member.core.route(out):
                member.outbox.append(out)
                member.to.append(cage)
            return
        member.outbox += out.frames
        member.to += out.cages or [0] * len(out.frames)
        member.filters.update(out.subscribe)
        member.filters.difference_update(out.unsubscribe)
        if out.events:
            self._deliver(member, out.events)

    def _deliver(self, member: _Member, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, IncomingRequest):
                # Answer as the Bus does by default: the published data.
                req = event.request
                found, data = member.core.published(req.dataindex)
                if found:
                    self._carry_out(member, NodeCore.reply(member.core, event.sender, req.cid,
                                                           True, data))
                else:
                    self._carry_out(member, NodeCore.reply(member.core, event.sender, req.cid,
                                                           False,
                                                           ["UnknownRequest", req.dataindex]))
            member.events.append(event)


class FakeProxy:
    """The proxy's part without sockets: feeds one :class:`CageCore` one message at
    a time and keeps what it returned, for tests to look at.

    Reads of other attributes fall through to the core (``names``,
    ``routes``, ``stats``, ...): tests check its state.

    Args:
        core: the cage's core.
    """

    def __init__(self, core: CageCore) -> None:
        self.core = core
        self.desk = ControlDesk(core)
        #: Frames for the ROUTER and the PUB socket not yet taken.
        self.router: list[list[bytes]] = []
        self.pub: list[list[bytes]] = []
        #: Lines the proxy would have logged, as (event, fields).
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def receive(self, frames: list[bytes], now: float) -> None:
        """One message from the ROUTER (identity first)."""
        self._keep(self.core.receive([frames], now), now)

    def tick(self, now: float) -> None:
        """The loop's tick."""
        self._keep(self.core.tick(now), now)

    def unreachable(self, identity: bytes, now: float) -> None:
        """What a send to a closed connection reports."""
        self._keep(self.core.unreachable(identity, now), now)

    def serve(self, handlers: dict[str, ControlHandler]) -> None:
        """Answer control requests for these dataindexes (as the supervisor does)."""
        self.desk.add(handlers)

    def answer_later(self, later: Later, ok: bool, value: Any, now: float = 0.0) -> None:
        """Answer a request a handler put off."""
        self.desk.answer_later(later, ok, value, now)
        self._keep(self.desk.take(), now)

    def take(self) -> tuple[list[list[bytes]], list[list[bytes]]]:
        """Return and forget the frames for the ROUTER and the PUB socket."""
        router, pub = self.router, self.pub
        self.router, self.pub = [], []
        return router, pub

    def _keep(self, effects: CageEffects, now: float) -> None:
        self.desk.settle(effects, now)
        self.router += effects.router
        self.pub += effects.pub
        self.events += [(line.event, line.fields) for line in effects.logs]
