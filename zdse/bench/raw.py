"""The transport's own latency: raw pyzmq, no asyncio, no msgpack, no zdse.

The ``raw`` target of ``zdse-bench reqrep``: a client DEALER sends
``[to, body]`` to a bare ROUTER forwarder, which sends ``[from, body]`` to
``to``; an echo DEALER sends every body back the same way. Every socket is a
blocking pyzmq socket: the least a request through a ZeroMQ router costs on
this machine, whatever runs on top.

``python -m zdse.bench.raw forward|echo|client ENDPOINT [--n N] [--timeout S]``;
like the other workers it says ``{"ready": true}`` on stdout, starts on a
``go`` line and ends at the end of stdin.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import zmq

from zdse.bench.stats import percentile

__all__ = ["main"]

WARMUP = 200
ECHO = b"echo"


def _say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def forward(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
    """Swap destination and source and send on; answer a hello with an ack."""
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    _say(ready=True)
    while True:
        source, dest, body = router.recv_multipart()
        router.send_multipart([source, b"", b"ack"] if not dest else [dest, source, body])


def echo(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, timeout: float) -> None:
    """Send every body back to whoever sent it, once the forwarder knows us."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.identity = ECHO
    dealer.rcvtimeo = int(timeout * 1000)
    dealer.connect(endpoint)
    dealer.send_multipart([b"", b"hello"])
    dealer.recv_multipart()  # the ack: the forwarder can route to us now
    _say(ready=True)
    while True:
        source, body = dealer.recv_multipart()
        dealer.send_multipart([source, body])


def client(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, n: int, size: int,
           timeout: float) -> None:
    """On ``go``, time ``n`` sequential round trips; report p50, p99 and requests/s."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.rcvtimeo = int(timeout * 1000)
    dealer.connect(endpoint)
    _say(ready=True)
    while (line := sys.stdin.readline()) and line.strip() != "go":
        pass
    payload = b"x" * size
    clock = time.perf_counter
    for _ in range(WARMUP):
        dealer.send_multipart([ECHO, payload])
        dealer.recv_multipart()
    latencies = []
    begin = clock()
    for _ in range(n):
        start = clock()
        dealer.send_multipart([ECHO, payload])
        dealer.recv_multipart()
        latencies.append(clock() - start)
    elapsed = clock() - begin
    latencies.sort()
    _say(p50_us=percentile(latencies, 50) * 1e6, p99_us=percentile(latencies, 99) * 1e6,
         rps=n / elapsed if elapsed > 0 else 0.0, requests=n)
    while sys.stdin.readline():
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one role until the orchestrator is done with it (or SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m zdse.bench.raw")
    parser.add_argument("role", choices=("forward", "echo", "client"))
    parser.add_argument("endpoint")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        if args.role == "forward":
            forward(ctx, args.endpoint)
        elif args.role == "echo":
            echo(ctx, args.endpoint, args.timeout)
        else:
            client(ctx, args.endpoint, args.n, args.size, args.timeout)
    except zmq.Again:
        _say(error=f"{args.role}: no answer within {args.timeout}s")
        return 1
    finally:
        ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
