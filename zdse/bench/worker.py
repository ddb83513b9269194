"""The bench's worker processes, one role each, for zdse and for NATS.

``python -m zdse.bench.worker ROLE --system zdse|nats ...``. Both systems'
workers are plain asyncio programs doing the same work: the same payloads,
the same message counts, the same bursts between yields to the event loop.
A worker talks to the orchestrator (:mod:`zdse.bench.cli`) in JSON lines on
stdout (``{"ready": true}``, then its result) and takes its cues on stdin:
a line ``go`` to start, end of file to finish. Times are ``time.monotonic``,
which is one clock for every process on the machine, so the orchestrator
can subtract a sender's start from a receiver's end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from zdse.bench.stats import percentile

#: Warm-up requests before reqrep's timed ones (connections, caches, JIT-free
#: but allocator-warm paths).
REQREP_WARMUP = 200
#: Seconds between warm-up publications while fanout's subscribers join.
WARM_INTERVAL = 0.02

UNICAST_KEY = "bench.recv"
FANOUT_PUBLISHER = "bench.pub"
REPLIER = "bench.rep"
DATAINDEX = "bench"


def emit(**fields: Any) -> None:
    """Tell the orchestrator something: one JSON line on stdout."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Cues:
    """The orchestrator's cues, read from stdin in a thread."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def line(self) -> str:
        """The next line ('' at end of file)."""
        return await self._loop.run_in_executor(None, sys.stdin.readline)

    async def go(self) -> None:
        """Wait for the ``go`` cue."""
        while True:
            line = await self.line()
            if not line or line.strip() == "go":
                return

    async def end(self) -> None:
        """Wait for the end of stdin: the orchestrator is done with us."""
        while await self.line():
            pass


def measured_payload(i: int, size: int) -> bytes:
    """Payload ``i`` of ``size`` bytes: a marker, the number, filler."""
    head = b"M" + i.to_bytes(8, "big")
    return head + b"x" * max(0, size - len(head))


def warm_payload(i: int, size: int) -> bytes:
    """A warm-up payload, told apart from measured ones by its first byte."""
    return b"W" + measured_payload(i, size)[1:]


class Counter:
    """Counts measured messages; notes the time the ``n``-th one arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.warm = 0
        self.last = 0.0
        self.cpu_first = 0.0
        self.cpu = 0.0
        self.done = asyncio.Event()
        self.warmed = asyncio.Event()

    def take(self, payload: bytes) -> None:
        """Count one payload (warm-up or measured)."""
        if payload[:1] == b"W":
            self.warm += 1
            self.warmed.set()
            return
        self.count += 1
        if self.count == 1:
            self.cpu_first = time.process_time()
        if self.count == self.n:
            self.last = time.monotonic()
            self.cpu = time.process_time() - self.cpu_first
            self.done.set()


async def within(aw: Awaitable[Any], timeout: float) -> bool:
    """Await ``aw`` for at most ``timeout`` seconds; tell whether it finished."""
    try:
        await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        return False
    return True


async def receive(counter: Counter, cues: Cues, timeout: float, warm_up: bool) -> None:
    """A receiver's part: (after a warm-up message, if ``warm_up``) say ready, count
    until every message came or ``timeout``, report, and wait for the cue to end."""
    if warm_up and not await within(counter.warmed.wait(), timeout):
        emit(error="no warm-up message reached this subscriber")
        return
    emit(ready=True)
    finished = await within(counter.done.wait(), timeout)
    emit(received=counter.count, last=counter.last, complete=finished, cpu=counter.cpu)
    await cues.end()


async def send_burst(
    n: int, size: int, burst: int, send: Callable[[bytes], Awaitable[None] | None]
) -> None:
    """Send ``n`` payloads, yielding to the loop every ``burst``; report the start time."""
    payloads = [measured_payload(i, size) for i in range(n)]
    cpu = time.process_time()
    start = time.monotonic()
    for i, payload in enumerate(payloads):
        pending = send(payload)
        if pending is not None:
            await pending
        if (i + 1) % burst == 0:
            await asyncio.sleep(0)
    emit(start=start, sent=n, cpu=time.process_time() - cpu)


def latency_stats(latencies: list[float], elapsed: float) -> dict[str, float]:
    """p50, p99 (microseconds) and requests per second of a reqrep run."""
    ordered = sorted(latencies)
    return {
        "p50_us": percentile(ordered, 50) * 1e6,
        "p99_us": percentile(ordered, 99) * 1e6,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "requests": len(latencies),
    }


# --- zdse -------------------------------------------------------------------


async def zdse_role(args: argparse.Namespace) -> None:
    """Run one role on the zdse bus (the cage or the bare forwarder)."""
    from zdse.node.bus import Bus, Update
    from zdse.wire.endpoints import Endpoints

    cues = Cues()
    endpoints = Endpoints(args.router, args.pub)
    counter = Counter(args.n)
    role = args.role

    def bus(name: str, **kw: Any) -> Bus:
        return Bus(name, endpoints=endpoints, connect_timeout=args.timeout, **kw)

    if role == "unicast-recv":
        async with bus(UNICAST_KEY, on_message=lambda s, d, data: counter.take(data)):
            await receive(counter, cues, args.timeout, warm_up=False)
    elif role == "unicast-send":
        async with bus(f"bench.send{args.index}") as b:
            emit(ready=True)
            await cues.go()
            await send_burst(
                args.n, args.size, args.burst, lambda p: b.send(UNICAST_KEY, DATAINDEX, p)
            )
            await cues.end()
    elif role == "fanout-pub":
        async with bus(FANOUT_PUBLISHER) as b:
            b.publish(DATAINDEX, warm_payload(0, args.size))
            emit(ready=True)
            await warm_until_go(cues, args.size, lambda p: b.publish(DATAINDEX, p))
            await send_burst(
                args.n, args.size, args.burst, lambda p: b.publish(DATAINDEX, p)
            )
            await cues.end()
    elif role == "fanout-sub":
        def on_update(update: Update) -> None:
            if update.kind == "delta":
                counter.take(update.data[1])

        async with bus(f"bench.sub{args.index}") as b:
            b.subscribe(FANOUT_PUBLISHER, DATAINDEX, on_update)
            await receive(counter, cues, args.timeout, warm_up=True)
    elif role == "reqrep-server":
        async with bus(REPLIER, on_request=lambda s, d, a: a):
            emit(ready=True)
            await cues.end()
    elif role == "reqrep-client":
        async with bus(f"bench.req{args.index}") as b:
            emit(ready=True)
            await cues.go()
            payload = measured_payload(0, args.size)

            async def one() -> None:
                await b.request(REPLIER, DATAINDEX, payload)

            await timed_requests(args, one)
            await cues.end()
    else:
        raise SystemExit(f"unknown role {role!r}")


async def warm_until_go(
    cues: Cues, size: int, publish: Callable[[bytes], Awaitable[None] | None]
) -> None:
    """Publish warm-up payloads until the ``go`` cue, so late subscribers get live."""
    go = asyncio.ensure_future(cues.go())
    i = 1
    while not go.done():
        pending = publish(warm_payload(i, size))
        if pending is not None:
            await pending
        i += 1
        await asyncio.wait([go], timeout=WARM_INTERVAL)
    await go


async def timed_requests(args: argparse.Namespace, one: Callable[[], Awaitable[None]]) -> None:
    """Warm up, then time ``args.n`` sequential requests and report."""
    for _ in range(REQREP_WARMUP):
        await one()
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    for _ in range(args.n):
        t = clock()
        await one()
        latencies.append(clock() - t)
    emit(**latency_stats(latencies, clock() - start))


# --- NATS -------------------------------------------------------------------


async def nats_role(args: argparse.Namespace) -> None:
    """Run one role against nats-server with nats-py."""
    import nats
    from nats.aio.msg import Msg

    cues = Cues()
    counter = Counter(args.n)
    role = args.role
    nc = await nats.connect(args.nats, connect_timeout=args.timeout, allow_reconnect=False)
    try:
        if role in ("unicast-recv", "fanout-sub"):
            async def on_msg(msg: Msg) -> None:
                counter.take(msg.data)

            subject = UNICAST_KEY if role == "unicast-recv" else FANOUT_PUBLISHER
            await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=10_000_000,
                               pending_bytes_limit=2**31)
            await nc.flush()
            await receive(counter, cues, args.timeout, warm_up=role == "fanout-sub")
        elif role in ("unicast-send", "fanout-pub"):
            subject = UNICAST_KEY if role == "unicast-send" else FANOUT_PUBLISHER
            emit(ready=True)
            if role == "fanout-pub":
                await warm_until_go(cues, args.size, lambda p: nc.publish(subject, p))
            else:
                await cues.go()
            await send_burst(
                args.n, args.size, args.burst, lambda p: nc.publish(subject, p)
            )
            await nc.flush()
            await cues.end()
        elif role == "reqrep-server":
            async def echo(msg: Msg) -> None:
                await msg.respond(msg.data)

            await nc.subscribe(REPLIER, cb=echo)
            await nc.flush()
            emit(ready=True)
            await cues.end()
        elif role == "reqrep-client":
            emit(ready=True)
            await cues.go()
            payload = measured_payload(0, args.size)

            async def one() -> None:
                await nc.request(REPLIER, payload, timeout=args.timeout)

            await timed_requests(args, one)
            await cues.end()
        else:
            raise SystemExit(f"unknown role {role!r}")
    finally:
        await nc.close()


def build_parser() -> argparse.ArgumentParser:
    """The worker's command line (the orchestrator builds it)."""
    parser = argparse.ArgumentParser(prog="python -m zdse.bench.worker")
    parser.add_argument("role")
    parser.add_argument("--system", choices=("zdse", "nats"), required=True)
    parser.add_argument("--router", default="")
    parser.add_argument("--pub", default="")
    parser.add_argument("--nats", default="")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    return parser


#: Set to ``uvloop`` to run every worker (both systems') on uvloop instead of
#: asyncio's own loop: a measurement (benchmarks/README.md), uvloop installed
#: by hand.
LOOP_VARIABLE = "ZDSE_BENCH_LOOP"


def loop_error() -> str | None:
    """What is wrong with the loop :data:`LOOP_VARIABLE` asks for, in one line; None if nothing."""
    kind = os.environ.get(LOOP_VARIABLE, "")
    if kind in ("", "asyncio"):
        return None
    if kind != "uvloop":
        return f"{LOOP_VARIABLE}={kind!r}: expected 'asyncio' or 'uvloop'"
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return f"{LOOP_VARIABLE}=uvloop: uvloop is not installed (not a dependency of zdse)"
    return None


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on asyncio's loop, or on uvloop's if :data:`LOOP_VARIABLE` asks."""
    if os.environ.get(LOOP_VARIABLE) == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        uvloop.run(main)
    else:
        asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    """Run one worker role to its end."""
    args = build_parser().parse_args(argv)
    if args.system == "zdse":
        from zdse.log import configure

        configure("warning")
        run(zdse_role(args))
    else:
        run(nats_role(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
