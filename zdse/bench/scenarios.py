"""The networked scenarios, one round each against one target.

A *target* is what sits between the workers: the cage (``zdse``), the bare
forwarder (``floor``) or ``nats-server`` (``nats``). A round starts fresh
worker processes, waits until they say they are ready, cues the sender,
collects the results and ends the workers; servers live for the whole run.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from zdse.errors import ZdseError
from zdse.procs import Proc, Processes, free_port

__all__ = ["ROUNDS", "START_TIMEOUT", "BenchError", "Options", "Target", "nats_server_path",
           "start_target"]

#: Seconds to wait for a server to come up or a worker to say it is ready.
START_TIMEOUT = 30.0

WORKER = "zdse.bench.worker"
RAW = "zdse.bench.raw"


class BenchError(ZdseError):
    """A bench run cannot go on: a server is missing, a worker lost messages."""


def nats_server_path() -> str | None:
    """Where nats-server is (Debian installs it in /usr/sbin), or None."""
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")


@dataclass(frozen=True, slots=True)
class Options:
    """What every round of a run shares."""

    msgs: int
    size: int
    burst: int
    subs: int
    timeout: float


@dataclass(slots=True)
class Target:
    """A server the workers go through, and how workers reach it."""

    name: str
    system: str  # the workers' --system: zdse (cage and floor), nats, or raw
    connect: list[str] = field(default_factory=list)
    server: Proc | None = None
    #: The other cages of a target of several (``cages``): their CPU counts too.
    more: list[Proc] = field(default_factory=list)


def start_target(procs: Processes, name: str, cages: int = 1) -> Target:
    """Start the server of target ``name`` on free loopback ports.

    ``zdse`` is the cage, ``cages`` that many cages side by side (every
    worker lists them all: docs/redundancy.md), ``floor`` the bare
    forwarder for zdse nodes, ``raw`` the bare forwarder for raw pyzmq
    clients (reqrep only), ``nats`` a nats-server.

    Raises:
        BenchError: the server did not come up, or nats-server is not installed.
    """
    if name == "nats":
        path = nats_server_path()
        if path is None:
            raise BenchError("nats-server is not installed (Debian package nats-server)")
        port = free_port()
        server = procs.start("nats-server", [path, "-a", "127.0.0.1", "-p", str(port)])
        server.expect("ready", START_TIMEOUT, contains="Server is ready")
        return Target(name, "nats", ["--nats", f"nats://127.0.0.1:{port}"], server)
    router = f"tcp://127.0.0.1:{free_port()}"
    pub = f"tcp://127.0.0.1:{free_port()}"
    if name == "raw":
        server = procs.python("raw-forward", RAW, "forward", router, lines_from="stdout")
        server.expect("ready", START_TIMEOUT)
        return Target(name, "raw", [router], server)
    if name == "cages":
        pairs = [(router, pub)] + [(f"tcp://127.0.0.1:{free_port()}",
                                    f"tcp://127.0.0.1:{free_port()}") for _ in range(cages - 1)]
        servers = [_cage(procs, f"cage{i}", r, p) for i, (r, p) in enumerate(pairs)]
        return Target(name, "zdse", ["--router", ",".join(r for r, _ in pairs),
                                     "--pub", ",".join(p for _, p in pairs)],
                      servers[0], servers[1:])
    if name == "zdse":
        server = _cage(procs, "cage", router, pub)
    elif name == "floor":
        server = procs.python("floor", "zdse.bench.floor", "--router", router, "--pub", pub,
                              lines_from="stdout")
        server.expect("ready", START_TIMEOUT)
    else:
        raise BenchError(f"unknown target {name!r}")
    return Target(name, "zdse", ["--router", router, "--pub", pub], server)


def _cage(procs: Processes, name: str, router: str, pub: str) -> Proc:
    cage = procs.python(name, "zdse.cli.proxy", "--router", router, "--pub", pub)
    cage.expect("event", START_TIMEOUT, equals="cage.started")
    return cage


def _server_cpu(target: Target) -> float:
    servers = [target.server, *target.more] if target.server is not None else []
    return sum(server.cpu_seconds() for server in servers)


def _worker(procs: Processes, target: Target, opts: Options, role: str, index: int = 0,
            n: int | None = None) -> Proc:
    if target.system == "raw":
        raw_role = {"reqrep-server": "echo", "reqrep-client": "client"}[role]
        return procs.python(f"raw.{raw_role}", RAW, raw_role, *target.connect,
                            "--n", str(opts.msgs), "--size", str(opts.size),
                            "--timeout", str(opts.timeout), lines_from="stdout")
    argv = [
        role, "--system", target.system, *target.connect,
        "--n", str(opts.msgs if n is None else n), "--size", str(opts.size),
        "--burst", str(opts.burst), "--index", str(index), "--timeout", str(opts.timeout),
    ]
    return procs.python(f"{target.name}.{role}{index}", WORKER, *argv, lines_from="stdout")


@contextlib.contextmanager
def ready_pair(procs: Processes, target: Target, opts: Options, first: str,
               second: str) -> Iterator[tuple[Proc, Proc]]:
    """Worker ``first``, then worker ``second`` once ``first`` is ready; both ended after."""
    started: list[Proc] = []
    try:
        for role in (first, second):
            started.append(_worker(procs, target, opts, role))
            started[-1].expect("ready", START_TIMEOUT)
        yield started[0], started[1]
    finally:
        for proc in started:
            procs.finish(proc)


def _complete(target: Target, what: str, got: dict[str, Any], want: int) -> None:
    if not got.get("complete") or got.get("received") != want:
        raise BenchError(
            f"{target.name}: {what} received {got.get('received')} of {want} messages "
            f"within {got.get('timeout', 'the timeout')}"
        )


def unicast(procs: Processes, target: Target, opts: Options) -> dict[str, float]:
    """One sender -> one receiver: messages per second received."""
    with ready_pair(procs, target, opts, "unicast-recv", "unicast-send") as (recv, send):
        cpu = _server_cpu(target)
        send.say("go")
        started = send.expect("start", opts.timeout)
        got = recv.expect("received", opts.timeout + 5)
        cpu = _server_cpu(target) - cpu
        _complete(target, "the receiver", got, opts.msgs)
    elapsed = got["last"] - started["start"]
    return {"msgs_per_s": opts.msgs / elapsed, "seconds": elapsed, "received": got["received"],
            "cpu_sender": started["cpu"], "cpu_receiver": got["cpu"], "cpu_server": cpu}


def fanout(procs: Processes, target: Target, opts: Options) -> dict[str, float]:
    """One publisher -> ``opts.subs`` subscriber processes: deliveries per second."""
    pub = _worker(procs, target, opts, "fanout-pub")
    subs = []
    try:
        pub.expect("ready", START_TIMEOUT)
        subs = [_worker(procs, target, opts, "fanout-sub", i) for i in range(opts.subs)]
        for sub in subs:
            sub.expect("ready", START_TIMEOUT)
        cpu = _server_cpu(target)
        pub.say("go")
        started = pub.expect("start", opts.timeout)
        results = [sub.expect("received", opts.timeout + 5) for sub in subs]
        cpu = _server_cpu(target) - cpu
        for i, got in enumerate(results):
            _complete(target, f"subscriber {i}", got, opts.msgs)
    finally:
        for proc in (pub, *subs):
            procs.finish(proc)
    elapsed = max(got["last"] for got in results) - started["start"]
    deliveries = opts.msgs * opts.subs
    return {"deliveries_per_s": deliveries / elapsed, "seconds": elapsed,
            "deliveries": deliveries, "cpu_publisher": started["cpu"],
            "cpu_subscribers": sum(got["cpu"] for got in results), "cpu_server": cpu}


def reqrep(procs: Processes, target: Target, opts: Options) -> dict[str, float]:
    """Sequential request/reply: p50 and p99 latency, requests per second."""
    with ready_pair(procs, target, opts, "reqrep-server", "reqrep-client") as (server, client):
        cpu = [_server_cpu(target), client.cpu_seconds(), server.cpu_seconds()]
        client.say("go")
        got = client.expect("p50_us", opts.timeout)
        cpu = [_server_cpu(target) - cpu[0], client.cpu_seconds() - cpu[1],
               server.cpu_seconds() - cpu[2]]
    out = {k: float(got[k]) for k in ("p50_us", "p99_us", "rps", "requests")}
    out["cpu_server"], out["cpu_client"], out["cpu_replier"] = cpu
    return out


ROUNDS = {"unicast": unicast, "fanout": fanout, "reqrep": reqrep}
