"""The least a round trip costs when both ends run on asyncio, beside raw pyzmq's.

Issue 15 asks zdse's request/reply for 0.80 of raw pyzmq's round trip. This
measures what asyncio alone takes of that: the raw target's forwarder
(zdse/bench/raw.py) with its two ends either raw (blocking ``recv``) or the
least an asyncio program can do, none of zdse's layers: a DEALER's FD
watched with ``loop.add_reader``, drained while ``ZMQ_EVENTS`` says
``POLLIN`` (zdse.wire.zmqio.has_input); the client
awaits a future the reader resolves, the echo sends back from the reader.
The two kinds take turns, ``--runs`` times each; it prints each run's p50,
the medians and their ratio (raw / asyncio, as ``vs_raw``).

Usage::

    .venv/bin/python benchmarks/asyncio_floor.py [--runs 4] [--requests 3000]

Every process started is killed before the script exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import cast

import zmq

from zdse.bench.raw import ECHO, WARMUP
from zdse.bench.stats import percentile
from zdse.procs import free_port
from zdse.wire.zmqio import has_input


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """asyncio's own loop or, for ``uvloop``, uvloop's (installed by hand: not a dependency)."""
    if kind == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        return cast(asyncio.AbstractEventLoop, uvloop.new_event_loop())
    return asyncio.new_event_loop()


def echo(endpoint: str, kind: str = "asyncio") -> None:
    """An asyncio echo: the reader sends every body back to its sender."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.identity = ECHO
    dealer.connect(endpoint)
    dealer.send_multipart([b"", b"hello"])
    dealer.recv_multipart()  # the forwarder's ack: it can route to us now
    print("ready", flush=True)
    loop = _new_loop(kind)

    def readable() -> None:
        while has_input(dealer):
            dealer.send_multipart(dealer.recv_multipart(zmq.NOBLOCK), zmq.NOBLOCK)

    loop.add_reader(cast(int, dealer.getsockopt(zmq.FD)), readable)
    loop.call_soon(readable)
    loop.run_forever()


def client(endpoint: str, n: int, kind: str = "asyncio") -> None:
    """An asyncio client: ``n`` sequential round trips, each awaiting a future."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    loop = _new_loop(kind)
    waiting: list[asyncio.Future[None]] = []

    def readable() -> None:
        while has_input(dealer):
            dealer.recv_multipart(zmq.NOBLOCK)
            if waiting and not waiting[0].done():
                waiting.pop().set_result(None)

    loop.add_reader(cast(int, dealer.getsockopt(zmq.FD)), readable)

    async def run() -> float:
        latencies = []
        clock = time.perf_counter
        for i in range(WARMUP + n):
            start = clock()
            fut = loop.create_future()
            waiting.append(fut)
            dealer.send_multipart([ECHO, b"x" * 100], zmq.NOBLOCK)
            # A send may take the FD's signal of a reply already come.
            if has_input(dealer):
                readable()
            await fut
            if i >= WARMUP:
                latencies.append(clock() - start)
        return percentile(sorted(latencies), 50) * 1e6

    print(json.dumps({"p50_us": loop.run_until_complete(run())}), flush=True)


def _start(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # its "ready"
    return proc


def compare(runs: int, n: int,
            kinds: tuple[str, ...] = ("raw", "asyncio")) -> dict[str, list[float]]:
    """Each kind's p50 per run, taking turns, through one raw forwarder."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started: list[subprocess.Popen[str]] = []
    p50s: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        started.append(_start(["-m", "zdse.bench.raw", "forward", endpoint]))
        for _ in range(runs):
            for kind in p50s:
                if kind == "raw":
                    end = _start(["-m", "zdse.bench.raw", "echo", endpoint])
                    argv = ["-m", "zdse.bench.raw", "client", endpoint, "--n", str(n)]
                else:
                    end = _start([__file__, "echo", endpoint, "--loop", kind])
                    argv = [__file__, "client", endpoint, "--n", str(n), "--loop", kind]
                started.append(end)
                got = subprocess.run([sys.executable, *argv], input="go\n", text=True,
                                     capture_output=True, timeout=600, check=True)
                result = json.loads(got.stdout.splitlines()[-1])
                p50s[kind].append(float(result["p50_us"]))
                end.kill()
                end.wait()
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
    return p50s


def main(argv: list[str] | None = None) -> int:
    """Run a role (echo, client) or, by default, the comparison."""
    parser = argparse.ArgumentParser(prog="asyncio_floor.py", description=__doc__.split("\n")[0])
    parser.add_argument("role", nargs="?", choices=("echo", "client"))
    parser.add_argument("endpoint", nargs="?")
    parser.add_argument("--n", type=int, default=3000, help="requests (a role's)")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="a role's event loop")
    parser.add_argument("--uvloop", action="store_true",
                        help="also measure both ends on uvloop (pip install uvloop first)")
    args = parser.parse_args(argv)
    if args.role == "echo":
        echo(args.endpoint, args.loop)
    elif args.role == "client":
        client(args.endpoint, args.n, args.loop)
    else:
        kinds = ("raw", "asyncio", "uvloop") if args.uvloop else ("raw", "asyncio")
        p50s = compare(args.runs, args.requests, kinds)
        medians = {kind: statistics.median(values) for kind, values in p50s.items()}
        for kind, values in p50s.items():
            print(f"{kind:8} p50 us: {' / '.join(f'{v:.0f}' for v in values)}"
                  f"  (median {medians[kind]:.0f})")
        for kind in kinds[1:]:
            print(f"raw / {kind} at p50: {medians['raw'] / medians[kind]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
