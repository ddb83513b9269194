"""How the amqp bridge keeps up: notifications into a latest-state table of 1,000 and N instances.

Everything is real and on loopback: a RabbitMQ broker (tests/rabbitmq.py),
oslo.messaging's own Notifier in a process of its own (tests/oslo_notifier.py),
a cage, ``zdse-node --module amqp`` keyed by ``instance_id``, and a subscriber
(:class:`zdse.Bus`, in this process) to ``compute.instance.update@instance_id``.

For each table size (``--sizes``, default 1,000 then 100,000, in one run):

1. *fill*: the Notifier sends one notification per new instance until the
   subscriber's view holds that many;
2. *absorb*: the bridge is stopped (SIGSTOP), the Notifier queues ``--burst``
   updates of existing instances in RabbitMQ, the bridge is continued
   (SIGCONT): notifications per second from then until the subscriber's view
   holds the last one. The Notifier is out of the measure: it alone sends
   about 1,000 a second;
3. *reference*: a bare aio-pika consumer (the bridge's AMQP library, the same
   prefetch, one ack per message, nothing else) drains the same burst from a
   queue of its own bound like the bridge's: RabbitMQ's own delivery rate;
4. *live*: ``--live`` more updates sent while the bridge runs: the lag from
   the Notifier's return for the last one to the view holding it.

Then, once: *late*, a second subscriber joins and takes the whole table
(the largest size) as a snapshot, in parts past 4 MiB: seconds from its
subscribe to its view holding every instance.

Usage::

    .venv/bin/python benchmarks/notifications.py [--sizes 1000,100000] [--burst 5000]
        [--live 1000] [--json]

The latest-state table is a map changed in place (``change_keys``); past
4 MiB (some 10,000 of these rows) its snapshots travel in parts
(docs/protocol.md), so it is not bounded by one bus message. Filling the
table runs at the Notifier's pace (700 to 850 a second here: 2 minutes or
more for 100,000), most of a run's time.
Every process it starts is killed before it exits, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402

from tests.rabbitmq import RabbitMQ, find_scripts  # noqa: E402
from tests.support import BIN, Processes, free_port  # noqa: E402
from zdse.log import configure  # noqa: E402
from zdse.node.bus import Bus, Update  # noqa: E402
from zdse.procs import Proc  # noqa: E402
from zdse.wire.endpoints import Endpoints  # noqa: E402

EVENT = "compute.instance.update"
LATEST = f"{EVENT}@instance_id"
#: The cage's heartbeat in this run: a bridge stopped for a burst (seconds)
#: must not be expired meanwhile (three heartbeats).
HEARTBEAT = 10.0
PREFETCH = 256


class View:
    """The subscriber's callback: waits for a size, or for one notification (its ``n``)."""

    def __init__(self) -> None:
        self.size = 0
        self.want_size = -1
        self.want: tuple[str, int] | None = None
        self.done = asyncio.Event()
        self.at = 0.0
        #: When the view got there: time.time(), to compare with the Notifier's.
        self.wall = 0.0
        #: Snapshots taken: the first, and one per resync.
        self.snapshots = 0

    def expect_size(self, size: int) -> None:
        self.want_size, self.want = size, None
        self.done.clear()
        self._check_size()

    def expect(self, instance: str, n: int) -> None:
        self.want, self.want_size = (instance, n), -1
        self.done.clear()

    def __call__(self, update: Update) -> None:
        if update.kind not in ("snapshot", "delta"):
            return
        self.size = len(update.view or {})
        if update.kind == "snapshot":
            self.snapshots += 1
        if self.want is not None:
            row = (update.view or {}).get(self.want[0])
            if row is not None and row["payload"].get("n") == self.want[1]:
                self._hit()
        else:
            self._check_size()

    def _check_size(self) -> None:
        if self.want_size >= 0 and self.size >= self.want_size:
            self._hit()

    def _hit(self) -> None:
        if not self.done.is_set():
            self.at = time.monotonic()
            self.wall = time.time()
            self.done.set()


class Notifier:
    """oslo.messaging's Notifier in its own process, one notification per stdin line."""

    def __init__(self, procs: Processes, url: str) -> None:
        self.proc = procs.python(
            "oslo-notifier", "tests.oslo_notifier", url.replace("amqp://", "rabbit://", 1),
            "--exchange", "nova", "--publisher", "compute.bench",
            env={"PYTHONWARNINGS": "ignore::DeprecationWarning"}, cwd=ROOT)
        self.sent = 0
        self.proc.wait_event("ready", timeout=60)

    async def emit(self, instances: range | list[int]) -> int:
        """Ask for one notification per instance number (returns before they are sent).

        The requests are written from a thread: the pipe holds some 64 KiB,
        and a write that waits for the Notifier to read must not stop this
        loop, where the subscriber's bus heartbeats.

        Returns:
            the number (payload ``n``) of the last one.
        """
        stdin = self.proc.popen.stdin
        assert stdin is not None
        lines = [json.dumps({"event_type": EVENT, "payload": {
            "instance_id": f"i-{k}", "state": "active", "n": self.sent + i}})
            for i, k in enumerate(instances)]
        data = ("\n".join(lines) + "\n").encode()

        def write() -> None:
            stdin.write(data)
            stdin.flush()

        self.sent += len(lines)
        await asyncio.to_thread(write)
        return self.sent - 1

    async def wait_sent(self, timeout: float) -> float:
        """Wait until the Notifier returned for all; return when it did (time.time())."""
        event = await asyncio.to_thread(self.proc.wait_event, "emitted", timeout,
                                        count=self.sent)
        return float(event["at"])


async def bare_rate(url: str, queue_name: str, count: int) -> float:
    """Drain ``count`` messages from ``queue_name`` as a bare consumer; messages per second."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(queue_name)
        got = 0
        done = asyncio.Event()
        began = 0.0

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got, began
            if not got:
                began = time.monotonic()
            got += 1
            await message.ack()
            if got == count:
                done.set()

        start = time.monotonic()
        await queue.consume(take)
        await asyncio.wait_for(done.wait(), 300)
        return count / (time.monotonic() - start)


async def bare_queue(url: str, name: str) -> None:
    """A queue bound as the bridge's is (nova, notifications.*), emptied."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, arguments={"x-expires": 3_600_000})
        await queue.bind("nova", routing_key="notifications.*")
        await queue.purge()


async def measure(args: argparse.Namespace, procs: Processes, broker: RabbitMQ) -> dict[str, Any]:
    url = broker.add_vhost("bench")
    endpoints = Endpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
    env = {"ZDSE_ROUTER": endpoints.router, "ZDSE_PUB": endpoints.pub,
           "ZDSE_HEARTBEAT": str(HEARTBEAT)}

    def spawn(name: str, argv: list[str]) -> Proc:
        return procs.start(name, argv, env=env)

    cage = spawn("cage", [str(BIN / "zdse-proxy")])
    await asyncio.to_thread(cage.wait_event, "cage.started")
    biggest = max(args.sizes)
    options = {"url": url, "exchanges": "nova", f"key.{EVENT}": "instance_id",
               "latest_size": str(biggest * 2), "latest_bytes": str(2**31),
               "prefetch": str(PREFETCH), "heartbeat": "120"}
    argv = [str(BIN / "zdse-node"), "--module", "amqp", "--name", "openstack1"]
    for key, value in options.items():
        argv += ["--set", f"{key}={value}"]
    bridge = spawn("bridge", argv)
    await asyncio.to_thread(bridge.wait_event, "amqp.consuming", 60)
    notifier = Notifier(procs, url)
    view = View()
    results: list[dict[str, Any]] = []
    async with Bus("bench.subscriber", endpoints=endpoints, connect_timeout=30) as bus:
        bus.subscribe(f"openstack1.{EVENT}", LATEST, view)
        filled = 0
        for size in args.sizes:
            # 1. fill
            view.expect_size(size)
            began = time.monotonic()
            emitting = asyncio.create_task(notifier.emit(range(filled, size)))
            await asyncio.wait_for(view.done.wait(), args.timeout)
            await emitting
            fill_s = time.monotonic() - began
            filled = size
            stats = await bus.request("openstack1", "@stats")
            # 2. absorb a burst queued while the bridge was stopped
            await bare_queue(url, "bench.bare")
            os.kill(bridge.popen.pid, signal.SIGSTOP)
            try:
                burst = [k % size for k in range(args.burst)]
                last = await notifier.emit(burst)
                await notifier.wait_sent(args.timeout)
                view.expect(f"i-{burst[-1]}", last)
                began = time.monotonic()
            finally:
                os.kill(bridge.popen.pid, signal.SIGCONT)
            await asyncio.wait_for(view.done.wait(), args.timeout)
            absorb = args.burst / (view.at - began)
            after = await bus.request("openstack1", "@stats")
            # Deliveries the bridge took per turn during the burst.
            mean_batch = ((after["received"] - stats["received"])
                          / max(1, after["batches"] - stats["batches"]))
            # 3. RabbitMQ alone, the same burst
            reference = await bare_rate(url, "bench.bare", args.burst)
            # 4. live: lag from the last send to the view
            live = [k % size for k in range(args.live)]
            view.expect(f"i-{live[-1]}", notifier.sent + len(live) - 1)
            began = time.monotonic()
            await notifier.emit(live)
            sent_at = await notifier.wait_sent(args.timeout)
            await asyncio.wait_for(view.done.wait(), args.timeout)
            results.append({
                "instances": size,
                "fill_s": round(fill_s, 2),
                "absorb_per_s": round(absorb),
                "rabbitmq_bare_per_s": round(reference),
                "ratio_to_rabbitmq": round(absorb / reference, 3),
                "live_per_s": round(args.live / (view.at - began)),
                "lag_ms": round((view.wall - sent_at) * 1000, 1),
                "publish_errors": stats["publish_errors"],
                "absorb_mean_batch": round(mean_batch, 1),
            })
            print(json.dumps(results[-1]), file=sys.stderr)
        # 5. late: a new subscriber's snapshot of the whole table (in parts
        # once it outgrows PART_BYTES): from its subscribe to its view whole.
        late = View()
        late.expect_size(args.sizes[-1])
        async with Bus("bench.late", endpoints=endpoints, connect_timeout=30) as late_bus:
            began = time.monotonic()
            late_bus.subscribe(f"openstack1.{EVENT}", LATEST, late)
            await asyncio.wait_for(late.done.wait(), args.timeout)
            late_s = late.at - began
            late_lost = late_bus.statistics().get("lost_parts", 0)
        pubdata = await bus.request("openstack1", "pubdata")
        statistics = bus.statistics()
    small, large = results[0], results[-1]
    return {
        "scenario": "notifications",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "burst": args.burst,
        "live": args.live,
        "results": results,
        "large_over_small": round(large["absorb_per_s"] / small["absorb_per_s"], 3),
        "table": pubdata.get(LATEST),
        "subscriber_resyncs": statistics.get("resyncs", 0),
        "subscriber_snapshots": view.snapshots,
        "late_snapshot_s": round(late_s, 2),
        "late_lost_parts": late_lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="notifications", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,100000",
                        help="table sizes (instances), comma-separated, ascending")
    parser.add_argument("--burst", type=int, default=5000, help="notifications per burst")
    parser.add_argument("--live", type=int, default=1000, help="notifications sent live")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.sizes != sorted(args.sizes) or args.sizes[0] < 1:
        parser.error("--sizes: give table sizes in ascending order")
    configure("warning", stream=sys.stderr)  # stdout is the report's
    scripts = find_scripts()
    if scripts is None:
        print("notifications: rabbitmq-server is not installed", file=sys.stderr)
        return 2
    procs = Processes()
    try:
        with RabbitMQ(scripts) as broker:
            broker.start()
            report = asyncio.run(measure(args, procs, broker))
    finally:
        procs.close()
    if args.json:
        print(json.dumps(report))
    else:
        for r in report["results"]:
            print(f"{r['instances']:>7} instances: absorbs {r['absorb_per_s']:>6}/s "
                  f"(RabbitMQ to a bare consumer {r['rabbitmq_bare_per_s']}/s, "
                  f"{r['ratio_to_rabbitmq']}x), live {r['live_per_s']}/s, "
                  f"lag {r['lag_ms']} ms, fill {r['fill_s']} s")
        print(f"rate at {report['results'][-1]['instances']} over at "
              f"{report['results'][0]['instances']}: {report['large_over_small']}x")
        print(f"a late subscriber's snapshot of {report['results'][-1]['instances']}: "
              f"{report['late_snapshot_s']} s ({report['late_lost_parts']} parts lost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
