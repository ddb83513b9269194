"""Run real zdse processes on free loopback ports and wait on their handshakes.

Processes log JSON lines to stderr; :class:`zdse.procs.Proc` turns them
into events that tests wait on (``cage.started``, ``node.started``, ...), so
no test sleeps to wait for a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from tests.support import BIN, Processes, free_port
from zdse.errors import RequestTimeout
from zdse.node.bus import Bus, Update
from zdse.procs import WAIT, Proc
from zdse.wire.endpoints import Endpoints

__all__ = ["TEST_HEARTBEAT", "TEST_REFRESH", "WAIT", "Cages", "Cluster", "Proc", "Updates",
           "answered", "asked_until", "run", "same_views", "write_json"]

T = TypeVar("T")

#: Heartbeat used by the tests' cages: fast, so expiry tests end quickly.
TEST_HEARTBEAT = 0.2
#: Subscription refresh used by the tests' nodes.
TEST_REFRESH = 0.5


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a coroutine to completion with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def answered(bus: Bus, service: str, dataindex: str,
                   retry_on: tuple[type[Exception], ...] = (RequestTimeout,),
                   timeout: float = WAIT) -> Any:
    """The answer to a request asked again (a second each try) while it fails with
    ``retry_on``: a request may be lost with a cage that dies or a queue that drops.
    The last failure is raised past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await bus.request(service, dataindex, timeout=1)
        except retry_on:
            if time.monotonic() > deadline:
                raise


async def asked_until(bus: Bus, key: str, dataindex: str, done: Callable[[Any], bool],
                      timeout: float = WAIT,
                      meanwhile: Callable[[], Awaitable[object]] | None = None) -> Any:
    """Ask ``key`` for ``dataindex`` again, each round trip after the last, until ``done``
    holds for the answer or ``timeout`` passes; return the last answer, for the caller
    to assert on. ``meanwhile`` runs between two asks (a check of its own, a pause)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await bus.request(key, dataindex)
        if done(answer) or time.monotonic() > deadline:
            return answer
        if meanwhile is not None:
            await meanwhile()


class Cluster:
    """A cage and its nodes on free loopback ports, all killed by ``procs``."""

    def __init__(self, procs: Processes, tmp: Path, heartbeat: float = TEST_HEARTBEAT) -> None:
        self.procs = procs
        self.tmp = tmp
        self.heartbeat = heartbeat
        self.endpoints = Endpoints(
            f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        )
        self.env = {
            "ZDSE_ROUTER": self.endpoints.router,
            "ZDSE_PUB": self.endpoints.pub,
            "ZDSE_HEARTBEAT": str(heartbeat),
            "ZDSE_SUB_REFRESH": str(TEST_REFRESH),
        }
        self.cage: Proc | None = None

    def spawn(self, name: str, argv: list[str]) -> Proc:
        """Start a process with the cluster's environment."""
        return self.procs.start(name, argv, env=self.env)

    def start_cage(self, *extra: str) -> Proc:
        """Start zdse-proxy and wait until it has bound its sockets."""
        self.cage = self.spawn("cage", [str(BIN / "zdse-proxy"), *extra])
        self.cage.wait_event("cage.started")
        return self.cage

    def start_node(
        self,
        module: str,
        name: str,
        addresses: Iterable[str] = (),
        wait: bool = True,
        **options: Any,
    ) -> Proc:
        """Start zdse-node and (by default) wait until its service started."""
        argv = [str(BIN / "zdse-node"), "--module", module, "--name", name]
        for address in addresses:
            argv += ["--address", address]
        for key, value in options.items():
            argv += ["--set", f"{key}={value}"]
        node = self.spawn(name, argv)
        if wait:
            node.wait_event("node.started")
        return node

    def file_node(
        self, name: str, tables: dict[str, Any], addresses: Iterable[str] = ()
    ) -> tuple[Proc, Path]:
        """Start a ``file`` node, wait until it published ``tables``; return it and its file."""
        path = self.tmp / f"{name}.json"
        write_json(path, tables)
        node = self.start_node("file", name, addresses, path=path, poll_interval=0.05)
        node.wait_event("file.published")
        return node, path

    def bus(self, name: str = "test.client", addresses: Iterable[str] = ()) -> Bus:
        """A client Bus on this cluster's cage."""
        return Bus(name, addresses, endpoints=self.endpoints, refresh=TEST_REFRESH,
                   connect_timeout=WAIT)

    def ctl(self, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
        """Run zdse-ctl to completion."""
        env = dict(os.environ, **self.env)
        return subprocess.run(
            [str(BIN / "zdse-ctl"), *args], env=env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )


def write_json(path: Path, value: Any) -> None:
    """Replace a file's content atomically (rename), as editors do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


class Updates:
    """A subscription callback that queues updates for a test to await."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Update] = asyncio.Queue()
        #: Each publisher's view (views change in place: as of the newest
        #: update applied, which may be ahead of those read)...
        self.views: dict[str, Any] = {}
        #: ... and of the publishers whose updates the test has read (next, until).
        self.read: dict[str, Any] = {}

    def __call__(self, update: Update) -> None:
        if update.kind in ("snapshot", "delta"):
            self.views[update.publisher] = update.view
        elif update.kind == "lost":
            self.views.pop(update.publisher, None)
        self.queue.put_nowait(update)

    async def next(self, timeout: float = WAIT) -> Update:
        """The next update."""
        return self._read(await asyncio.wait_for(self.queue.get(), timeout))

    async def until(self, pred: Callable[[Update], bool], timeout: float = WAIT) -> Update:
        """Wait for an update that satisfies ``pred``; the ones before it are skipped."""
        async def loop() -> Update:
            while True:
                update = self._read(await self.queue.get())
                if pred(update):
                    return update
        return await asyncio.wait_for(loop(), timeout)

    def _read(self, update: Update) -> Update:
        if update.kind in ("snapshot", "delta"):
            self.read[update.publisher] = update.view
        elif update.kind == "lost":
            self.read.pop(update.publisher, None)
        return update

    async def until_views(self, want: dict[str, Any], timeout: float = WAIT) -> None:
        """Wait until the views by publisher equal ``want`` (rows compared as multisets)."""
        async def loop() -> None:
            while not same_views(self.views, want):
                await self.queue.get()
        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"views {self.views!r} never became {want!r}") from None


def same_views(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Compare two {publisher: view} maps; list tables as multisets."""
    from zdse.node.delta import same

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


class Cages(Cluster):
    """Several cages side by side (docs/redundancy.md), and nodes that list them all.

    ``endpoints`` and the environment (``ZDSE_ROUTER``/``ZDSE_PUB``) hold the
    lists, so every node, ctl and busproc started here uses every cage;
    :meth:`start_cage` starts one cage on its own pair, and :meth:`kill_cage`
    kills it (SIGKILL by default) to be started again on the same ports.
    """

    def __init__(self, procs: Processes, tmp: Path, count: int = 2,
                 heartbeat: float = TEST_HEARTBEAT) -> None:
        super().__init__(procs, tmp, heartbeat)
        self.each = [self.endpoints] + [
            Endpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
            for _ in range(count - 1)
        ]
        self.endpoints = Endpoints.of(self.each)
        self.env.update(ZDSE_ROUTER=self.endpoints.router, ZDSE_PUB=self.endpoints.pub)
        self.cages: dict[int, Proc] = {}
        #: Each cage's last ``cage.started`` event (its timestamp says when it bound).
        self.started: dict[int, dict[str, Any]] = {}

    def start_cage(self, *extra: str, index: int = 0) -> Proc:
        """Start cage ``index`` on its own pair and wait until it has bound its sockets."""
        one = self.each[index]
        cage = self.spawn(f"cage{index}", [str(BIN / "zdse-proxy"), "--router", one.router,
                                           "--pub", one.pub, *extra])
        self.started[index] = cage.wait_event("cage.started")
        self.cages[index] = cage
        if index == 0:
            self.cage = cage
        return cage

    def start_all(self, *extra: str) -> list[Proc]:
        """Start every cage."""
        return [self.start_cage(*extra, index=i) for i in range(len(self.each))]

    def kill_cage(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Kill cage ``index`` (and reap it)."""
        self.cages.pop(index).kill(sig)

    def only(self, index: int) -> Endpoints:
        """The endpoints of cage ``index`` alone."""
        return self.each[index]

    def wait_registered(self, proc: Proc, *also: str) -> None:
        """Wait until ``proc`` logged that every cage registered it, in whatever order, and
        each event of ``also``."""
        want = {("node.registered", cage.router) for cage in self.each} | {(e, None) for e in also}
        while want:
            event = proc.wait_for(lambda e: e.get("event") in {"node.registered", *also},
                                  "registrations")
            want.discard((event["event"], event.get("cage")))
