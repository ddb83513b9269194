"""How the vsphere module scales: poll a vCenter of 50 hosts and 2,000 VMs; what reaches the bus.

Everything is real and on loopback: govmomi's vCenter
simulator (``build/vcsim-zdse``; ``make sim`` builds it), a cage
(``zdse-proxy``), ``zdse-node --module vsphere`` polling the simulator every
``--interval`` seconds, a subscriber (:class:`zdse.Bus`) to the node's five
tables, and a raw ZeroMQ SUB socket on the cage's PUB socket, subscribed to
the node's table topics (``vSphere.Bench NUL dataindex NUL``), that counts the
bytes of every delta message (topic, header and body frames) the cage sends.

It measures ``--polls`` polls in which nothing changes, then powers one VM
off through the vCenter API (pyVmomi) and measures the poll that sees it and
the one after:

- time per poll and round trips per poll, from the node's ``vsphere.polled``
  log events (one per poll; the node runs at ``--log-level debug``);
- bytes on the bus per poll: the delta messages the SUB socket received,
  matched to the poll that made them by (dataindex, sequence number), which
  the ``vsphere.polled`` event names for the tables that changed. Goals:
  0 bytes when nothing changed, and one row (removed as powered on, added as
  powered off) when one VM changed.

Usage::

    .venv/bin/python benchmarks/vsphere_poll.py [--hosts 50] [--vms 2000]
        [--polls 5] [--interval 5] [--json]

Exit status: 0 when both goals are met, 1 when the run measured but a goal
was missed (the report says which), 2 when it could not measure (simulator
missing, a process that did not start, a deadline passed). Every process it
starts is stopped (SIGTERM, then SIGKILL) before it exits, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgpack
import zmq
import zmq.asyncio
from pyVim.task import WaitForTask
from zdse_nodes.vsphere import COLUMNS, VCenterConfig, VCenterConnection

from zdse.errors import ProtocolError
from zdse.log import configure
from zdse.node.bus import Bus, Update
from zdse.procs import free_port
from zdse.wire import codec
from zdse.wire.endpoints import Endpoints

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR = ROOT / "build" / "vcsim-zdse"
BIN = Path(sys.executable).parent
NODE = "vSphere.Bench"
SUBSCRIBER = "bench.vsphere.subscriber"
TABLES = tuple(COLUMNS)
NAME = COLUMNS["vms"].index("name")
UUID = COLUMNS["vms"].index("uuid")
POWER = COLUMNS["vms"].index("powerState")

# Deadlines. The simulator builds 2,000 VMs in about 5 s on a developer
# machine; a loaded machine may take many times that.
SIMULATOR_START = 120.0
PROCESS_START = 60.0
# The first poll (log in, read every table) plus the snapshots of 2,000 rows.
SNAPSHOTS = 120.0
# A poll may take this long beyond the interval before the run gives up.
POLL_SLACK = 60.0
# A delta reaches a subscriber in milliseconds; this bounds a lost one.
DELTA = 30.0
# Powering one VM off through the API: one task on the simulator.
TASK = 60.0
STOP = 10.0

# Exit statuses.
OK, GOAL_MISSED, FAILED = 0, 1, 2


class BenchError(Exception):
    """The benchmark could not measure: what failed, and the logs that tell why."""


# --- processes ------------------------------------------------------------------


class Watched:
    """Something that changes as messages arrive; :meth:`until` waits on it with a deadline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    def check(self) -> None:
        """Raise BenchError if what is watched can no longer change as hoped."""

    def context(self) -> str:
        return ""

    async def until(self, value: Callable[[], T | None], what: str, timeout: float) -> T:
        """Return ``value()`` as soon as it is not None.

        Raises:
            BenchError: ``timeout`` seconds passed, or :meth:`check` failed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = value()
            if found is not None:
                return found
            self.check()
            left = deadline - loop.time()
            if left <= 0:
                raise BenchError(f"{self.name}: no {what} within {timeout:g} s{self.context()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


class LogEvents(Watched):
    """A child's stderr, one JSON log event a line (structlog's format off a terminal)."""

    def __init__(self, name: str, fatal: frozenset[str] = frozenset()) -> None:
        super().__init__(name)
        self.events: list[dict[str, Any]] = []
        self.lines: deque[str] = deque(maxlen=30)
        self.closed = False
        self._fatal = fatal

    async def pump(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            with contextlib.suppress(ValueError):
                event = json.loads(text)
                if isinstance(event, dict):
                    self.events.append(event)
            self.changed()
        self.closed = True
        self.changed()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def first(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == name), None)

    def check(self) -> None:
        for event in self.events:
            if event.get("event") in self._fatal:
                raise BenchError(f"{self.name} logged {event}{self.context()}")
        if self.closed:
            raise BenchError(f"{self.name} exited{self.context()}")

    def context(self) -> str:
        return "; its last lines:\n  " + "\n  ".join(self.lines) if self.lines else ""


class Children:
    """Every process the benchmark starts, each in its own process group.

    :meth:`stop_all` stops them all, last started first: SIGTERM, then
    SIGKILL past a deadline; it also ends the tasks that read their output.
    """

    def __init__(self) -> None:
        self._procs: list[asyncio.subprocess.Process] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(
        self, argv: list[str], env: dict[str, str], stdout: int, stderr: int | Any
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,  # its own group: killpg reaches all of it
            limit=1 << 20,
        )
        self._procs.append(proc)
        return proc

    async def start_logged(
        self, name: str, argv: list[str], env: dict[str, str], fatal: frozenset[str] = frozenset()
    ) -> LogEvents:
        """Start a zdse process whose stderr log events can be waited on."""
        proc = await self.start(argv, env, asyncio.subprocess.DEVNULL, asyncio.subprocess.PIPE)
        events = LogEvents(name, fatal)
        assert proc.stderr is not None
        self._tasks.append(asyncio.create_task(events.pump(proc.stderr), name=f"read {name}"))
        return events

    async def stop_all(self) -> None:
        try:
            for proc in reversed(self._procs):
                await _stop(proc)
        finally:
            for proc in self._procs:  # interrupted: no more waiting
                _signal(proc, signal.SIGKILL)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    _signal(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP)
    except TimeoutError:
        _signal(proc, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), STOP)


def child_env(endpoints: Endpoints) -> dict[str, str]:
    # The caller's own ZDSE_* settings (CURVE keys, another cage) must not
    # leak into the benchmark's processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZDSE_")}
    env.update(ZDSE_ROUTER=endpoints.router, ZDSE_PUB=endpoints.pub)
    return env


@dataclass(frozen=True)
class Simulator:
    """The running simulator: its SDK URL without credentials, and how to log in."""

    url: str
    user: str
    password: str
    startup_seconds: float


async def start_simulator(
    children: Children, args: argparse.Namespace, workdir: Path
) -> Simulator:
    """Start build/vcsim-zdse on a free loopback port; wait for its ready line."""
    user, password = "bench", os.urandom(8).hex()
    stderr_path = workdir / "vcsim.stderr"
    env = dict(os.environ, TMPDIR=str(workdir))  # its datastore files go there
    with stderr_path.open("wb") as stderr:
        proc = await children.start(
            [
                str(SIMULATOR),
                f"-hosts={args.hosts}",
                f"-vms={args.vms}",
                "-port=0",
                f"-username={user}",
                f"-password={password}",
            ],
            env,
            asyncio.subprocess.PIPE,
            stderr,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), SIMULATOR_START)
    except TimeoutError:
        line = b""
    try:
        ready = json.loads(line)
        parts = urlsplit(ready["url"])
    except (ValueError, KeyError, TypeError):
        tail = stderr_path.read_text(errors="replace")[-2000:].strip()
        raise BenchError(
            f"the simulator printed no ready line within {SIMULATOR_START:g} s "
            f"(got {line[:200]!r}); its stderr: {tail or '(empty)'}"
        ) from None
    netloc = parts.netloc.rpartition("@")[2]
    return Simulator(
        url=urlunsplit((parts.scheme, netloc, parts.path, "", "")),
        user=user,
        password=password,
        startup_seconds=float(ready.get("startup_seconds", 0.0)),
    )


# --- what reaches the bus ------------------------------------------------------


@dataclass(frozen=True)
class DeltaMessage:
    """One message the cage's PUB socket sent on one of the node's table topics."""

    dataindex: str
    nbytes: int  # topic + header + body frames
    body_bytes: int
    seqs: tuple[int, ...]
    added: tuple[list[Any], ...]
    removed: tuple[list[Any], ...]
    replaced: int  # deltas that replaced the whole table


class Tap(Watched):
    """A raw SUB socket on the cage's PUB: the node's delta messages, counted in bytes.

    It also takes the cage's events, to know when its filters are in place:
    a ``Joined`` received means the PUB socket has applied every filter.
    """

    def __init__(self, ctx: zmq.asyncio.Context, pub: str, publisher: str) -> None:
        super().__init__("the SUB socket on the cage's PUB")
        self.messages: list[DeltaMessage] = []
        self.joined: set[str] = set()
        self.bad = 0
        self._sock = ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._topics = {codec.topic(publisher, t): t for t in TABLES}
        # The table filters go first: a cage event received proves them applied.
        for topic in self._topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self._sock.setsockopt(zmq.SUBSCRIBE, codec.EVENT_TOPIC)
        self._sock.connect(pub)
        self._task = asyncio.create_task(self._pump(), name="tap")

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close(linger=0)

    async def _pump(self) -> None:
        while True:
            self._take(await self._sock.recv_multipart())
            self.changed()

    def _take(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            self.bad += 1
            return
        topic, header, body = frames
        if topic == codec.EVENT_TOPIC:
            with contextlib.suppress(ProtocolError):
                kind, _ = codec.parse_header(header)
                for event in codec.decode_body(kind, body):
                    if isinstance(event, codec.Joined):
                        self.joined.add(event.name)
            return
        added: list[list[Any]] = []
        removed: list[list[Any]] = []
        seqs: list[int] = []
        replaced = 0
        try:
            kind, _ = codec.parse_header(header)
            for msg in codec.decode_body(kind, body):
                if not isinstance(msg, codec.Delta):
                    raise ProtocolError(f"a {kind.name} message on a table topic")
                seqs.append(msg.seq)
                if msg.delta[0] == "rows":
                    added += msg.delta[1]
                    removed += msg.delta[2]
                else:
                    replaced += 1
        except (ProtocolError, IndexError, TypeError):
            # Still bytes on the bus: kept, with no sequence number, as stray.
            self.bad += 1
            seqs, added, removed, replaced = [], [], [], 0
        self.messages.append(
            DeltaMessage(
                dataindex=self._topics.get(topic, topic.decode(errors="replace")),
                nbytes=sum(len(f) for f in frames),
                body_bytes=len(body),
                seqs=tuple(seqs),
                added=tuple(added),
                removed=tuple(removed),
                replaced=replaced,
            )
        )


class Views(Watched):
    """The subscriber's callback: the latest update per table."""

    def __init__(self) -> None:
        super().__init__(SUBSCRIBER)
        self.snapshots: dict[str, Update] = {}
        self.latest: dict[str, Update] = {}

    def __call__(self, update: Update) -> None:
        if update.kind == "snapshot":
            self.snapshots.setdefault(update.dataindex, update)
        if update.kind in ("snapshot", "delta"):
            self.latest[update.dataindex] = update
        self.changed()


def power_off(sim: Simulator, uuid: str) -> None:
    """Power one VM off through the vCenter API, as an operator's script would."""
    config = VCenterConfig(
        url=sim.url, user=sim.user, password=sim.password, insecure=True, timeout=TASK
    )
    conn = VCenterConnection.open(config)
    try:
        content = conn.service_instance.RetrieveContent()
        vm = content.searchIndex.FindByUuid(None, uuid, True)
        if vm is None:
            raise BenchError(f"the simulator has no VM with uuid {uuid}")
        WaitForTask(vm.PowerOffVM_Task(), maxWaitTime=TASK)
    finally:
        conn.close()


# --- the run ------------------------------------------------------------------------


async def measure(args: argparse.Namespace, children: Children, workdir: Path) -> dict[str, Any]:
    """Start everything, measure, and return the report (see :func:`report`)."""
    say = progress(args)
    say(f"starting the simulator: {args.hosts} hosts, {args.vms} VMs")
    sim = await start_simulator(children, args, workdir)
    say(f"simulator ready in {sim.startup_seconds:.1f} s at {sim.url}")
    endpoints = Endpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
    env = child_env(endpoints)
    cage = await children.start_logged("zdse-proxy", [str(BIN / "zdse-proxy")], env)
    await cage.until(lambda: cage.first("cage.started"), "cage.started event", PROCESS_START)

    ctx = zmq.asyncio.Context()
    tap = Tap(ctx, endpoints.pub, NODE)
    try:
        password_file = workdir / "vcenter.password"
        password_file.write_text(sim.password)
        password_file.chmod(0o600)
        node = await children.start_logged(
            "zdse-node",
            [
                str(BIN / "zdse-node"), "--module", "vsphere", "--name", NODE,
                "--set", f"url={sim.url}", "--set", f"user={sim.user}",
                "--set", f"password_file={password_file}", "--set", "insecure=true",
                "--set", f"poll_interval={args.interval}", "--log-level", "debug",
            ],
            env,
            fatal=frozenset({"poll.failed"}),
        )
        await node.until(lambda: node.first("node.started"), "node.started event", PROCESS_START)
        await tap.until(
            lambda: True if NODE in tap.joined else None, f"Joined({NODE}) event", PROCESS_START
        )
        async with Bus(SUBSCRIBER, endpoints=endpoints, connect_timeout=PROCESS_START) as bus:
            return await _measure(args, sim, node, tap, bus, say)
    finally:
        await tap.close()
        ctx.destroy(linger=0)


async def _measure(
    args: argparse.Namespace,
    sim: Simulator,
    node: LogEvents,
    tap: Tap,
    bus: Bus,
    say: Callable[[str], None],
) -> dict[str, Any]:
    # Subscribe once the first poll (which logs in) has published the tables,
    # so that the snapshots hold them and the polls measured are steady ones.
    await node.until(lambda: node.first("vsphere.polled"), "first poll", SNAPSHOTS)
    views = Views()
    for table in TABLES:
        bus.subscribe(NODE, table, views)
    await views.until(
        lambda: True if len(views.snapshots) == len(TABLES) else None,
        "snapshot of every table",
        SNAPSHOTS,
    )
    sizes = (len(views.snapshots["hosts"].data), len(views.snapshots["vms"].data))
    if sizes != (args.hosts, args.vms):
        raise BenchError(f"the snapshots hold {sizes} hosts and VMs, not {args.hosts, args.vms}")
    # Polls that ended before every snapshot was in are not measured.
    base = len(node.named("vsphere.polled"))
    messages_before = len(tap.messages)
    poll_wait = args.interval + POLL_SLACK

    def polls() -> list[dict[str, Any]]:
        return node.named("vsphere.polled")[base:]

    for i in range(1, args.polls + 1):
        await node.until(
            lambda i=i: True if len(polls()) >= i else None, f"poll {i}", poll_wait
        )
        say(f"poll {i}/{args.polls}: {polls()[i - 1]['seconds']:.3f} s, nothing changed")

    target = next(
        (row for row in views.latest["vms"].view if row[POWER] == "poweredOn"), None
    )
    if target is None:
        raise BenchError("no powered-on VM to power off")
    say(f"powering off {target[NAME]} through the vCenter API")
    seen = len(polls())
    await asyncio.to_thread(power_off, sim, str(target[UUID]))

    def change_poll() -> int | None:
        return next((j for j, p in enumerate(polls()) if j >= seen and p["changed"]), None)

    change = await node.until(change_poll, "poll that sees the powered-off VM", 2 * poll_wait)
    wanted = {(t, s) for t, s in polls()[change]["changed"].items()}
    await tap.until(
        lambda: True if wanted <= _received(tap.messages) else None,
        f"delta messages {sorted(wanted)}",
        DELTA,
    )
    await views.until(
        lambda: True if _power_of(views, target[NAME]) == "poweredOff" else None,
        f"{target[NAME]} powered off in the subscriber's view",
        DELTA,
    )
    say(f"poll {change + 1}: {polls()[change]['seconds']:.3f} s, sees the VM powered off")
    # One more poll: nothing more is sent once the change is out.
    await node.until(
        lambda: True if len(polls()) > change + 1 else None, "poll after the change", poll_wait
    )
    measured = polls()[: change + 2]
    return report(
        args,
        sim,
        node,
        measured,
        change,
        tap.messages[messages_before:],
        tap.messages[:messages_before],
        views,
        target,
    )


def _received(messages: list[DeltaMessage]) -> set[tuple[str, int]]:
    return {(m.dataindex, s) for m in messages for s in m.seqs}


def _power_of(views: Views, name: Any) -> Any:
    rows = views.latest["vms"].view
    return next((row[POWER] for row in rows if row[NAME] == name), None)


# --- the report -----------------------------------------------------------------


def report(
    args: argparse.Namespace,
    sim: Simulator,
    node: LogEvents,
    polls: list[dict[str, Any]],
    change: int,
    messages: list[DeltaMessage],
    early: list[DeltaMessage],
    views: Views,
    target: list[Any],
) -> dict[str, Any]:
    """The measurements as one JSON-able value; ``goals`` says whether each goal was met."""
    owner: dict[tuple[str, int], int] = {}
    for i, poll in enumerate(polls):
        for table, seq in poll["changed"].items():
            owner[(table, seq)] = i
    by_poll: dict[int, list[DeltaMessage]] = {i: [] for i in range(len(polls))}
    stray: list[DeltaMessage] = list(early)
    for msg in messages:
        i = next((owner[(msg.dataindex, s)] for s in msg.seqs if (msg.dataindex, s) in owner), None)
        (stray if i is None else by_poll[i]).append(msg)

    rows = []
    for i, poll in enumerate(polls):
        sent = by_poll[i]
        rows.append(
            {
                "poll": i + 1,
                "vcenter": "1 VM powered off" if i == change else "nothing changed",
                "seconds": poll["seconds"],
                "read_seconds": poll["read_seconds"],
                "round_trips": poll["round_trips"],
                "changed": poll["changed"],
                "messages": len(sent),
                "bytes": sum(m.nbytes for m in sent),
                "rows_added": sum(len(m.added) for m in sent),
                "rows_removed": sum(len(m.removed) for m in sent),
            }
        )
    unchanged = [r for r in rows if r["vcenter"] == "nothing changed"]
    changed_msgs = by_poll[change]
    tables: dict[str, dict[str, int]] = {}
    for m in changed_msgs:
        entry = tables.setdefault(m.dataindex, {"added": 0, "removed": 0, "replaced": 0})
        entry["added"] += len(m.added)
        entry["removed"] += len(m.removed)
        entry["replaced"] += m.replaced
    added = [r for m in changed_msgs for r in m.added]
    removed = [r for m in changed_msgs for r in m.removed]
    one_row = (
        set(tables) == {"vms"}
        and tables["vms"]["replaced"] == 0
        and [(r[NAME], r[POWER]) for r in removed] == [(target[NAME], "poweredOn")]
        and [(r[NAME], r[POWER]) for r in added] == [(target[NAME], "poweredOff")]
    )
    connected = node.first("vsphere.connected") or {}
    first_poll = node.first("vsphere.polled") or {}
    seconds = [p["seconds"] for p in polls]
    reads = [p["read_seconds"] for p in polls]
    trips = [p["round_trips"] for p in polls]
    return {
        "benchmark": "vsphere_poll",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "hosts": args.hosts,
        "vms": args.vms,
        "interval": args.interval,
        "simulator_startup_seconds": sim.startup_seconds,
        "connect": {
            "round_trips": connected.get("round_trips"),
            "first_poll_seconds": first_poll.get("seconds"),
        },
        # What a subscriber's snapshot carries: each whole table, msgpack-encoded.
        "table_bytes": {
            t: len(msgpack.packb(views.snapshots[t].data, use_bin_type=True)) for t in TABLES
        },
        "polls": rows,
        "summary": {
            "seconds": _spread(seconds),
            "read_seconds": _spread(reads),
            "round_trips": {"min": min(trips), "max": max(trips)},
            "unchanged": {
                "polls": len(unchanged),
                "messages": sum(r["messages"] for r in unchanged),
                "bytes": sum(r["bytes"] for r in unchanged),
            },
            "changed": {
                "vm": target[NAME],
                "poll": change + 1,
                "messages": len(changed_msgs),
                "bytes": sum(m.nbytes for m in changed_msgs),
                "body_bytes": sum(m.body_bytes for m in changed_msgs),
                "tables": tables,
            },
            # Delta messages no measured poll accounts for (before the
            # measurement, or with a sequence number no poll logged).
            "stray_messages": len(stray),
            "stray_bytes": sum(m.nbytes for m in stray),
        },
        "goals": {
            "nothing_changed_sends_nothing": bool(unchanged)
            and all(r["bytes"] == 0 for r in unchanged)
            and not stray,
            "one_vm_changed_sends_one_row": one_row,
        },
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 6),
        "min": round(min(values), 6),
        "max": round(max(values), 6),
    }


def render(rep: dict[str, Any]) -> str:
    """The report as a small plain-text table and summary."""
    out = [
        f"vsphere polling: {rep['hosts']} hosts, {rep['vms']} VMs, "
        f"poll_interval {rep['interval']:g} s ({rep['date']})",
        "",
        f"{'poll':>4}  {'vCenter':<17} {'seconds':>8} {'read s':>8} {'round trips':>11}"
        f" {'messages':>8} {'bytes':>7}  rows +/-",
    ]
    for r in rep["polls"]:
        out.append(
            f"{r['poll']:>4}  {r['vcenter']:<17} {r['seconds']:>8.3f} {r['read_seconds']:>8.3f}"
            f" {r['round_trips']:>11} {r['messages']:>8} {r['bytes']:>7}"
            f"  +{r['rows_added']}/-{r['rows_removed']}"
        )
    s = rep["summary"]
    changed, unchanged = s["changed"], s["unchanged"]
    tables = ", ".join(
        f"{t} +{v['added']}/-{v['removed']}"
        + (f" replaced {v['replaced']}" if v["replaced"] else "")
        for t, v in changed["tables"].items()
    ) or "none"
    goals = rep["goals"]
    out += [
        "",
        f"time per poll:        median {s['seconds']['median']:.3f} s "
        f"(min {s['seconds']['min']:.3f}, max {s['seconds']['max']:.3f}); "
        f"reading vCenter: median {s['read_seconds']['median']:.3f} s",
        f"round trips per poll: {s['round_trips']['min']}"
        + (f"-{s['round_trips']['max']}" if s["round_trips"]["max"] != s["round_trips"]["min"]
           else "")
        + f" (the first poll, not measured, also logged in: "
        f"{rep['connect']['round_trips']} more, {rep['connect']['first_poll_seconds']:.3f} s)",
        f"nothing changed:      {unchanged['bytes']} bytes in {unchanged['messages']} messages "
        f"over {unchanged['polls']} polls (goal 0: "
        f"{'met' if goals['nothing_changed_sends_nothing'] else 'MISSED'})",
        f"one VM powered off:   {changed['bytes']} bytes in {changed['messages']} message(s): "
        f"{tables} (goal one row: "
        f"{'met' if goals['one_vm_changed_sends_one_row'] else 'MISSED'})",
        f"stray messages:       {s['stray_messages']} ({s['stray_bytes']} bytes)",
        "whole tables (msgpack, as in a snapshot): "
        + ", ".join(f"{t} {n}" for t, n in rep["table_bytes"].items()),
    ]
    return "\n".join(out)


def progress(args: argparse.Namespace) -> Callable[[str], None]:
    start = time.monotonic()

    def say(text: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - start:6.1f} s] {text}", file=sys.stderr, flush=True)

    return say


def budget(args: argparse.Namespace) -> float:
    """An outer bound on the whole run, past every inner deadline."""
    per_poll = args.interval + POLL_SLACK
    inner = SIMULATOR_START + 3 * PROCESS_START + SNAPSHOTS + TASK + 3 * DELTA
    return inner + (args.polls + 4) * per_poll


# --- command line -----------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/vsphere_poll.py",
        description="Time a vsphere node's polls of a simulated vCenter and count the bytes "
        "it puts on the bus, when nothing changed and when one VM changed.",
    )
    parser.add_argument("--hosts", type=positive_int, default=50, help="ESX hosts (default 50)")
    parser.add_argument(
        "--vms", type=positive_int, default=2000, help="VMs in total (default 2000)"
    )
    parser.add_argument(
        "--polls", type=positive_int, default=5,
        help="polls measured while nothing changes, before one VM is powered off (default 5)",
    )
    parser.add_argument(
        "--interval", type=positive_float, default=5.0,
        help="the node's poll_interval in seconds (default 5)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    children = Children()
    with tempfile.TemporaryDirectory(prefix="zdse-bench-vsphere-") as tmp:
        try:
            async with asyncio.timeout(budget(args)):
                return await measure(args, children, Path(tmp))
        finally:
            await children.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not SIMULATOR.is_file():
        print(
            f"vsphere_poll: the vCenter simulator {SIMULATOR} is missing; "
            "build it with `make sim` (it needs Go and Debian's govmomi sources: `make debs`)",
            file=sys.stderr,
        )
        return FAILED
    # The Bus logs warnings only, to stderr: stdout is the report's.
    configure("warning", stream=sys.stderr)
    try:
        rep = asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("vsphere_poll: interrupted; every process it started is stopped", file=sys.stderr)
        return FAILED
    except BenchError as exc:
        print(f"vsphere_poll: {exc}", file=sys.stderr)
        return FAILED
    except TimeoutError:
        print(f"vsphere_poll: the run took more than {budget(args):g} s", file=sys.stderr)
        return FAILED
    print(json.dumps(rep, indent=2) if args.json else render(rep))
    return OK if all(rep["goals"].values()) else GOAL_MISSED


if __name__ == "__main__":
    sys.exit(main())
