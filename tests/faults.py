"""Helpers of the fault tests: start tests/busproc.py roles, wait on their status, read RSS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.busproc import dataindexes, rss_kb, table
from tests.harness import WAIT, Cluster, Proc, same_views
from tests.support import ROOT
from zdse.node.bus import Bus
from zdse.procs import ProcError

__all__ = [
    "Status", "busproc", "caught_up", "current_status", "dataindexes", "logged_at",
    "pause_and_compare", "rss_kb", "rss_mib", "table", "wait_event_any", "wait_status",
]

Status = dict[str, Any]


def busproc(cluster: Cluster, role: str, name: str, *flags: str, wait: bool = True,
            env: dict[str, str] | None = None) -> Proc:
    """Start ``python -m tests.busproc ROLE --name NAME FLAGS`` on the cluster's cage.

    ``env`` adds to the cluster's environment. Waits (by default) until it
    has registered.
    """
    proc = cluster.procs.python(name, "tests.busproc", role, "--name", name, *flags,
                                env=dict(cluster.env, PYTHONPATH=str(ROOT), **(env or {})),
                                cwd=ROOT)
    if wait:
        proc.wait_event("proc.ready")
    return proc


def logged_at(event: Status) -> float:
    """When a process logged ``event``, in seconds since the epoch (0 if it does not say)."""
    stamp = event.get("timestamp")
    return datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else 0.0


def wait_status(
    proc: Proc,
    pred: Callable[[Status], bool],
    timeout: float = WAIT,
    what: str = "",
    since: float = 0.0,
) -> Status:
    """Wait for a status line of ``proc`` logged after ``since`` that satisfies ``pred``.

    Fails at the deadline. Other events read on the way are dropped.
    """
    last: Status = {}

    def ok(event: Status) -> bool:
        nonlocal last
        if str(event.get("event", "")).endswith(".status") and logged_at(event) >= since:
            last = event
            return pred(event)
        return False

    try:
        return proc.wait_for(ok, f"status with {what or pred}", timeout)
    except ProcError as exc:
        raise ProcError(f"{exc}\nlast status: {last}") from None


def wait_event_any(
    proc: Proc,
    names: set[str],
    timeout: float = WAIT,
    since: float = 0.0,
    match: dict[str, Any] | None = None,
) -> Status:
    """Wait for the first event logged after ``since`` named in ``names`` (with ``match``)."""
    return proc.wait_for(
        lambda e: (e.get("event") in names and logged_at(e) >= since
                   and all(e.get(k) == v for k, v in (match or {}).items())),
        f"any of {sorted(names)}", timeout)


def caught_up(publishers: dict[str, int], tables: int = 1) -> Callable[[Status], bool]:
    """A status predicate: each publisher's views are right and at least at its seq."""
    wanted = {f"{name}/{di}": seq for name, seq in publishers.items() for di in dataindexes(tables)}

    def pred(status: Status) -> bool:
        feeds = status.get("feeds", {})
        return all(
            feed in feeds and feeds[feed]["ok"] and feeds[feed]["seq"] >= seq
            for feed, seq in wanted.items()
        )
    return pred


def rss_mib(proc: Proc) -> float:
    """Resident set size of a running test process, in MiB."""
    return rss_kb(proc.popen.pid) / 1024


async def pause_and_compare(
    bus: Bus, publishers: list[str], subscribers: dict[str, Proc], tables: int = 1
) -> dict[str, Any]:
    """Stop the publishers, wait for every subscriber, then compare views with the data.

    The data is what each publisher answers for each dataindex, asked over
    the bus; the views are what each subscriber answers for ``views``.
    Returns the data, by ``publisher/dataindex``.
    """
    final = {p: (await bus.request(p, "pause"))["seq"] for p in publishers}
    for name, proc in subscribers.items():
        await asyncio.to_thread(wait_status, proc, caught_up(final, tables),
                                what=f"{name} caught up with {final}")
    data = {f"{p}/{di}": await bus.request(p, di) for p in publishers for di in dataindexes(tables)}
    for name in subscribers:
        views = await bus.request(name, "views")
        assert same_views(views, data), f"{name}: views {views} are not the data {data}"
    return data


def current_status(proc: Proc, timeout: float = WAIT) -> Status:
    """The first status line ``proc`` logs from now on: what it holds now."""
    return wait_status(proc, lambda s: True, timeout=timeout, since=time.time())
