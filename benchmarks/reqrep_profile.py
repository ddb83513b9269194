"""Where a request's round trip goes: py-spy samples of the requester, the cage and the replier.

Runs ``zdse-bench reqrep``'s own processes (the cage, the replier and the
client of zdse/bench/worker.py) for ``--requests`` sequential requests and,
while the client times them, samples one process at a time with py-spy
(``--idle``, so waiting shows too). Each process gets a run of its own, so
only one sampler loads the machine at a time. Every sample of the process's
main thread is put in one *layer* by the innermost frame that names one
(table ``LAYERS`` below); a layer's share of the samples times the wall time
of one request is its microseconds per request. The raw pyzmq round trip
(zdse/bench/raw.py) is measured in the same run, without a sampler.

Usage::

    .venv/bin/python benchmarks/reqrep_profile.py [--requests 20000] [--rate 1000] [--json]

py-spy must be installed (the ``dev`` extra) and allowed to attach
(ptrace). Every process started is killed before the script exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from zdse.bench import scenarios
from zdse.procs import Processes

#: (layer, substrings of a frame "function (file:line)"), tried innermost
#: frame first, first match wins; a sample matching none is "other".
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("wait (epoll / zmq poll)", ("select (selectors.py", "poll (zmq/sugar/poll.py",
                                 "poll (zmq/backend")),
    ("zmq send", ("send_frames (", "send (zmq/", "send_multipart (zmq/")),
    ("zmq recv", ("recv_frames (", "recv (zmq/", "recv_multipart (zmq/")),
    ("zmq getsockopt (EVENTS)", ("has_input (", "poke (zdse/wire/zmqio", "get (zmq/",
                                 "getsockopt (zmq/", "_check (zdse/wire/zmqio")),
    ("codec (msgpack, frames <-> values)", ("zdse/wire/codec.py", "msgpack")),
    ("timers (call_later / cancel)", ("call_later (", "call_at (", "cancel (asyncio/events",
                                      "TimerHandle", "heappush", "heappop",
                                      "zdse/node/deadlines.py")),
    ("futures / tasks (resolve, wake)", ("asyncio/futures.py", "asyncio/tasks.py",
                                         "set_result (", "__step (", "__wakeup (")),
    ("core logic (node / cage cores)", ("zdse/node/core.py", "zdse/cage/core.py",
                                        "zdse/node/requests.py", "zdse/node/session.py",
                                        "zdse/node/effects.py", "zdse/node/events.py",
                                        "zdse/wire/routes.py", "zdse/cage/tables.py",
                                        "zdse/cage/metrics.py")),
    ("bus shell (node/bus.py, transport.py, dispatcher.py)",
     ("zdse/node/bus.py", "zdse/node/transport.py", "zdse/node/dispatcher.py")),
    ("cage shell (proxy.py)", ("zdse/cage/proxy.py",)),
    ("bench worker (timing, payload)", ("zdse/bench/worker.py",)),
    ("asyncio loop (_run_once, handles)", ("asyncio/base_events.py", "asyncio/events.py",
                                           "asyncio/selector_events.py")),
]

#: Frames of threads other than the main one (the worker's stdin reader).
OTHER_THREADS = ("concurrent/futures/thread.py", "threading.py")


def classify(stack: list[str]) -> tuple[str, str] | None:
    """The layer of one sample (frames outermost first) and the frame that placed it there;
    None for a sample of another thread."""
    if any(marker in frame for frame in stack for marker in OTHER_THREADS):
        return None
    for frame in reversed(stack):
        for layer, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return layer, frame
    return "other", stack[-1] if stack else ""


def layers_of(raw: str) -> tuple[Counter[str], Counter[str]]:
    """Samples per layer, and per placing frame, from py-spy's ``--format raw`` output."""
    counts: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        placed = classify(stack_text.split(";")[1:])  # the first item names the process
        if placed is not None:
            counts[placed[0]] += int(count)
            frames[placed[1]] += int(count)
    return counts, frames


def one_run(role: str, requests: int, rate: int, py_spy: str, workdir: str) -> dict[str, Any]:
    """Time ``requests`` requests through the cage, sampling ``role`` (cage, replier, client)."""
    procs = Processes()
    spy: subprocess.Popen[bytes] | None = None
    try:
        target = scenarios.start_target(procs, "zdse")
        opts = scenarios.Options(msgs=requests, size=100, burst=100, subs=1, timeout=120.0)
        with scenarios.ready_pair(procs, target, opts, "reqrep-server",
                                  "reqrep-client") as (server, client):
            pid = {"cage": target.server, "replier": server, "client": client}[role]
            assert pid is not None
            out = os.path.join(workdir, f"{role}.txt")
            cpu0 = pid.cpu_seconds()
            client.say("go")
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(pid.popen.pid), "--rate", str(rate), "--idle",
                 "--nonblocking", "--format", "raw", "--output", out],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            got = client.expect("p50_us", opts.timeout)
            cpu = pid.cpu_seconds() - cpu0
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
            _, err = spy.communicate(timeout=30)
            spy = None
            if not os.path.exists(out):
                raise SystemExit(f"py-spy wrote nothing: {err.decode(errors='replace').strip()}")
            with open(out) as f:
                counts, frames = layers_of(f.read())
            return {"role": role, "p50_us": got["p50_us"], "p99_us": got["p99_us"],
                    "rps": got["rps"], "cpu_us_per_request": cpu / (requests + 200) * 1e6,
                    "samples": dict(counts), "top_frames": dict(frames.most_common(25))}
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        procs.close()


def raw_round(requests: int) -> dict[str, Any]:
    """The raw pyzmq round trip through a bare forwarder, no sampler."""
    procs = Processes()
    try:
        target = scenarios.start_target(procs, "raw")
        opts = scenarios.Options(msgs=requests, size=100, burst=100, subs=1, timeout=120.0)
        return scenarios.reqrep(procs, target, opts)
    finally:
        procs.close()


def per_request(run: dict[str, Any]) -> dict[str, float]:
    """Each layer's microseconds per request: its share of the samples x wall time per request."""
    samples: dict[str, int] = run["samples"]
    total = sum(samples.values()) or 1
    wall_us = 1e6 / run["rps"]
    return {layer: count / total * wall_us for layer, count in samples.items()}


def main(argv: list[str] | None = None) -> int:
    """Profile each process in turn and print the per-layer table."""
    parser = argparse.ArgumentParser(prog="reqrep_profile.py", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(py_spy):
        print("py-spy is not installed (pip install py-spy, the 'dev' extra)", file=sys.stderr)
        return 1
    runs = []
    with tempfile.TemporaryDirectory(prefix="zdse-profile-") as workdir:
        raw = raw_round(args.requests)
        for role in ("client", "cage", "replier"):
            runs.append(one_run(role, args.requests, args.rate, py_spy, workdir))
    report = {"raw": raw, "runs": runs, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"raw pyzmq: p50 {raw['p50_us']:.0f} us, p99 {raw['p99_us']:.0f} us")
    for run in runs:
        print(f"\n{run['role']}: p50 {run['p50_us']:.0f} us, p99 {run['p99_us']:.0f} us, "
              f"{1e6 / run['rps']:.0f} us wall and {run['cpu_us_per_request']:.0f} us CPU "
              f"per request")
        for layer, us in sorted(per_request(run).items(), key=lambda kv: -kv[1]):
            print(f"  {layer:40} {us:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
