"""Helper processes for the fault tests: a steady publisher, a checking subscriber, a requester.

Run as ``python -m tests.busproc ROLE ...``. Each is a real :class:`zdse.Bus`
client in its own process, logs JSON lines to stderr (``proc.ready`` once
registered, ``<role>.status`` every ``--report`` seconds, rare events at
once) so :class:`zdse.procs.Proc` can wait on them, answers requests
that steer it, and exits by itself after ``--lifetime`` seconds so nothing
outlives a test that lost track of it.

The publisher's table is a pure function of ``(gen, seq)``: :func:`table`.
So a subscriber can check, at every update, that its view is exactly the
publisher's data at that sequence number, and a test can tell what any
view should be without asking.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from zdse.errors import NoRouteError, RemoteError, RequestTimeout, ZdseError
from zdse.log import configure, get_logger
from zdse.node.bus import Bus, Update
from zdse.node.delta import same
from zdse.wire.endpoints import Endpoints, add_endpoint_flags


def dataindexes(count: int) -> list[str]:
    """The dataindexes a helper publishes or subscribes to: ``t0, t1, ...``.

    Several tables make several frames per loop iteration (frames join only
    messages to one key), so one publisher can push more PUB messages.
    """
    return [f"t{i}" for i in range(count)]


def table(gen: int, seq: int, window: int, pad: int) -> list[list[Any]]:
    """The publisher's data after its ``seq``-th publish: a sliding window of rows.

    Each publish adds row ``seq`` and drops row ``seq - window``, so every
    delta is a small ``rows`` delta; ``pad`` bytes per row make deltas heavier.
    """
    filler = "x" * pad
    return [[gen, k, (k * 7919) % 10007, filler] for k in range(max(1, seq - window + 1), seq + 1)]


def consistent(view: Any, window: int, pad: int) -> tuple[int, int] | None:
    """Return ``(gen, seq)`` if ``view`` is exactly ``table(gen, seq)`` for some, else None."""
    if not isinstance(view, list) or not view:
        return None
    try:
        gen = int(view[0][0])
        seq = max(int(row[1]) for row in view)
    except (TypeError, ValueError, IndexError):
        return None
    return (gen, seq) if same(view, table(gen, seq, window, pad)) else None


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size of a process in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Publisher:
    """Publishes ``table(gen, 1), table(gen, 2), ...``, steadily or in bursts on request."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seq = 0
        self.steady = args.rate > 0 and not args.paused
        #: Requests handled, by (sender, number): none may be handled twice,
        #: whatever cages they came through (docs/redundancy.md).
        self.asked: set[tuple[str, int]] = set()
        self.asked_twice = 0
        self.bus = Bus(args.name, args.address, on_request=self.on_request,
                       info={"module": "busproc.pub"},
                       endpoints=Endpoints.from_args(args, connect=True),
                       connect_timeout=args.lifetime)

    def step(self) -> None:
        """Publish the next version of every table."""
        self.seq += 1
        a = self.args
        data = table(a.gen, self.seq, a.window, a.pad)
        for dataindex in dataindexes(a.tables):
            self.bus.publish(dataindex, data)

    async def on_request(self, sender: str, dataindex: str, args: Any) -> Any:
        """Steer: ``pause``, ``resume``, ``burst`` {count}, ``state``; else the data."""
        if dataindex == "pause":
            self.steady = False
            return self.state()
        if dataindex == "resume":
            self.steady = True
            return self.state()
        if dataindex == "burst":
            # One step per loop turn, so no two deltas of one dataindex share
            # a frame: each is its own PUB message, not part of a batch.
            for _ in range(int(args["count"])):
                self.step()
                await asyncio.sleep(0)
            return self.state()
        if dataindex == "state":
            return self.state()
        if isinstance(args, dict) and isinstance(args.get("n"), int):
            mark = (sender, args["n"])
            self.asked_twice += mark in self.asked
            self.asked.add(mark)
        return self.bus.answer_published(sender, dataindex, args)

    def state(self) -> dict[str, Any]:
        """Generation and sequence number of the data now published."""
        return {"gen": self.args.gen, "seq": self.seq}

    async def run(self, log: Any) -> None:
        """Publish at ``--rate`` while not paused (the first version went out before opening)."""
        interval = 1.0 / self.args.rate if self.args.rate > 0 else 0.05
        while True:
            if self.steady:
                self.step()
            await asyncio.sleep(interval)  # pacing, not waiting for anything

    def status(self) -> dict[str, Any]:
        """What the periodic status line says."""
        return {"gen": self.args.gen, "seq": self.seq, "steady": self.steady,
                "registered": self.bus.registered, "stats": self.bus.statistics(),
                "asked": len(self.asked), "asked_twice": self.asked_twice}


class Subscriber:
    """Subscribes to ``--key`` and checks every view against :func:`table`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bus = Bus(args.name, on_request=self.on_request, info={"module": "busproc.sub"},
                       endpoints=Endpoints.from_args(args, connect=True),
                       connect_timeout=args.lifetime)
        self.feeds: dict[str, dict[str, Any]] = {}
        self.views: dict[str, Any] = {}
        self.counts = {"updates": 0, "snapshots": 0, "deltas": 0, "lost": 0, "bad_views": 0,
                       "churn_snapshots": 0, "churn_bad": 0,
                       "seq_skips": 0, "seq_repeats": 0}
        self.log = get_logger(role="sub", name=args.name)

    def on_update(self, update: Update) -> None:
        """Check the view after each update; log the rare kinds at once."""
        a = self.args
        self.counts["updates"] += 1
        if update.kind in ("snapshot", "delta"):
            self.counts[update.kind + "s"] += 1
            found = consistent(update.view, a.window, a.pad)
            # Views change in place: after several deltas read in one turn the
            # view is at the newest of them, so it is exactly the data of a
            # seq at or after this update's, never before.
            ok = found is not None and found[1] >= update.seq
            if not ok:
                self.counts["bad_views"] += 1
                self.log.error("sub.bad_view", publisher=update.publisher, seq=update.seq)
            feed = f"{update.publisher}/{update.dataindex}"
            last = self.feeds.get(feed, {}).get("seq")
            if update.kind == "delta" and last is not None and update.seq != last + 1:
                # Every seq exactly once, in order: a skip would be a lost
                # delta, a repeat one brought twice (by two cages, say).
                self.counts["seq_skips" if update.seq > last else "seq_repeats"] += 1
                self.log.error("sub.seq", publisher=update.publisher, seq=update.seq, last=last)
            self.views[feed] = update.view
            self.feeds[feed] = {"seq": update.seq, "ok": ok, "gen": found[0] if found else None}
            if update.kind == "snapshot":
                self.log.info("sub.snapshot", publisher=update.publisher,
                              dataindex=update.dataindex, seq=update.seq, ok=ok,
                              gen=found[0] if found else None)
        elif update.kind == "lost":
            self.counts["lost"] += 1
            feed = f"{update.publisher}/{update.dataindex}"
            self.views.pop(feed, None)
            self.feeds.pop(feed, None)
            self.log.info("sub.lost", publisher=update.publisher, dataindex=update.dataindex)

    def on_churn(self, update: Update) -> None:
        """A short-lived second subscription: its snapshots must be right too."""
        if update.kind == "snapshot":
            self.counts["churn_snapshots"] += 1
            found = consistent(update.view, self.args.window, self.args.pad)
            if found is None or found[1] < update.seq:  # in place: never behind
                self.counts["churn_bad"] += 1

    def on_request(self, sender: str, dataindex: str, args: Any) -> Any:
        """``views``: the views by ``publisher/dataindex``; ``status``: the status line."""
        if dataindex == "views":
            return self.views
        if dataindex == "status":
            return self.status()
        return self.bus.answer_published(sender, dataindex, args)

    async def run(self, log: Any) -> None:
        """Subscribe; with ``--churn``, also subscribe and unsubscribe again and again."""
        for dataindex in dataindexes(self.args.tables):
            self.bus.subscribe(self.args.key, dataindex, self.on_update)
        if self.args.churn <= 0:
            return
        while True:
            sid = self.bus.subscribe(self.args.key, dataindexes(1)[0], self.on_churn)
            await asyncio.sleep(self.args.churn)  # pacing
            self.bus.unsubscribe(sid)
            await asyncio.sleep(self.args.churn)

    def status(self) -> dict[str, Any]:
        """What the periodic status line says."""
        # pub_frames: what the SUB socket delivered (each one message of the
        # cage's PUB queue), to tell how much a stall made the cage drop.
        return {"feeds": self.feeds, **self.counts,
                **self.bus.core.subscriptions.stats, "registered": self.bus.registered,
                "pub_frames": self.bus.statistics().get("pub_frames", 0)}


class Requester:
    """Sends requests to ``--key`` at ``--rate`` and counts how they end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bus = Bus(args.name, info={"module": "busproc.req"},
                       endpoints=Endpoints.from_args(args, connect=True),
                       connect_timeout=args.lifetime)
        self.counts = {"sent": 0, "ok": 0, "bad": 0, "noroute": 0, "timeout": 0, "remote": 0,
                       "gathered": 0, "cage": 0}

    async def one(self, i: int) -> None:
        """One request: mostly the table, sometimes gathered, sometimes the cage's stats."""
        a = self.args
        self.counts["sent"] += 1
        try:
            if i % 10 == 9:
                await self.bus.request("cage", "stats", timeout=a.timeout)
                self.counts["cage"] += 1
            elif i % 5 == 4:
                answers = await self.bus.request_all(a.key, "t0", {"n": i}, timeout=a.timeout)
                self.counts["gathered"] += len(answers)
                for answer in answers.values():
                    self._check(answer)
            else:
                self._check(await self.bus.request(a.key, "t0", {"n": i}, timeout=a.timeout))
        except NoRouteError as exc:
            self.counts["noroute"] += 1
            get_logger(role="req").warning("req.noroute", i=i, error=str(exc))
        except RequestTimeout:
            self.counts["timeout"] += 1
        except RemoteError:
            self.counts["remote"] += 1

    def _check(self, answer: Any) -> None:
        if consistent(answer, self.args.window, self.args.pad) is None:
            self.counts["bad"] += 1
        else:
            self.counts["ok"] += 1

    async def run(self, log: Any) -> None:
        """Send requests at ``--rate``, one at a time."""
        i = 0
        while True:
            await self.one(i)
            i += 1
            await asyncio.sleep(1.0 / self.args.rate)  # pacing

    def status(self) -> dict[str, Any]:
        """What the periodic status line says."""
        return {**self.counts, "registered": self.bus.registered}


ROLES: dict[str, type[Publisher] | type[Subscriber] | type[Requester]] = {
    "pub": Publisher, "sub": Subscriber, "req": Requester,
}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="busproc")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--name", required=True)
    parser.add_argument("--address", action="append", default=[])
    parser.add_argument("--key", default="")
    parser.add_argument("--gen", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="publishes or requests a second")
    parser.add_argument("--paused", action="store_true",
                        help="pub: publish the first version only, until asked to resume")
    parser.add_argument("--tables", type=int, default=1, help="how many dataindexes")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--churn", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--report", type=float, default=0.1, help="seconds between status lines")
    add_endpoint_flags(parser)
    parser.add_argument("--lifetime", type=float, default=600.0, help="exit after this long")
    return parser


async def main_async(args: argparse.Namespace) -> int:
    """Open the bus, run the role, log status until the lifetime is over."""
    log = get_logger(role=args.role, name=args.name)
    role = ROLES[args.role](args)
    if isinstance(role, Publisher):
        role.step()  # so that no subscriber ever sees a publisher without data
    deadline = time.monotonic() + args.lifetime
    async with role.bus:
        log.info("proc.ready", pid=os.getpid())
        async with asyncio.TaskGroup() as group:
            worker = group.create_task(role.run(log))
            lag = 0.0
            while time.monotonic() < deadline:
                log.info(f"{args.role}.status", lag=round(lag, 3), **role.status())
                woke = time.monotonic() + args.report
                await asyncio.sleep(args.report)  # the reporting period
                # How late the loop woke us: a starved event loop shows here.
                lag = time.monotonic() - woke
            worker.cancel()
    log.info("proc.lifetime_over")
    return 0


def main() -> int:
    """Entry point: ``python -m tests.busproc ROLE ...``."""
    args = build_parser().parse_args()
    configure("info")
    try:
        return asyncio.run(main_async(args))
    except ZdseError as exc:
        print(f"busproc: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
