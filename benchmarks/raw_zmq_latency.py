"""The transport's own request/reply latency: raw pyzmq, no asyncio, no zdse.

A client DEALER sends ``[to, body]`` to a bare ROUTER forwarder, which sends
``[to's identity, from, body]`` on; an echo DEALER answers the same way. All
sockets are blocking pyzmq sockets in three processes on free loopback
ports: the least any request through a ZeroMQ router can cost on this
machine, to set beside ``zdse-bench reqrep``'s numbers.

    .venv/bin/python benchmarks/raw_zmq_latency.py [REQUESTS]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import zmq

WARMUP = 200


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forward(endpoint: str) -> None:
    """The bare forwarder: swap destination and source, send on."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(endpoint)
    print("ready", flush=True)
    while True:
        source, dest, body = router.recv_multipart()
        router.send_multipart([dest, source, body])


def echo(endpoint: str) -> None:
    """The replier: send every body back to whoever sent it."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.identity = b"echo"
    dealer.connect(endpoint)
    print("ready", flush=True)
    while True:
        source, body = dealer.recv_multipart()
        dealer.send_multipart([source, body])


def client(endpoint: str, requests: int) -> None:
    """Time ``requests`` sequential round trips; print p50 and p99 in microseconds."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(endpoint)
    payload = b"x" * 100
    latencies = []
    for i in range(WARMUP + requests):
        start = time.perf_counter()
        dealer.send_multipart([b"echo", payload])
        dealer.recv_multipart()
        if i >= WARMUP:
            latencies.append(time.perf_counter() - start)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1e6
    p99 = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1e6
    print(f"raw pyzmq through a bare ROUTER forwarder: p50 {p50:,.0f} us, p99 {p99:,.0f} us "
          f"({requests} requests, 100-byte payloads)")
    dealer.close(linger=0)
    ctx.term()


def main() -> None:
    """Start the forwarder and the echo, run the client, stop them."""
    if len(sys.argv) > 2 and sys.argv[1] in ("forward", "echo"):
        (forward if sys.argv[1] == "forward" else echo)(sys.argv[2])
        return
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    procs = []
    try:
        for role in ("forward", "echo"):
            proc = subprocess.Popen([sys.executable, __file__, role, endpoint],
                                    stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"{role} did not start")
        time.sleep(0.2)  # the echo's connection to the forwarder: nothing to wait on in raw zmq
        client(endpoint, requests)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
